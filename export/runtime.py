"""Run an exported Bayesian TFLite model with numpy and LiteRT only.

This file imports nothing but numpy and ``ai_edge_litert`` (no TensorFlow,
Keras or tfp_bcnn), so it can be copied alone to a device. Inside the package
its `Prediction` and `summarize` are those of ``tfp_bcnn._prediction`` (a
NumPy-only module), the type `tfp_bcnn.predict` returns; copied alone it
defines the same two itself::

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
import threading
import warnings

import numpy as np
from ai_edge_litert import interpreter as _litert

__all__ = ["Prediction", "TFLiteBayesianModel", "summarize"]

_SIGNATURE = "serving_default"
_INPUT = "images"
_SAMPLES = "samples"
#: Default cap on tiled rows per invocation (examples per chunk x samples).
_MAX_TILED_ROWS = 2048
#: Default bound on interpreters (concurrent invocations); see the class docstring.
_MAX_INTERPRETERS = 1
#: Largest ``|x|`` that does not look like unscaled (0-255) pixels, as in
#: ``tfp_bcnn._validation.UNSCALED_LIMIT`` (repeated: this file is self-contained).
_UNSCALED_LIMIT = 20.0


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
    with _STDERR_LOCK:  # interpreters of the pool open in several threads
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


#: Held while file descriptor 2 is redirected, so that two threads never swap it
#: at once (the second would save /dev/null as the stderr to restore).
_STDERR_LOCK = threading.RLock()


if __package__ and __package__.split(".")[0] == "tfp_bcnn":
    # Inside the package: the one definition, shared with `tfp_bcnn.predict`.
    from .._prediction import Prediction, summarize
    from .._prediction import concatenate as _concatenate
else:
    # This file copied alone to a device (no tfp_bcnn, TensorFlow or Keras): the
    # same maths, repeated here on purpose. tests/test_runtime.py checks that this
    # copy and tfp_bcnn._prediction give the same numbers.

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
            aleatoric_variance: ``(N, C)`` ``mean_s (p_s - p_s^2)``.
            epistemic_variance: ``(N, C)`` ``mean_s (p_s - mean)^2``.
            samples: ``(S, N, C)`` per-sample probabilities, or None.
        """

        mean: np.ndarray
        std: np.ndarray
        predictive_entropy: np.ndarray
        aleatoric: np.ndarray
        epistemic: np.ndarray
        aleatoric_variance: np.ndarray
        epistemic_variance: np.ndarray
        samples: np.ndarray | None = None

    def summarize(samples, return_samples: bool = False) -> Prediction:
        """Summaries of ``(S, N, C)`` per-sample probabilities (float64 fields)."""
        samples = np.asarray(samples)
        if samples.ndim != 3:
            raise ValueError(
                f"`samples` must have shape (S, N, C). Received: samples.shape={samples.shape}"
            )
        p = np.clip(samples.astype(np.float64), 0.0, 1.0)
        mean = p.mean(axis=0)
        var = np.mean(np.square(p - mean), axis=0)
        ent = -np.sum(mean * np.log(np.where(mean > 0, mean, 1.0)), axis=-1)
        ale = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1).mean(axis=0)
        return Prediction(mean, np.sqrt(var), ent, ale, np.maximum(ent - ale, 0.0),
                          np.mean(p * (1.0 - p), axis=0), var,
                          samples if return_samples else None)

    def _concatenate(parts):
        """Join per-chunk `Prediction`s along the example axis (axis 1 for samples)."""
        if len(parts) == 1:
            return parts[0]
        return Prediction(**{
            f.name: None if getattr(parts[0], f.name) is None else np.concatenate(
                [getattr(p, f.name) for p in parts], axis=1 if f.name == "samples" else 0)
            for f in dataclasses.fields(Prediction)})


def _check_images(x) -> None:
    """Refuses NaN/inf images (naming the first five by index); warns if unscaled.

    The rules of ``tfp_bcnn._validation.images``, repeated here so that
    this file imports nothing from tfp_bcnn: a ``ValueError`` when any image
    holds NaN or +-inf, a ``UserWarning`` when ``max |x| > 20`` (images that
    look like raw 0-255 pixels; the models are trained on ``[0, 1]``).
    """
    if x.size == 0:
        return
    flat = x.reshape(len(x), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        shown = ", ".join(str(i) for i in bad[:5])
        more = f", ... ({len(bad)} in all)" if len(bad) > 5 else ""
        raise ValueError(
            f"Inputs contain NaN or infinity in {len(bad)} image(s): a model would return a "
            f"confident-looking answer for them. Fix or drop these images. "
            f"Received: non-finite x at indices [{shown}{more}]"
        )
    peak = max(abs(float(flat.max())), abs(float(flat.min())))
    if peak > _UNSCALED_LIMIT:
        warnings.warn(
            f"Inputs look unscaled: max |x| = {peak:g} > {_UNSCALED_LIMIT:g}. The models are "
            f"trained on images scaled to [0, 1]; divide by 255 unless the model scales its "
            f"inputs itself.",
            UserWarning,
            stacklevel=4,  # _check_images <- _validate <- predict/sample <- the caller
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

    Threads: one object may be shared by any number of threads. A LiteRT
    interpreter is not thread-safe (two threads resizing and invoking one
    interpreter raise, or silently mix their batches), so the object keeps a
    small pool: each chunk of a call checks out an idle interpreter, creating
    a new one when none is idle and fewer than ``max_interpreters`` exist
    (else it waits for one), and returns it after. ``max_interpreters=1``,
    the default, is a lock around one interpreter. Measured on this
    project's shared 2-core machine (8 threads x 4-5 calls of 1-50 MNIST
    images, S = 32, LeNet-5, medians of 3-4 interleaved rounds, two runs): a
    pool of 2 gave 0.97-1.04x the throughput of the lock and a pool of 4
    0.85-0.87x (BENCHMARKS.md, "Reliability"): with every core busy, more
    interpreters only add memory and contention. Each interpreter runs
    LiteRT's default of one thread, so on a machine with idle cores a
    ``max_interpreters`` up to the number of cores lets that many calls run
    at once.

    Memory: the graph tiles each chunk of ``batch_size`` examples ``S``
    times, so at most ``max_interpreters * batch_size * S`` rows are in
    flight (one invocation per interpreter), plus ``O(N * C)`` for the
    results (and ``S * N * C`` with ``return_samples=True``), whatever ``N``.

    Args:
        path: the ``.tflite`` file.
        num_threads: threads of each interpreter (None: LiteRT's default).
        max_interpreters: the most interpreters (and concurrent invocations)
            this object creates, lazily (at most one per concurrent call).
            Default 1: a lock.

    Attributes:
        input_shape: ``(None, *example_shape)``.
        num_classes: C.
        num_samples: Monte Carlo samples S drawn per invocation.
        op_resolver: ``"auto"`` or ``"builtin_without_default_delegates"``.
        max_interpreters: the bound above.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, not a TFLite flatbuffer, corrupt
            or truncated, or not a model written by ``to_tflite``; invalid
            ``num_threads`` or ``max_interpreters``.
    """

    def __init__(self, path, num_threads: int | None = None, max_interpreters: int | None = None):
        self.path = os.fspath(path)
        if num_threads is not None:
            num_threads = _positive_int("num_threads", num_threads)
        self.num_threads = num_threads
        if max_interpreters is None:
            max_interpreters = _MAX_INTERPRETERS
        self.max_interpreters = _positive_int("max_interpreters", max_interpreters)
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
                runner = self._open(resolver)
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
        self._pool = threading.Condition()
        self._idle = [runner]  # signature runners not in use
        self._created = 1

    def _open(self, resolver):
        """A new interpreter's signature runner, checked and prepared."""
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
        self.input_shape = (None, *shape[1:])
        self._fixed_batch = shape[0] if shape[0] > 0 else None
        self.num_samples = int(out["shape_signature"][0])
        self.num_classes = int(out["shape_signature"][2])
        # Prepare the graph once, so a delegate that cannot take it fails here
        # (quietly: LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate").
        with _native_stderr_silenced():
            runner(**{_INPUT: np.zeros((self._fixed_batch or 1, *shape[1:]), np.float32)})
        return runner

    @contextlib.contextmanager
    def _checkout(self):
        """An interpreter's runner for this thread alone, returned to the pool after."""
        with self._pool:
            while not self._idle and self._created >= self.max_interpreters:
                self._pool.wait()
            runner = self._idle.pop() if self._idle else None
            if runner is None:
                self._created += 1
        try:
            if runner is None:
                runner = self._open(self.op_resolver)
            yield runner
        except BaseException:
            if runner is None:  # creation failed: free its place
                with self._pool:
                    self._created -= 1
                    self._pool.notify()
            raise
        finally:
            if runner is not None:
                with self._pool:
                    self._idle.append(runner)
                    self._pool.notify()

    def __repr__(self):
        return (
            f"TFLiteBayesianModel(path={self.path!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, num_samples={self.num_samples})"
        )

    def _invoke(self, x):
        with self._checkout() as runner:
            return runner(**{_INPUT: x})[_SAMPLES]

    def _validate(self, x):
        x = np.asarray(x)
        example = tuple(self.input_shape[1:])
        if not (np.issubdtype(x.dtype, np.floating)):
            raise ValueError(
                "Inputs must be floating point (float32, scaled as in training, e.g. to "
                f"[0, 1]; divide uint8 images by 255). Received: x.dtype={x.dtype}"
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
        _check_images(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _draws(self, x, num_invocations, batch_size):
        """Yields ``(S * num_invocations, b, C)`` samples per chunk of ``b`` examples.

        ``x`` has been through `_validate`.
        """
        num_invocations = _positive_int("num_invocations", num_invocations)
        if batch_size is None:
            batch_size = self._fixed_batch or max(1, _MAX_TILED_ROWS // self.num_samples)
        batch_size = _positive_int("batch_size", batch_size)
        if self._fixed_batch is not None and batch_size != self._fixed_batch:
            raise ValueError(
                f"This model has a fixed batch size of {self._fixed_batch}. "
                f"Received: batch_size={batch_size}"
            )
        if len(x) == 0:
            yield np.zeros((self.num_samples * num_invocations, 0, self.num_classes), np.float32)
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            rows = chunk.shape[0]
            if self._fixed_batch is not None and rows < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - rows, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            draws = [self._invoke(chunk)[:, :rows] for _ in range(num_invocations)]
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
        time, so memory does not grow with ``N * S`` (see the class
        docstring). Safe to call from several threads.

        Args:
            x: ``(N, *example_shape)`` floating-point inputs (cast to float32;
                ``N = 0`` gives fields with ``N = 0``).
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
            ValueError: a wrong shape or dtype (integer images: scale them to
                float), NaN or infinity in some image (the message gives the
                indices of the first five), or invalid arguments; the message
                quotes the value received.

        Warns:
            UserWarning: ``max |x| > 20``: the images look unscaled (0-255).
        """
        parts = []
        for draws in self._draws(self._validate(x), num_invocations, batch_size):
            parts.append(summarize(draws, return_samples=return_samples))
        return _concatenate(parts)


class _InvalidModel(Exception):
    """The file is not a usable model (no retry with another op resolver)."""
