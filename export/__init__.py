"""Export of tfp_bcnn models: SavedModel, TFLite, ONNX, and TF-free runtimes.

Each Bayesian layer is exported in an inference form with static kernels
(``sampling="lrt"``: constant ``mu`` and ``sigma^2`` kernels, sampled
pre-activations; ``sampling="weights"``: kernels sampled at run time), and the
Monte Carlo samples are drawn inside one call by tiling the batch
(``sampling="moments"`` instead propagates means and variances in one pass
and samples only the logits: see `tfp_bcnn.moments`). The graphs
use TensorFlow / TFLite builtin ops only: the stock LiteRT interpreter runs the
``.tflite`` file, plain ``tf.saved_model.load`` the SavedModel. No random seed
is stored: every call draws fresh samples.

>>> from tfp_bcnn import export                              # doctest: +SKIP
>>> export.save_saved_model(model, "bcnn_savedmodel")         # doctest: +SKIP
>>> export.to_tflite(model, "bcnn.tflite", quantize="dynamic")  # doctest: +SKIP
>>> export.runtime.TFLiteBayesianModel("bcnn.tflite").predict(x).epistemic  # doctest: +SKIP
>>> export.describe("bcnn.tflite")["size_bytes"]              # doctest: +SKIP
>>> export.to_onnx(model, "bcnn.onnx", sampling="moments")    # doctest: +SKIP
>>> export.runtime.OnnxBayesianModel("bcnn.onnx").predict(x).epistemic  # doctest: +SKIP

`runtime` imports only numpy and ai_edge_litert; copy ``runtime.py`` to a
device to run the ``.tflite`` file there. `to_onnx` (module `onnx`, tf2onnx)
writes the same graph as an ONNX file with standard ops only;
``runtime.OnnxBayesianModel`` (module ``_onnx_runtime``: numpy and
onnxruntime) runs it.
"""

import importlib

from ._describe import describe
from ._inference import SAMPLINGS
from .onnx import to_onnx
from .saved_model import save_saved_model
from .tflite import QUANTIZATIONS, to_tflite

__all__ = [
    "QUANTIZATIONS",
    "SAMPLINGS",
    "OnnxBayesianModel",
    "Prediction",
    "TFLiteBayesianModel",
    "describe",
    "runtime",
    "save_saved_model",
    "to_onnx",
    "to_tflite",
]


def __getattr__(name):
    # The runtimes need ai-edge-litert / onnxruntime (the "export" extra); import
    # them lazily so that SavedModel and TFLite export work without them.
    if name in ("runtime", "Prediction", "TFLiteBayesianModel", "OnnxBayesianModel"):
        module = importlib.import_module(".runtime", __name__)
        return module if name == "runtime" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
