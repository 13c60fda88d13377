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
drawn in one invocation (a segmentation model's ``(S, batch, H, W, C)``: fields per
pixel). The summaries are computed here from the samples, so several invocations
pool into one estimate of ``S * num_invocations`` samples.

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

__all__ = ["Prediction", "RegressionPrediction", "TFLiteBayesianModel", "check_file",
           "read_tflite", "summarize", "summarize_gaussian", "verify_tflite"]

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
    from .._prediction import Prediction, RegressionPrediction, summarize, summarize_gaussian
    from .._prediction import concatenate as _concatenate
else:
    # This file copied alone to a device (no tfp_bcnn, TensorFlow or Keras): the
    # same maths, repeated here on purpose. tests/test_runtime.py checks that this
    # copy and tfp_bcnn._prediction give the same numbers.

    @dataclasses.dataclass(frozen=True, eq=False)
    class Prediction:
        """Monte Carlo predictive distribution; fields and formulas as
        ``tfp_bcnn._prediction.Prediction``'s (``(N, [*spatial,] C)`` / ``(N, [*spatial])``)."""

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
        if samples.ndim < 3:
            raise ValueError(f"`samples` must have shape (S, N, [*spatial,] C). "
                             f"Received: samples.shape={samples.shape}")
        p = np.clip(samples.astype(np.float64), 0.0, 1.0)
        mean = p.mean(axis=0)
        var = np.mean(np.square(p - mean), axis=0)
        ent = -np.sum(mean * np.log(np.where(mean > 0, mean, 1.0)), axis=-1)
        ale = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1).mean(axis=0)
        return Prediction(mean, np.sqrt(var), ent, ale, np.maximum(ent - ale, 0.0),
                          np.mean(p * (1.0 - p), axis=0), var,
                          samples if return_samples else None)

    # GaussianHead predictive: the fields of ``tfp_bcnn._prediction.RegressionPrediction``
    RegressionPrediction = dataclasses.make_dataclass("RegressionPrediction", [
        *((f, np.ndarray) for f in ("mean", "aleatoric_variance", "epistemic_variance",
                                    "variance", "std")),
        ("samples", "np.ndarray | None", None)], frozen=True, eq=False)

    def summarize_gaussian(samples, return_samples: bool = False) -> RegressionPrediction:
        """Summaries of ``(S, N, [*spatial,] 2K)`` sampled ``[mu, sigma]`` (float64)."""
        mu, sigma = np.split(np.asarray(samples, np.float64), 2, axis=-1)
        ale, epi = np.mean(np.square(sigma), axis=0), np.mean(np.square(mu - mu.mean(0)), 0)
        return RegressionPrediction(mu.mean(axis=0), ale, epi, ale + epi, np.sqrt(ale + epi),
                                    samples if return_samples else None)

    def _concatenate(parts):
        """Join per-chunk results along the example axis (axis 1 for samples)."""
        if len(parts) == 1:
            return parts[0]
        return type(parts[0])(**{
            f.name: None if getattr(parts[0], f.name) is None else np.concatenate(
                [getattr(p, f.name) for p in parts], axis=1 if f.name == "samples" else 0)
            for f in dataclasses.fields(parts[0])})


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


# ------------------------------------------------------- file validation
#: Largest ``.tflite`` file and declared tensor accepted (bytes; 32-bit offsets).
MAX_FILE_BYTES = 2**31 - 1
#: Bytes per element of the TFLite ``TensorType``s of fixed size (INT4: 0.5).
_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8,
             15: 4, 16: 2, 17: 0.5, 18: 2}
_FLOATS = {0: np.float32, 1: np.float16, 10: np.float64}
#: Inputs that may be absent (-1) when run: biases of CONV_2D, DEPTHWISE_CONV_2D,
#: FULLY_CONNECTED, TRANSPOSE_CONV (-1 in 64 of 148 other slots crashed LiteRT).
_OPTIONAL = {3: (2,), 4: (2,), 9: (2,), 67: (3,)}


class _Malformed(Exception):
    """Not a well-formed TFLite model (the message says where and why)."""


class _Flat:
    """Bounds-checked reads of a flatbuffer (https://flatbuffers.dev/internals/).

    A table is ``(position, vtable, vtable size, table size)``; every offset
    is checked against the data before it is followed.
    """

    def __init__(self, data: bytes):
        self.data, self.size = data, len(data)

    def read(self, fmt: str, pos: int, n: int = 1):
        width = int(fmt[-1]) * n
        if pos < 0 or pos + width > self.size:
            raise _Malformed(f"offset {pos} + {width} bytes runs past the end ({self.size})")
        values = np.frombuffer(self.data, fmt, n, pos)
        return int(values[0]) if n == 1 else values

    def table(self, pos):
        vt = pos - self.read("<i4", pos)
        vsize, tsize = self.read("<u2", vt), self.read("<u2", vt + 2)
        if vsize < 4 or vsize % 2 or tsize < 4 or pos + tsize > self.size or vt + vsize > self.size:
            raise _Malformed(f"bad table at offset {pos}")
        return pos, vt, vsize, tsize

    def scalar(self, t, i, fmt):
        """Field ``i`` of table ``t`` (0 when absent), or its position if ``fmt`` is None."""
        width = 4 if fmt is None else int(fmt[-1])
        off = self.read("<u2", t[1] + 4 + 2 * i) if 4 + 2 * i < t[2] else 0
        if off and off + width > t[3]:
            raise _Malformed(f"field {i} of the table at {t[0]} lies outside it")
        return (t[0] + off if off else None) if fmt is None else (
            self.read(fmt, t[0] + off) if off else 0)

    def vector(self, t, i, fmt="<u1"):
        """Vector field ``i`` as a numpy array (empty when absent), and its position."""
        at = self.scalar(t, i, None)
        if at is None:
            return np.zeros(0, fmt), 0
        start = at + self.read("<u4", at)
        n = self.read("<u4", start)
        if start + 4 + n * int(fmt[-1]) > self.size:
            raise _Malformed(f"vector of {n} elements at {start} runs past the end")
        return np.frombuffer(self.data, fmt, n, start + 4), start + 4

    def tables(self, t, i):
        offsets, start = self.vector(t, i, "<u4")
        return [self.table(start + 4 * k + int(o)) for k, o in enumerate(offsets)]

    def string(self, t, i):
        return self.vector(t, i)[0].tobytes().decode("utf-8", "replace")


def _check_tensor(flat, tensor, buffers, checked) -> bool:
    """Shape, buffer size and (float constants) finiteness of a tensor; is it constant?"""
    shape, dtype = flat.vector(tensor, 0, "<i4")[0], flat.scalar(tensor, 1, "<i1")
    name, index = flat.string(tensor, 3), flat.scalar(tensor, 2, "<u4")
    itemsize = _ITEMSIZE.get(dtype, 0)
    count = float(np.prod(shape.astype(np.float64)))
    if ((shape < 0).any() or count * itemsize > MAX_FILE_BYTES or index >= len(buffers)
            or not 0 <= dtype <= 18):  # TensorType: FLOAT32 (0) .. BFLOAT16 (18)
        raise _Malformed(f"tensor {name!r}: shape {shape.tolist()}, type {dtype}, buffer {index}")
    offset, size = flat.scalar(buffers[index], 1, "<u8"), flat.scalar(buffers[index], 2, "<u8")
    if offset > 1 and offset + size > flat.size:  # buffers kept after a flatbuffer > 2 GB
        raise _Malformed(f"buffer {index} ({size} bytes at {offset}) runs past the end")
    data = (np.frombuffer(flat.data, np.uint8, size, offset) if offset > 1
            else flat.vector(buffers[index], 0)[0])
    if index == 0 or index in checked or dtype not in _ITEMSIZE or not data.size:
        return index > 0 and data.size > 0
    checked.add(index)
    need, sparse = int(np.ceil(count * itemsize)), flat.scalar(tensor, 6, None) is not None
    if data.size > need if sparse else data.size != need:
        raise _Malformed(f"tensor {name!r} {shape.tolist()} needs {need} bytes, has {data.size}")
    values = data[: data.size - data.size % max(1, int(itemsize))]  # whole elements
    if dtype in _FLOATS and not np.isfinite(values.view(_FLOATS[dtype])).all():
        raise _Malformed(f"tensor {name!r} holds NaN or infinite weights")
    return True


def _check_subgraph(flat, graph, buffers, codes, checked, runnable) -> int:
    """Tensors, operators and tensor indices of one subgraph; returns its tensor count."""
    tensors = flat.tables(graph, 0)
    const = {k for k, t in enumerate(tensors) if _check_tensor(flat, t, buffers, checked)}
    n = len(tensors)
    lists = [flat.vector(graph, i, "<i4")[0] for i in (1, 2)]  # inputs, outputs
    written = const | set(lists[0].tolist())  # a tensor has one producer (LiteRT crashed)
    for op in flat.tables(graph, 3):
        code = flat.scalar(op, 0, "<u4")
        if code >= len(codes):
            raise _Malformed("an operator has an unknown operator code")
        ins, outs = flat.vector(op, 1, "<i4")[0], flat.vector(op, 2, "<i4")[0]
        if written.intersection(outs.tolist()) or len(set(outs.tolist())) < len(outs):
            raise _Malformed(f"an operator writes into a constant tensor, a graph input or "
                             f"another operator's output ({outs.tolist()})")
        written.update(outs.tolist())
        absent = _OPTIONAL.get(codes[code], ()) if runnable else range(len(ins))
        lists += [np.delete(ins, [j for j in absent if j < len(ins) and ins[j] == -1]),
                  outs, flat.vector(op, 8, "<i4")[0]]
    for ids in lists:
        if ids.size and (ids.min() < 0 or ids.max() >= n):
            raise _Malformed(f"tensor indices {ids.tolist()[:8]} not among {n} tensors "
                             f"(-1, an absent input, is allowed only for a bias)")
    return n


def verify_tflite(data: bytes, runnable: bool = True) -> None:
    """Checks a TFLite flatbuffer in Python, before any native code reads it.

    Every table, vector and string the interpreter uses is reached through
    bounds-checked offsets (https://flatbuffers.dev/internals/), and the
    model's invariants hold: schema version 3, a subgraph, non-negative
    tensor shapes under `MAX_FILE_BYTES`, buffer, operator-code, tensor and
    subgraph indices in range, each constant buffer of exactly ``prod(shape)
    * itemsize`` bytes (at most that if sparse), finite float constants.

    Args:
        data: the bytes of a ``.tflite`` file.
        runnable: also refuse an absent input (-1) other than a bias (see
            ``_OPTIONAL``); False only where no interpreter will load it.

    Raises:
        ValueError: the first problem found, saying where (the caller adds
            the path).
    """
    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise _Malformed("missing the 'TFL3' identifier: empty, truncated or another format")
        flat = _Flat(data)
        model = flat.table(flat.read("<u4", 0))
        if flat.scalar(model, 0, "<u4") != 3:
            raise _Malformed(f"schema version {flat.scalar(model, 0, '<u4')}, expected 3")
        buffers, graphs = flat.tables(model, 4), flat.tables(model, 2)
        codes = [max(flat.scalar(c, 3, "<i4"), flat.scalar(c, 0, "<i1"))
                 for c in flat.tables(model, 1)]  # builtin_code, deprecated_builtin_code
        sizes = [_check_subgraph(flat, g, buffers, codes, set(), runnable) for g in graphs]
        if not graphs or any(flat.scalar(m, 1, "<u4") >= len(buffers)
                             for m in flat.tables(model, 6)):
            raise _Malformed("no subgraph, or metadata pointing past the buffers")
        for sig in flat.tables(model, 7):
            g = flat.scalar(sig, 4, "<u4")
            if g >= len(graphs) or any(flat.scalar(m, 1, "<u4") >= sizes[g]
                                       for m in flat.tables(sig, 0) + flat.tables(sig, 1)):
                raise _Malformed(f"signature {flat.string(sig, 2)!r} points out of range")
    except _Malformed as err:
        raise ValueError(f"Not a valid TFLite model file: {err}.") from None


def read_tflite(path, runnable: bool = True) -> bytes:
    """The bytes of a ``.tflite`` file, once `verify_tflite` (``runnable``) accepts them.

    Raises:
        OSError: unreadable (FileNotFoundError: missing).
        ValueError: over `MAX_FILE_BYTES` or refused; ends ``Received: path=...``.
    """
    path = os.fspath(path)
    try:
        if os.stat(path).st_size > MAX_FILE_BYTES:
            raise ValueError(f"File over {MAX_FILE_BYTES} bytes: not a TFLite flatbuffer.")
        with open(path, "rb") as f:
            data = f.read()
        verify_tflite(data, runnable)
    except ValueError as err:
        raise ValueError(f"{err} Received: path={path!r}") from None
    return data


def _check_samples(samples: np.ndarray, path: str, regression: bool = False) -> np.ndarray:
    """Samples if finite and (a classifier's) in ``[0, 1]`` +- 1e-3, else ``ValueError``."""
    if samples.size and not (np.isfinite(samples).all() and (regression or (
            samples.min() >= -1e-3 and samples.max() <= 1.0 + 1e-3))):
        raise ValueError(
            f"The model returned NaN, infinity or values outside [0, 1] for finite inputs: the "
            f"file is damaged or not a classifier from to_tflite. Received: path={path!r}")
    return samples


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
    the default, is a lock around one interpreter: on a busy 2-core machine
    pools of 2 and 4 gave 0.97-1.04x and 0.85-0.87x its throughput
    (BENCHMARKS.md, "Reliability"). Each interpreter runs
    LiteRT's default of one thread, so on a machine with idle cores a
    ``max_interpreters`` up to the number of cores lets that many calls run
    at once.

    Memory: the graph tiles each chunk of ``batch_size`` examples ``S``
    times, so at most ``max_interpreters * batch_size * S`` rows are in
    flight (one invocation per interpreter), plus ``O(N * C)`` for the
    results (and ``S * N * C`` with ``return_samples=True``), whatever ``N``;
    for a dense model count per pixel (``C`` is ``H * W * C``).

    Args:
        path: the ``.tflite`` file.
        num_threads: threads of each interpreter (None: LiteRT's default).
        max_interpreters: the most interpreters (and concurrent invocations)
            this object creates, lazily (at most one per concurrent call).
            Default 1: a lock.

    Attributes:
        input_shape: ``(None, *example_shape)``.
        num_classes: C.
        output_shape: ``(C,)``, a dense model's ``(*spatial, C)`` (a regressor's C is 2K).
        regression: a ``GaussianHead`` file (`predict` gives a `RegressionPrediction`).
        num_samples: Monte Carlo samples S drawn per invocation.
        op_resolver: ``"auto"`` or ``"builtin_without_default_delegates"``.
        max_interpreters: the bound above.

    Untrusted files: `verify_tflite` checks the bytes before LiteRT reads
    them, and the samples of every invocation (and of one on zeros at load)
    must be finite probabilities: a damaged file gives a ``ValueError``
    naming it, never a silent NaN. `check_file` opens one in a subprocess.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, over `MAX_FILE_BYTES`, not a
            TFLite flatbuffer, corrupt, truncated or holding non-finite
            weights, or not a model written by ``to_tflite``; invalid
            ``num_threads`` or ``max_interpreters``; at ``predict``/``sample``,
            outputs that are not finite probabilities (naming the file).
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
        self._content = read_tflite(self.path)
        errors = []
        for resolver in ("auto", "builtin_without_default_delegates"):
            try:
                runner = self._open(resolver)
                self.op_resolver = resolver
                break
            except _InvalidModel as err:
                raise ValueError(f"{err} Received: path={self.path!r}") from err.__cause__
            except (RuntimeError, ValueError) as err:
                errors.append(f"{resolver}: {' '.join(str(err).split())}")
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
            why = " ".join(str(err).split())  # LiteRT's messages span lines
            raise _InvalidModel(f"Corrupt or truncated TFLite file ({why}).") from err
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
        if inp["dtype"] != np.float32 or len(out["shape_signature"]) < 3:
            raise _InvalidModel(
                f"Unexpected signature: input {inp['dtype']} {shape}, samples "
                f"{list(out['shape_signature'])}."
            )
        self.input_shape = (None, *shape[1:])
        self._fixed_batch = shape[0] if shape[0] > 0 else None
        self.num_samples = int(out["shape_signature"][0])
        self.output_shape = tuple(int(d) for d in out["shape_signature"][2:])
        self.regression = "variance" in spec["outputs"]  # GaussianHead: [mean, std] samples
        self.num_classes = self.output_shape[-1]
        # Prepare the graph once, so a delegate that cannot take it fails here
        # (quietly: LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate").
        with _native_stderr_silenced():
            probe = runner(**{_INPUT: np.zeros((self._fixed_batch or 1, *shape[1:]), np.float32)})
        try:
            _check_samples(probe[_SAMPLES], self.path, self.regression)
        except ValueError as err:
            raise _InvalidModel(str(err).split(" Received:")[0]) from None
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
            return _check_samples(runner(**{_INPUT: x})[_SAMPLES], self.path, self.regression)

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
            shape = getattr(self, "output_shape", (self.num_classes,))
            yield np.zeros((self.num_samples * num_invocations, 0, *shape), np.float32)
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            rows = chunk.shape[0]
            if self._fixed_batch is not None and rows < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - rows, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            draws = [self._invoke(chunk)[:, :rows] for _ in range(num_invocations)]
            yield draws[0] if num_invocations == 1 else np.concatenate(draws, axis=0)

    def sample(self, x, num_invocations: int = 1, batch_size: int | None = None) -> np.ndarray:
        """Per-sample outputs ``(S * num_invocations, N, [*spatial,] C)`` (see `predict`)."""
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
            `Prediction` (the fields of `tfp_bcnn.predict`), per pixel for a
            dense model; a `RegressionPrediction` for a ``GaussianHead`` file.

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
            fn = summarize_gaussian if getattr(self, "regression", False) else summarize
            parts.append(fn(draws, return_samples=return_samples))
        return _concatenate(parts)


class _InvalidModel(Exception):
    """The file is not a usable model (no retry with another op resolver)."""


def check_file(path, timeout: float = 30.0) -> dict:
    """Loads a ``.tflite`` file and predicts zeros in a subprocess, risking only that.

    LiteRT's C++ parses what `verify_tflite` passed; should a crafted file
    crash it, a signal would end the process. This runs ``runtime.py PATH``.

    Args:
        path: the ``.tflite`` file.
        timeout: seconds before the subprocess is killed (counted as a hang).

    Returns:
        dict: ``input_shape``, ``num_classes``, ``num_samples``, ``op_resolver``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the loader's error, a signal (SIGSEGV), over ``timeout``
            (each naming the file); an invalid ``timeout``.
    """
    import json
    import subprocess

    path = os.fspath(path)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number. Received: timeout={timeout!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file. Received: path={path!r}")
    command = [sys.executable, "-E", "-s", os.path.abspath(__file__), os.path.abspath(path)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValueError(f"Loading took over {timeout:g} s. Received: path={path!r}") from None
    last = (proc.stdout.strip().splitlines() or ["{}"])[-1]
    report = json.loads(last) if last.startswith("{") else {}
    if proc.returncode == 0 and "error" not in report:
        return report
    why = (f"the native interpreter crashed (signal {-proc.returncode})" if proc.returncode < 0
           else f"exit status {proc.returncode}: {proc.stderr.strip()[-200:]}")
    raise ValueError(report.get("error") or f"Loading failed ({why}). Received: path={path!r}")


def __getattr__(name):  # the ONNX runner needs onnxruntime: imported on first use
    if name == "OnnxBayesianModel" and __package__:
        from ._onnx_runtime import OnnxBayesianModel
        return OnnxBayesianModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # the subprocess of check_file: one line of JSON
    import json
    try:
        _model = TFLiteBayesianModel(sys.argv[1])
        _model.sample(np.zeros((1, *_model.input_shape[1:]), np.float32))  # zeros: no warning
        print(json.dumps({k: getattr(_model, k) for k in
                          ("input_shape", "num_classes", "num_samples", "op_resolver")}))
    except (OSError, ValueError) as err:
        print(json.dumps({"error": str(err)}))
