"""Run an exported Bayesian ONNX model with numpy and ONNX Runtime only.

`OnnxBayesianModel` is the ONNX twin of
`tfp_bcnn.export.runtime.TFLiteBayesianModel`: the same ``predict`` /
``sample`` API and the same `Prediction`, for a file written by
`tfp_bcnn.export.to_onnx` (input ``images``, dynamic batch; output
``samples`` ``(S, batch, C)``, the probabilities of S Monte Carlo samples
drawn in one run). The summaries are computed here from the samples, so
several runs pool into one estimate of ``S * num_invocations`` samples.

It imports no TensorFlow or Keras. Inside the package `Prediction`,
`summarize` and the image checks are those of ``tfp_bcnn._prediction`` and
``tfp_bcnn._validation`` (NumPy-only modules); copied to a device as
``onnx_runtime.py`` beside ``runtime.py`` it takes them from there (``pip
install numpy onnxruntime ai-edge-litert``: runtime.py imports LiteRT).

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

import functools
import os
import threading

import numpy as np
import onnxruntime as _ort

if __package__ and __package__.split(".")[0] == "tfp_bcnn":
    from .. import _validation
    from .._prediction import Prediction, summarize
    from .._prediction import concatenate as _concatenate

    _positive_int = _validation.positive_int
    #: stacklevel 4: images <- _validate <- predict/sample <- the caller
    _check_images = functools.partial(_validation.images, name="x", stacklevel=4)
else:  # copied to a device beside runtime.py (the same checks, without tfp_bcnn)
    from runtime import Prediction, _check_images, _concatenate, _positive_int, summarize

__all__ = ["OnnxBayesianModel", "Prediction"]

_INPUT = "images"
_SAMPLES = "samples"
#: Default cap on tiled rows per run (examples per chunk x samples), as for TFLite.
_MAX_TILED_ROWS = 2048
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


def _check_samples(samples: np.ndarray, path: str) -> np.ndarray:
    """Samples if all are finite and in ``[0, 1]`` (+- 1e-3), else ``ValueError``."""
    if samples.size and not (np.isfinite(samples).all() and samples.min() >= -1e-3
                             and samples.max() <= 1.0 + 1e-3):
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

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads of the session (None: ONNX Runtime's
            default, one per physical core).

    Attributes:
        input_shape: ``(None, *example_shape)``.
        num_classes: C.
        num_samples: Monte Carlo samples S drawn per run.
        outputs: names of the file's outputs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, over `MAX_FILE_BYTES`, not an
            ONNX model ONNX Runtime can load, or not a classifier written by
            ``to_onnx`` (input ``images``, output ``samples`` of rank 3),
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
                or samples is None or len(samples.shape) != 3
                or not all(isinstance(d, int) for d in (*inputs[0].shape[1:], samples.shape[0],
                                                         samples.shape[2]))):
            found = ([(i.name, i.type, i.shape) for i in inputs],
                     [(o.name, o.shape) for o in outputs.values()])
            raise ValueError(
                f"Not a model written by tfp_bcnn.export.to_onnx: expected one float input "
                f"{_INPUT!r} (batch, *static shape) and an output {_SAMPLES!r} (S, batch, C); "
                f"found inputs and outputs {found}. Received: path={self.path!r}")
        self.input_shape = (None, *inputs[0].shape[1:])
        self.num_samples = int(samples.shape[0])
        self.num_classes = int(samples.shape[2])
        self._invoke(np.zeros((1, *self.input_shape[1:]), np.float32))  # probe: finite?

    def __repr__(self):
        return (
            f"OnnxBayesianModel(path={self.path!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, num_samples={self.num_samples})"
        )

    def _invoke(self, x):
        return _check_samples(self._session.run([_SAMPLES], {_INPUT: x})[0], self.path)

    def _validate(self, x):
        x = np.asarray(x)
        example = tuple(self.input_shape[1:])
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                "Inputs must be floating point (float32, scaled as in training, e.g. to "
                f"[0, 1]; divide uint8 images by 255). Received: x.dtype={x.dtype}"
            )
        if x.ndim != len(example) + 1 or x.shape[1:] != example:
            hint = "; use x[None] for one example" if x.shape == example else ""
            raise ValueError(
                f"Expected inputs of shape (batch, {', '.join(map(str, example))}){hint}. "
                f"Received: x.shape={x.shape}"
            )
        _check_images(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _draws(self, x, num_invocations, batch_size):
        """Yields ``(S * num_invocations, b, C)`` samples per chunk of ``b`` examples."""
        num_invocations = _positive_int("num_invocations", num_invocations)
        if batch_size is None:
            batch_size = max(1, _MAX_TILED_ROWS // self.num_samples)
        batch_size = _positive_int("batch_size", batch_size)
        if len(x) == 0:  # some graphs (the "weights" reshapes) fail on a 0-row batch
            yield np.zeros((self.num_samples * num_invocations, 0, self.num_classes), np.float32)
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            draws = [self._invoke(chunk) for _ in range(num_invocations)]
            yield draws[0] if num_invocations == 1 else np.concatenate(draws, axis=0)

    def sample(self, x, num_invocations: int = 1, batch_size: int | None = None) -> np.ndarray:
        """Per-sample probabilities ``(S * num_invocations, N, C)`` (see `predict`)."""
        draws = self._draws(self._validate(x), num_invocations, batch_size)
        return np.concatenate(list(draws), axis=1)

    def predict(
        self,
        x,
        num_invocations: int = 1,
        batch_size: int | None = None,
        return_samples: bool = False,
    ) -> Prediction:
        """Monte Carlo prediction with the uncertainty decomposition.

        Chunks of ``batch_size`` examples are run and summarised one at a
        time. Safe to call from several threads.

        Args:
            x: ``(N, *example_shape)`` floating-point inputs (cast to float32;
                ``N = 0`` gives fields with ``N = 0``).
            num_invocations: runs per chunk; their samples are pooled, giving
                ``S * num_invocations`` samples per example.
            batch_size: examples per run (tiled S times inside); default
                ``2048 // S`` (at least 1).
            return_samples: keep the ``(S * num_invocations, N, C)`` samples.

        Returns:
            `Prediction` (the fields of `tfp_bcnn.predict`): ``mean``,
            ``std`` ``(N, C)``; ``predictive_entropy``, ``aleatoric``,
            ``epistemic`` ``(N,)`` in nats; the variance decomposition.

        Raises:
            ValueError: a wrong shape or dtype, NaN or infinity in some image
                (the message gives the indices of the first five), or invalid
                arguments; the message quotes the value received.

        Warns:
            UserWarning: ``max |x| > 20``: the images look unscaled (0-255).
        """
        parts = []
        for draws in self._draws(self._validate(x), num_invocations, batch_size):
            parts.append(summarize(draws, return_samples=return_samples))
        return _concatenate(parts)
