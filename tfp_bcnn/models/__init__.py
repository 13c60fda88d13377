"""Model zoo (LeNet-5, AlexNet, 3Conv3FC, MobileNetV2) and conversion of trained Keras models.

Builders
--------
The seed architectures of the Bayesian CNN paper (Shridhar et al. 2019,
https://arxiv.org/abs/1901.02731; reference code kumar-shridhar/PyTorch-BayesianCNN):

* `lenet5`: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> fc 120 -> fc 84 -> fc C.
* `alexnet`: the paper's small-image AlexNet, conv 64@11x11/4 -> pool ->
  conv 192@5x5 -> pool -> conv 384@3x3 -> conv 256@3x3 -> conv 128@3x3 ->
  pool -> fc C.
* `three_conv_three_fc`: conv 32@5x5 -> pool -> conv 64@5x5 -> pool ->
  conv 128@5x5 -> pool -> fc 1000 -> fc 1000 -> fc C.

Each architecture is written once, as a function of a layer factory; the
factory makes Bayesian layers (``tfp_bcnn.layers.layer_class(rank, estimator)``)
or their deterministic Keras twins (``bayesian=False``). Both variants share
layer names (``conv1``, ``pool1``, ..., ``fc1``, ...), and with the same
``seed`` the twin's initial kernels equal the Bayesian posterior means.
Classifiers end in a softmax (they output probabilities).

Every Bayesian layer gets ``kl_weight = 1 / num_train_examples``, so the Keras
loss is the per-example negative ELBO::

    loss = mean_batch NLL + (1 / N) * sum_layers KL(q || p)

Conversion
----------
`to_bayesian` turns every ``Dense``, ``ConvND``, ``DepthwiseConvND``,
``ConvNDTranspose`` and ``SeparableConvND`` (as a depthwise + pointwise pair)
of a trained deterministic model (e.g. ``keras.applications.MobileNetV2``)
into its Bayesian twin, with the posterior means
at the trained weights (MOPED, Krishnan et al. 2020,
https://arxiv.org/abs/1906.05323, for the posterior std); with
``posterior="rank1"`` into rank-1 mixture layers (the trained kernel shared
by K components of rank-1 factors).

The package's modules: `_recipe` (`RECIPE`, `recipe_callbacks`,
`compile_bayesian`; its `MixtureLoss` / `MixtureMetric` for rank-1 models
come from ``tfp_bcnn._mixture_fit``), `_zoo` (the builders and their deterministic twins) and
`_conversion` (`to_bayesian` in its named steps); the MobileNetV2 pieces live
in ``tfp_bcnn._mobilenet``.
"""

from __future__ import annotations

from .. import kl as kl_lib  # noqa: F401 (a name of the former module, used by callers)
from .._mixture_fit import MixtureLoss, MixtureMetric, Rank1Functional, Rank1Sequential
from ._conversion import MOPED_SIGMA_FLOOR, to_bayesian
from ._dense import super_resolution, unet
from ._recipe import MOBILENET_RECIPE, RECIPE, compile_bayesian, loss_for, recipe_callbacks
from ._zoo import DEFAULT_POSTERIOR_STD_INIT, alexnet, lenet5, mobilenet_v2, three_conv_three_fc

__all__ = [
    "DEFAULT_POSTERIOR_STD_INIT",
    "MOBILENET_RECIPE",
    "MOPED_SIGMA_FLOOR",
    "MixtureLoss",
    "MixtureMetric",
    "RECIPE",
    "Rank1Functional",
    "Rank1Sequential",
    "alexnet",
    "compile_bayesian",
    "lenet5",
    "loss_for",
    "mobilenet_v2",
    "recipe_callbacks",
    "super_resolution",
    "three_conv_three_fc",
    "to_bayesian",
    "unet",
]
