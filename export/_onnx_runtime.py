"""Run an exported Bayesian ONNX model with numpy and ONNX Runtime only.

`OnnxBayesianModel` is the ONNX twin of
`tfp_bcnn.export.runtime.TFLiteBayesianModel`: the same ``predict`` /
``sample`` API and the same `Prediction`, for a file written by
`tfp_bcnn.export.to_onnx` (input ``images``, dynamic batch; output
``samples`` ``(S, batch, C)``, or a dense model's ``(S, batch, *spatial, C)``:
S Monte Carlo samples drawn in one run). The summaries are computed here from the samples, so
several runs pool into one estimate of ``S * num_invocations`` samples.

It imports no TensorFlow or Keras, only numpy, ONNX Runtime and its sibling
``runtime.py`` (numpy + LiteRT), whose input checks, chunking and summaries
it shares: ``predict``, ``sample`` and the input validation are
`TFLiteBayesianModel`'s own methods, run on this class's ``_invoke``. Copied
to a device as ``onnx_runtime.py`` beside ``runtime.py`` it works there too
(``pip install numpy onnxruntime ai-edge-litert``).

Seeds: the file's random ops carry no ``seed`` attribute, and ONNX Runtime
then seeds each from one process-wide seed (taken from the clock at start)
plus the node's index, so two sessions opened in one process would repeat
each other's draws. Each `OnnxBayesianModel` sets that seed from
``os.urandom`` just before opening its session (``onnxruntime.set_seed``):
two objects draw different samples, and every run draws fresh ones (each
op's generator advances).

Example:

>>> model = OnnxBayesianModel("bcnn.onnx")        # doctest: +SKIP
>>> p = model.predict(x_test, num_invocations=2)  # 2 x 32 samples
>>> p.mean.shape, p.epistemic.shape                # doctest: +SKIP
((1000, 10), (1000,))
"""

from __future__ import annotations

import os
import threading

import numpy as np
import onnxruntime as _ort

if __package__ and __package__.split(".")[0] == "tfp_bcnn":
    from . import runtime as _tflite
else:  # copied to a device beside runtime.py
    import runtime as _tflite

Prediction = _tflite.Prediction
_positive_int = _tflite._positive_int

__all__ = ["OnnxBayesianModel", "Prediction"]

_INPUT = "images"
_SAMPLES = "samples"
#: Largest ``.onnx`` file accepted (protobuf's limit without external data).
MAX_FILE_BYTES = 2**31 - 1
#: Held while the process-wide ONNX Runtime seed is set and a session opened.
_SEED_LOCK = threading.Lock()


def _read(path: str) -> bytes:
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file. Received: path={path!r}")
    if os.path.isdir(path):
        raise ValueError(f"Expected an .onnx file, got a directory. Received: path={path!r}")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise ValueError(f"File over {MAX_FILE_BYTES} bytes: not an ONNX model. "
                         f"Received: path={path!r}")
    with open(path, "rb") as f:
        return f.read()


def _open_session(data: bytes, num_threads: int | None, path: str):
    """A CPU session of ``data`` with fresh random seeds (see the module docstring)."""
    options = _ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.inter_op_num_threads = 1
    if num_threads is not None:
        options.intra_op_num_threads = num_threads
    try:
        with _SEED_LOCK:
            _ort.set_seed(int.from_bytes(os.urandom(4), "little") >> 1)
            return _ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own types (InvalidProtobuf, Fail, ...)
        why = " ".join(str(err).split())[:300]
        raise ValueError(f"Not a valid ONNX model file ({why}). Received: path={path!r}") from err


def _check_samples(samples: np.ndarray, path: str, regression: bool = False) -> np.ndarray:
    """Samples if finite and (a classifier's) in ``[0, 1]`` +- 1e-3, else ``ValueError``."""
    if samples.size and not (np.isfinite(samples).all() and (regression or (
            samples.min() >= -1e-3 and samples.max() <= 1.0 + 1e-3))):
        raise ValueError(
            f"The model returned NaN, infinity or values outside [0, 1] for finite inputs: the "
            f"file is damaged or not a classifier from to_onnx. Received: path={path!r}")
    return samples


class OnnxBayesianModel:
    """A Monte Carlo ONNX classifier written by `tfp_bcnn.export.to_onnx`.

    Threads: one object may be shared by any number of threads. ONNX
    Runtime's ``InferenceSession.run`` is thread-safe (concurrent runs of one
    session are supported; its random kernels lock their generators), so
    the object holds one session and no lock of its own.

    Memory: the graph tiles each chunk of ``batch_size`` examples ``S``
    times, so at most ``batch_size * S`` rows per concurrent run are in
    flight, plus ``O(N * C)`` for the results (``S * N * C`` with
    ``return_samples=True``).

    Methods ``predict(x, num_invocations=1, batch_size=None,
    return_samples=False) -> Prediction`` and ``sample(x, num_invocations=1,
    batch_size=None) -> (S * num_invocations, N, C)`` are
    `TFLiteBayesianModel`'s (same arguments, checks, chunking of ``2048 //
    S`` examples per run by default, errors and warnings).

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads of the session (None: ONNX Runtime's
            default, one per physical core).

    Attributes:
        input_shape: ``(None, *example_shape)``.
        num_classes: C (a regressor's: 2K, mean and std).
        output_shape: ``(C,)``, a dense model's ``(*spatial, C)``.
        regression: a ``GaussianHead`` file (`predict` gives a `RegressionPrediction`).
        num_samples: Monte Carlo samples S drawn per run.
        outputs: names of the file's outputs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, over `MAX_FILE_BYTES`, not an
            ONNX model ONNX Runtime can load, or not a classifier written by
            ``to_onnx`` (input ``images``, output ``samples`` of rank >= 3),
            or its samples on a zero image are not finite probabilities;
            an invalid ``num_threads``. Each message names the file.
    """

    def __init__(self, path, num_threads: int | None = None):
        self.path = os.fspath(path)
        if num_threads is not None:
            num_threads = _positive_int("num_threads", num_threads)
        self.num_threads = num_threads
        self._session = _open_session(_read(self.path), num_threads, self.path)
        inputs = self._session.get_inputs()
        outputs = {o.name: o for o in self._session.get_outputs()}
        self.outputs = tuple(outputs)
        samples = outputs.get(_SAMPLES)
        if (len(inputs) != 1 or inputs[0].name != _INPUT or inputs[0].type != "tensor(float)"
                or samples is None or len(samples.shape) < 3
                or not all(isinstance(d, int) for d in (*inputs[0].shape[1:], samples.shape[0],
                                                         *samples.shape[2:]))):
            found = ([(i.name, i.type, i.shape) for i in inputs],
                     [(o.name, o.shape) for o in outputs.values()])
            raise ValueError(
                f"Not a model written by tfp_bcnn.export.to_onnx: expected one float input "
                f"{_INPUT!r} (batch, *static shape) and an output {_SAMPLES!r} "
                f"(S, batch, *spatial, C); "
                f"found inputs and outputs {found}. Received: path={self.path!r}")
        self.input_shape = (None, *inputs[0].shape[1:])
        self._fixed_batch = None  # read by the shared _draws: ONNX files have a free batch
        self.num_samples = int(samples.shape[0])
        # A dense model's samples are (S, batch, *spatial, C); a GaussianHead file's C is 2K
        # (mean, std) and it also outputs "variance" (read by the shared predict).
        self.output_shape = tuple(int(d) for d in samples.shape[2:])
        self.regression = "variance" in outputs
        self.num_classes = self.output_shape[-1]
        self._invoke(np.zeros((1, *self.input_shape[1:]), np.float32))  # probe: finite?

    def __repr__(self):
        return (
            f"OnnxBayesianModel(path={self.path!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, num_samples={self.num_samples})"
        )

    def _invoke(self, x):
        return _check_samples(self._session.run([_SAMPLES], {_INPUT: x})[0], self.path,
                              self.regression)

    # The TFLite runner's methods, shared (they read input_shape, num_samples,
    # num_classes, _fixed_batch and _invoke): the same checks, chunking and
    # summaries, and the same docstrings.
    _validate = _tflite.TFLiteBayesianModel._validate
    _draws = _tflite.TFLiteBayesianModel._draws
    sample = _tflite.TFLiteBayesianModel.sample
    predict = _tflite.TFLiteBayesianModel.predict
