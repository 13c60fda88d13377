"""Run an exported Bayesian TFLite model with numpy and LiteRT only.

This file imports nothing but numpy and ``ai_edge_litert`` (no TensorFlow,
Keras or tfp_bcnn), so it can be copied alone to a device::

    pip install numpy ai-edge-litert
    python -c "from runtime import TFLiteBayesianModel; ..."

The model is a file written by `tfp_bcnn.export.to_tflite`: signature
``serving_default`` with input ``images`` (dynamic batch) and output
``samples`` ``(S, batch, C)``, the class probabilities of S Monte Carlo samples
drawn in one invocation. The summaries are computed here from the samples, so
several invocations pool into one estimate of ``S * num_invocations`` samples.

Example:

>>> model = TFLiteBayesianModel("bcnn.tflite")     # doctest: +SKIP
>>> p = model.predict(x_test, num_invocations=2)   # 2 x 32 samples
>>> p.mean.shape, p.epistemic.shape                 # doctest: +SKIP
((1000, 10), (1000,))
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys

import numpy as np
from ai_edge_litert import interpreter as _litert

__all__ = ["Prediction", "TFLiteBayesianModel", "summarize"]

_SIGNATURE = "serving_default"
_INPUT = "images"
_SAMPLES = "samples"
#: Default cap on tiled rows per invocation (examples per chunk x samples).
_MAX_TILED_ROWS = 2048


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 to /dev/null within the block, unless ``TFP_BCNN_VERBOSE=1``.

    LiteRT's C++ writes an INFO line there when it creates its CPU delegate.
    (``tfp_bcnn._quiet`` has the package's copy; this file imports nothing
    from tfp_bcnn, so it keeps its own.)
    """
    if os.environ.get("TFP_BCNN_VERBOSE", "").strip() not in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
    """Monte Carlo predictive distribution; fields as `tfp_bcnn.predict`'s.

    Attributes:
        mean: ``(N, C)`` predictive probabilities (mean over samples).
        std: ``(N, C)`` standard deviation over samples (ddof=0).
        predictive_entropy: ``(N,)`` entropy of ``mean``, nats.
        aleatoric: ``(N,)`` expected entropy ``mean_s H[p_s]``, nats.
        epistemic: ``(N,)`` mutual information ``predictive_entropy -
            aleatoric`` (clipped at 0), nats.
        aleatoric_variance: ``(N, C)`` ``mean_s (p_s - p_s^2)``, the diagonal
            of Kwon et al.'s aleatoric covariance.
        epistemic_variance: ``(N, C)`` ``mean_s (p_s - mean)^2``.
        samples: ``(S, N, C)`` per-sample probabilities (float32), or None.

    Derived fields are float64, as in `tfp_bcnn.uncertainty.Prediction`.
    """

    mean: np.ndarray
    std: np.ndarray
    predictive_entropy: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    aleatoric_variance: np.ndarray
    epistemic_variance: np.ndarray
    samples: np.ndarray | None = None


def _entropy(p):
    """``-sum_c p_c log p_c`` over the last axis, with ``0 log 0 = 0``."""
    return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)


def summarize(samples, return_samples: bool = False) -> Prediction:
    """Summaries of ``(S, N, C)`` per-sample probabilities.

    The definitions of `tfp_bcnn.uncertainty.decompose`: derived fields are
    float64 (double-precision math on probabilities clipped to [0, 1]),
    ``samples`` keep their dtype.
    """
    samples = np.asarray(samples)
    if samples.ndim != 3:
        raise ValueError(
            f"`samples` must have shape (S, N, C). Received: samples.shape={samples.shape}"
        )
    p = np.clip(samples.astype(np.float64), 0.0, 1.0)
    mean = p.mean(axis=0)
    epistemic_variance = np.mean(np.square(p - mean), axis=0)
    predictive_entropy = _entropy(mean)
    aleatoric = _entropy(p).mean(axis=0)
    return Prediction(
        mean=mean,
        std=np.sqrt(epistemic_variance),
        predictive_entropy=predictive_entropy,
        aleatoric=aleatoric,
        epistemic=np.maximum(predictive_entropy - aleatoric, 0.0),
        aleatoric_variance=np.mean(p * (1.0 - p), axis=0),
        epistemic_variance=epistemic_variance,
        samples=samples if return_samples else None,
    )


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


class TFLiteBayesianModel:
    """A Monte Carlo TFLite classifier written by `tfp_bcnn.export.to_tflite`.

    The interpreter first uses LiteRT's default op resolver (with the XNNPACK
    delegate); if that fails to prepare the graph (XNNPACK cannot take some
    sparse int8 kernels) it falls back to the builtin kernels without default
    delegates. ``op_resolver`` says which one runs.

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads (None: LiteRT's default).

    Attributes:
        input_shape: ``(None, *example_shape)``.
        num_classes: C.
        num_samples: Monte Carlo samples S drawn per invocation.
        op_resolver: ``"auto"`` or ``"builtin_without_default_delegates"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, not a TFLite flatbuffer, corrupt
            or truncated, or not a model written by ``to_tflite``.
    """

    def __init__(self, path, num_threads: int | None = None):
        self.path = os.fspath(path)
        if num_threads is not None:
            num_threads = _positive_int("num_threads", num_threads)
        self.num_threads = num_threads
        if os.path.isdir(self.path):
            raise ValueError(
                "Expected a .tflite file, got a directory (a SavedModel? load it with "
                f"tf.saved_model.load). Received: path={self.path!r}"
            )
        with open(self.path, "rb") as f:
            self._content = f.read()
        if len(self._content) < 8 or self._content[4:8] != b"TFL3":
            raise ValueError(
                "Not a TFLite flatbuffer (missing the 'TFL3' identifier; empty, truncated "
                f"or another format). Received: path={self.path!r}"
            )
        errors = []
        for resolver in ("auto", "builtin_without_default_delegates"):
            try:
                self._open(resolver)
                self.op_resolver = resolver
                break
            except _InvalidModel as err:
                raise ValueError(f"{err} Received: path={self.path!r}") from err.__cause__
            except (RuntimeError, ValueError) as err:
                errors.append(f"{resolver}: {err}")
        else:
            raise ValueError(
                f"LiteRT could not prepare the model ({'; '.join(errors)}). "
                f"Received: path={self.path!r}"
            )

    def _open(self, resolver):
        resolvers = _litert.OpResolverType
        kind = {
            "auto": resolvers.AUTO,
            "builtin_without_default_delegates": resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        }[resolver]
        try:
            interpreter = _litert.Interpreter(
                model_content=self._content,
                num_threads=self.num_threads,
                experimental_op_resolver_type=kind,
            )
            signatures = interpreter.get_signature_list()
        except ValueError as err:
            raise _InvalidModel(f"Corrupt or truncated TFLite file ({err}).") from err
        spec = signatures.get(_SIGNATURE)
        if spec is None or spec["inputs"] != [_INPUT] or _SAMPLES not in spec["outputs"]:
            raise _InvalidModel(
                f"Not a model written by tfp_bcnn.export.to_tflite: expected a signature "
                f"{_SIGNATURE!r} with input {_INPUT!r} and output {_SAMPLES!r}, found {signatures}."
            )
        runner = interpreter.get_signature_runner(_SIGNATURE)
        inp = runner.get_input_details()[_INPUT]
        out = runner.get_output_details()[_SAMPLES]
        shape = [int(d) for d in inp["shape_signature"]]
        if inp["dtype"] != np.float32 or len(out["shape_signature"]) != 3:
            raise _InvalidModel(
                f"Unexpected signature: input {inp['dtype']} {shape}, samples "
                f"{list(out['shape_signature'])}."
            )
        self._interpreter = interpreter
        self._runner = runner
        self.input_shape = (None, *shape[1:])
        self._fixed_batch = shape[0] if shape[0] > 0 else None
        self.num_samples = int(out["shape_signature"][0])
        self.num_classes = int(out["shape_signature"][2])
        # Prepare the graph once, so a delegate that cannot take it fails here
        # (quietly: LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate").
        with _native_stderr_silenced():
            self._invoke(np.zeros((self._fixed_batch or 1, *shape[1:]), np.float32))

    def __repr__(self):
        return (
            f"TFLiteBayesianModel(path={self.path!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, num_samples={self.num_samples})"
        )

    def _invoke(self, x):
        return self._runner(**{_INPUT: x})[_SAMPLES]

    def _validate(self, x):
        x = np.asarray(x)
        example = tuple(self.input_shape[1:])
        if not (np.issubdtype(x.dtype, np.floating)):
            raise ValueError(
                "Inputs must be floating point (float32, scaled as in training, e.g. to "
                f"[0, 1]). Received: x.dtype={x.dtype}"
            )
        if x.ndim == len(example) and x.shape == example:
            raise ValueError(
                f"Inputs need a batch axis: expected (batch, {', '.join(map(str, example))}); "
                f"use x[None] for one example. Received: x.shape={x.shape}"
            )
        if x.ndim != len(example) + 1 or x.shape[1:] != example:
            raise ValueError(
                f"Expected inputs of shape (batch, {', '.join(map(str, example))}). "
                f"Received: x.shape={x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("Inputs contain NaN or infinity. Received: x with non-finite values")
        return np.ascontiguousarray(x, dtype=np.float32)

    def sample(self, x, num_invocations: int = 1, batch_size: int | None = None) -> np.ndarray:
        """Per-sample probabilities ``(S * num_invocations, N, C)`` (see `predict`)."""
        x = self._validate(x)
        num_invocations = _positive_int("num_invocations", num_invocations)
        if batch_size is None:
            batch_size = self._fixed_batch or max(1, _MAX_TILED_ROWS // self.num_samples)
        batch_size = _positive_int("batch_size", batch_size)
        if self._fixed_batch is not None and batch_size != self._fixed_batch:
            raise ValueError(
                f"This model has a fixed batch size of {self._fixed_batch}. "
                f"Received: batch_size={batch_size}"
            )
        n = x.shape[0]
        chunks = []
        for start in range(0, n, batch_size):
            chunk = x[start : start + batch_size]
            rows = chunk.shape[0]
            if self._fixed_batch is not None and rows < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - rows, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            draws = [self._invoke(chunk)[:, :rows] for _ in range(num_invocations)]
            chunks.append(np.concatenate(draws, axis=0))
        if not chunks:
            return np.zeros((self.num_samples * num_invocations, 0, self.num_classes), np.float32)
        return np.concatenate(chunks, axis=1)

    def predict(
        self,
        x,
        num_invocations: int = 1,
        batch_size: int | None = None,
        return_samples: bool = False,
    ) -> Prediction:
        """Monte Carlo prediction with the uncertainty decomposition.

        Args:
            x: ``(N, *example_shape)`` floating-point inputs (cast to float32).
            num_invocations: invocations per chunk; their samples are pooled,
                giving ``S * num_invocations`` samples per example (each
                invocation draws fresh ones).
            batch_size: examples per invocation (the graph tiles them S times,
                so memory grows with ``batch_size * S``); default
                ``2048 // S`` (at least 1).
            return_samples: keep the ``(S * num_invocations, N, C)`` samples.

        Returns:
            `Prediction` (the fields of `tfp_bcnn.predict`).

        Raises:
            ValueError: a wrong shape or dtype, non-finite inputs, or invalid
                arguments; the message quotes the value received.
        """
        samples = self.sample(x, num_invocations=num_invocations, batch_size=batch_size)
        return summarize(samples, return_samples=return_samples)


class _InvalidModel(Exception):
    """The file is not a usable model (no retry with another op resolver)."""
