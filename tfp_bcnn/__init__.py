"""tfp_bcnn: Bayesian convolutional neural networks for Keras 3.

Variational training (Bayes by Backprop) with reparameterization, Flipout and
local reparameterization estimators, Monte Carlo prediction with aleatoric /
epistemic uncertainty, pruning, and export to SavedModel and TFLite.

Importing the package registers every layer, prior, schedule and callback with
Keras, so ``keras.saving.load_model("model.keras")`` works right after it.
The native log lines TensorFlow prints while it loads are silenced
(``TFP_BCNN_VERBOSE=1`` shows them); import ``tfp_bcnn`` before ``keras`` or
``tensorflow`` for that to apply.
"""

import sys as _sys

from ._quiet import native_stderr_silenced as _native_stderr_silenced

# TensorFlow's C++ start-up notices (and the cuInit line of its device
# discovery on a machine without a GPU driver) go to /dev/null; see _quiet.py.
with _native_stderr_silenced():
    from . import (datasets, ensemble, kl, layers, metrics, models, moments, plots, priors,
                   pruning, regularizers, uncertainty)
    from ._annealing import KLAnnealing
    from .kl import KLDivergence, bayesian_layers, get_kl_weight, kl_divergence, set_kl_weight
    from .layers import GaussianHead, gaussian_nll
    from .regularizers import RegularizationLoss
    from .uncertainty import Prediction, RegressionPrediction, decompose, predict
    from ._compat import register_portable_optimizers as _register_portable_optimizers

    _register_portable_optimizers()  # .keras files compiled on torch load anywhere

    if "tensorflow" in _sys.modules:
        _sys.modules["tensorflow"].config.list_physical_devices()

__version__ = "0.1.0"

__all__ = [
    "GaussianHead",
    "Prediction",
    "RegressionPrediction",
    "decompose",
    "predict",
    "KLAnnealing",
    "KLDivergence",
    "bayesian_layers",
    "datasets",
    "ensemble",
    "gaussian_nll",
    "get_kl_weight",
    "kl",
    "kl_divergence",
    "layers",
    "metrics",
    "models",
    "moments",
    "plots",
    "priors",
    "pruning",
    "RegularizationLoss",
    "regularizers",
    "set_kl_weight",
    "uncertainty",
]
