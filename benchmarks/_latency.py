"""Interleaved TFLite latency, op counts and XNNPack delegate partitions.

Every latency ratio in BENCHMARKS.md comes from here: all files of a table
are loaded once and timed round-robin in ONE loop in one process, so a load
spike or a frequency change hits every file alike and the ratios stay
honest even when the absolute milliseconds drift. (Timing the baseline in a
separate loop on a busy machine put the MobileNetV2 ratios off by ~10x.)

How the numbers are taken
-------------------------
* Each file gets its own ``ai_edge_litert`` ``Interpreter`` (``num_threads``
  threads, the default XNNPack delegate applied as LiteRT does by default)
  and one random input per input tensor (uniform [0, 1) floats, or integers
  in [0, 10) for integer inputs; a fixed ``seed``), set once. Only
  ``invoke()`` is timed (``time.perf_counter``), not the copy-in/copy-out.
* ``warmup`` rounds, then ``repeats`` timed rounds; in every round each file
  is invoked once, in an order shuffled per round (seeded), so no file
  always runs right after the same neighbour.
* ``ms`` is the median of the ``repeats`` times, ``ms_p10`` / ``ms_p90`` the
  10th and 90th percentiles (the spread the table can trust).
* ``cpu_ms`` (and ``cpu_ms_p10`` / ``cpu_ms_p90``): the same from the
  calling thread's CPU time (``time.thread_time``) around ``invoke()``.
  With one thread LiteRT and XNNPack run the graph on the calling thread,
  so this is the file's own compute time without the time the thread
  waited for a core. On a loaded machine (more runnable jobs than cores)
  the wall-clock medians are not comparable across files: a sub-millisecond
  file often runs within one scheduler time slice, while a long one is
  preempted many times (at load 23 on 2 cores the MobileNetV2 MC-32 ratio
  came out 4.4x its idle value). ``ratios(..., key="cpu_ms")`` compares CPU
  times; they still include what contention does to the caches and the
  memory bus.

How ops and partitions are counted
----------------------------------
After ``allocate_tensors()`` the interpreter's node list of the primary
subgraph holds every op of the file plus one ``DELEGATE`` node per
partition the XNNPack delegate took over (a partition is a connected run of
ops it supports; every op it does not support, e.g. ``RANDOM_STANDARD_NORMAL``
or ``SHAPE``, splits the graph and runs in LiteRT's reference kernels).
So ``partitions`` = number of ``DELEGATE`` nodes, ``ops`` / ``op_counts`` =
the other nodes (the file's own ops), and ``undelegated`` = the ops left
outside every partition, found from the tensors that cross partition
boundaries. The counting lives in `tfp_bcnn.export._delegate` (shared with
`tfp_bcnn.export.describe`). ``partitions`` is None when the interpreter
exposes no node list.

ONNX files
----------
A path ending in ``.onnx`` in the same ``files`` mapping is timed in the
same loop with ONNX Runtime (`_onnx_runner`: a CPU ``InferenceSession``
with ``num_threads`` intra-op threads and one inter-op thread, its default
graph optimisations, random inputs set once); what is timed is
``session.run`` of the output ``samples`` when the file has one (what
`OnnxBayesianModel` asks for: ONNX Runtime then skips the in-graph
summaries, which TFLite's ``invoke()`` computes), else of every output.
Its ``ops`` / ``op_counts`` are the ONNX nodes of the file;
``partitions`` and ``undelegated`` are None (no delegate).

Usage::

    from _latency import ratios, time_tflite_files
    res = time_tflite_files({"deterministic": det_path, "moments": mom_path})
    ratios(res, "deterministic")   # {"deterministic": 1.0, "moments": 3.1}
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tfp_bcnn.export._delegate import graph_stats

__all__ = ["time_tflite_files", "ratios", "graph_stats", "format_ops"]


def _check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def _interpreter(path: str, num_threads: int, batch: int):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=num_threads)
    resized = False
    for detail in interp.get_input_details():
        shape = list(detail["shape"])
        if shape and shape[0] != batch:
            shape[0] = batch
            interp.resize_tensor_input(detail["index"], shape, strict=False)
            resized = True
    interp.allocate_tensors()
    if resized:  # a fixed batch dimension that cannot change fails here, loudly
        for detail in interp.get_input_details():
            if detail["shape"][0] != batch:
                raise ValueError(f"Cannot run {path!r} at batch {batch}. Received: batch={batch}")
    return interp


def _random_inputs(interp, rng: np.random.Generator) -> None:
    for detail in interp.get_input_details():
        shape, dtype = tuple(detail["shape"]), np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.floating):
            value = rng.random(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            value = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            value = np.zeros(shape, dtype)
        interp.set_tensor(detail["index"], value)


def _onnx_runner(path: str, num_threads: int, batch: int, rng: np.random.Generator):
    """``(run, stats)`` of an ``.onnx`` file: a no-argument callable running it
    once with ONNX Runtime on fixed random inputs, and its op counts."""
    import collections

    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = {}
    for detail in session.get_inputs():
        shape = [batch if k == 0 else d for k, d in enumerate(detail.shape)]
        if not all(isinstance(d, int) for d in shape):
            raise ValueError(f"Cannot time {path!r}: input {detail.name!r} has a symbolic "
                             f"non-batch dimension. Received: shape={detail.shape}")
        floats = detail.type in ("tensor(float)", "tensor(double)", "tensor(float16)")
        value = rng.random(shape) if floats else rng.integers(0, 10, size=shape)
        feed[detail.name] = value.astype(np.float32 if detail.type == "tensor(float)" else
                                         np.float64 if floats else np.int64)
    counts = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    stats = {"ops": sum(counts.values()), "op_counts": dict(counts.most_common()),
             "partitions": None, "undelegated": None}
    names = [o.name for o in session.get_outputs()]
    fetch = ["samples"] if "samples" in names else None
    return (lambda: session.run(fetch, feed)), stats


def time_tflite_files(
    files: Mapping[str, str | Path],
    *,
    repeats: int = 30,
    warmup: int = 3,
    num_threads: int = 1,
    batch: int = 1,
    seed: int = 0,
) -> dict[str, dict]:
    """Time TFLite (and ONNX) files interleaved (round-robin in one loop), count their ops.

    Args:
        files: {label: path of a ``.tflite`` file, or of an ``.onnx`` file
            timed with ONNX Runtime (module docstring)}; the labels key the
            result.
        repeats: timed rounds (each file invoked once per round); the median
            of these is ``ms``. At least 1 (use >= 20 for a table).
        warmup: untimed rounds first (>= 0).
        num_threads: LiteRT threads per interpreter (1 = the edge setting).
        batch: leading input dimension (inputs resized if they differ).
        seed: seeds the random inputs and the per-round order.

    Returns:
        {label: dict} in the order of ``files``, each with ``path``, ``ms``
        (median milliseconds per ``invoke()``), ``ms_p10``, ``ms_p90``,
        ``cpu_ms``, ``cpu_ms_p10``, ``cpu_ms_p90`` (the thread's CPU time),
        ``repeats``, ``bytes`` (file size) and the `graph_stats` entries
        ``ops``, ``op_counts``, ``partitions``, ``undelegated``.

    Raises:
        ValueError: empty ``files``, a bad count, or a missing file (named).
    """
    repeats = _check_positive("repeats", repeats)
    warmup = _check_positive("warmup", warmup, minimum=0)
    num_threads = _check_positive("num_threads", num_threads)
    batch = _check_positive("batch", batch)
    if not files:
        raise ValueError(f"`files` must name at least one file. Received: files={files!r}")
    paths = {label: os.fspath(p) for label, p in files.items()}
    for label, p in paths.items():
        if not os.path.isfile(p):
            raise ValueError(f"No TFLite file for {label!r}. Received: files[{label!r}]={p!r}")
    rng = np.random.default_rng(seed)
    runs, stats = {}, {}
    for label, p in paths.items():
        if p.lower().endswith(".onnx"):
            runs[label], stats[label] = _onnx_runner(p, num_threads, batch, rng)
            continue
        interp = _interpreter(p, num_threads, batch)
        _random_inputs(interp, rng)
        runs[label], stats[label] = interp.invoke, interp  # counted after the loop
    times = {label: [] for label in paths}
    cpu_times = {label: [] for label in paths}
    order = list(paths)
    shuffler = random.Random(seed)
    clock, cpu_clock = time.perf_counter, time.thread_time
    for r in range(warmup + repeats):
        shuffler.shuffle(order)
        for label in order:
            invoke = runs[label]
            start, cpu_start = clock(), cpu_clock()
            invoke()
            cpu_elapsed, elapsed = cpu_clock() - cpu_start, clock() - start
            if r >= warmup:
                times[label].append(elapsed * 1e3)
                cpu_times[label].append(cpu_elapsed * 1e3)
    out = {}
    for label, p in paths.items():
        t, c = np.asarray(times[label]), np.asarray(cpu_times[label])
        out[label] = {
            "path": p,
            "ms": float(np.median(t)),
            "ms_p10": float(np.percentile(t, 10)),
            "ms_p90": float(np.percentile(t, 90)),
            "cpu_ms": float(np.median(c)),
            "cpu_ms_p10": float(np.percentile(c, 10)),
            "cpu_ms_p90": float(np.percentile(c, 90)),
            "repeats": repeats,
            "bytes": os.path.getsize(p),
            **(stats[label] if isinstance(stats[label], dict) else graph_stats(stats[label])),
        }
    return out


def ratios(results: Mapping[str, Mapping], baseline: str, key: str = "ms") -> dict[str, float]:
    """Median latency of every file over the baseline's median.

    Args:
        results: the output of `time_tflite_files`.
        baseline: the label of the reference file.
        key: ``"ms"`` (wall clock) or ``"cpu_ms"`` (the thread's CPU time;
            the module docstring says when to prefer it).

    Returns:
        {label: results[label][key] / results[baseline][key]}.

    Raises:
        ValueError: ``baseline`` is not a label of ``results``.
    """
    if baseline not in results:
        raise ValueError(
            f"`baseline` must be one of {sorted(results)}. Received: baseline={baseline!r}"
        )
    if key not in ("ms", "cpu_ms"):
        raise ValueError(f"`key` must be 'ms' or 'cpu_ms'. Received: key={key!r}")
    base = results[baseline][key]
    return {label: r[key] / base for label, r in results.items()}


def format_ops(result: Mapping, top: int = 4) -> str:
    """A short markdown-cell summary of a result's ops, e.g. ``"CONV_2D 35, ADD 10, ..."``.

    Args:
        result: one entry of `time_tflite_files`'s output.
        top: how many op types to name.

    Returns:
        The ``top`` most frequent op types with counts, then ``+N more`` if any.
    """
    counts = list(result.get("op_counts", {}).items())
    text = ", ".join(f"{name} {n}" for name, n in counts[:top])
    rest = sum(n for _, n in counts[top:])
    return text + (f", {rest} more" if rest else "")
