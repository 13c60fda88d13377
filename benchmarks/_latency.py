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
boundaries (see `_undelegated`). ``partitions`` is None when the
interpreter exposes no node list.

Usage::

    from _latency import ratios, time_tflite_files
    res = time_tflite_files({"deterministic": det_path, "moments": mom_path})
    ratios(res, "deterministic")   # {"deterministic": 1.0, "moments": 3.1}
"""

from __future__ import annotations

import collections
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

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


def _undelegated(nodes: list[dict], graph_outputs) -> list[dict]:
    """The nodes that run outside every delegate partition.

    A node runs in a partition iff its outputs are delegate outputs or are
    consumed only inside that partition; a node outside feeds delegate
    inputs, graph outputs no delegate produces, or other outside nodes.
    Tensors that are not on a partition boundary connect nodes of the same
    kind, so we label the boundary producers and spread the labels along the
    remaining (internal) tensors until nothing changes.
    """
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    d_in = {int(t) for n in delegates for t in n["inputs"]}
    d_out = {int(t) for n in delegates for t in n["outputs"]}
    producer = {int(t): i for i, n in enumerate(ops) for t in n["outputs"]}
    consumers = collections.defaultdict(list)
    for i, n in enumerate(ops):
        for t in n["inputs"]:
            consumers[int(t)].append(i)
    label: dict[int, bool] = {}  # op index -> delegated?
    for t, i in producer.items():
        if t in d_out:
            label[i] = True
        elif t in d_in or (t in graph_outputs and t not in d_out):
            label[i] = False
    changed = True
    while changed:
        changed = False
        for t, i in producer.items():
            if t in d_in or t in d_out:
                continue
            group = [i, *consumers[t]]
            known = {label[j] for j in group if j in label}
            if len(known) == 1:
                value = known.pop()
                for j in group:
                    if j not in label:
                        label[j], changed = value, True
    return [n for i, n in enumerate(ops) if not label.get(i, not delegates)]


def graph_stats(interp) -> dict:
    """Op counts and delegate partitions of an allocated interpreter.

    Args:
        interp: an ``ai_edge_litert`` ``Interpreter`` after ``allocate_tensors()``.

    Returns:
        dict with ``ops`` (int: the file's ops, DELEGATE nodes excluded),
        ``op_counts`` ({op name: count}, most frequent first),
        ``partitions`` (int: XNNPack delegate partitions, or None when the
        node list is unavailable) and ``undelegated`` ({op name: count} of
        the ops outside every partition, or None likewise).
    """
    try:
        nodes = interp._get_ops_details()  # noqa: SLF001 - the only view of the execution plan
    except Exception:  # an interpreter build without the node API
        return {"ops": None, "op_counts": {}, "partitions": None, "undelegated": None}
    counts = collections.Counter(n["op_name"] for n in nodes if n["op_name"] != "DELEGATE")
    outputs = {int(d["index"]) for d in interp.get_output_details()}
    outside = collections.Counter(n["op_name"] for n in _undelegated(nodes, outputs))
    return {
        "ops": sum(counts.values()),
        "op_counts": dict(counts.most_common()),
        "partitions": sum(n["op_name"] == "DELEGATE" for n in nodes),
        "undelegated": dict(outside.most_common()),
    }


def time_tflite_files(
    files: Mapping[str, str | Path],
    *,
    repeats: int = 30,
    warmup: int = 3,
    num_threads: int = 1,
    batch: int = 1,
    seed: int = 0,
) -> dict[str, dict]:
    """Time TFLite files interleaved (round-robin in one loop) and count their ops.

    Args:
        files: {label: path of a ``.tflite`` file}; the labels key the result.
        repeats: timed rounds (each file invoked once per round); the median
            of these is ``ms``. At least 1 (use >= 20 for a table).
        warmup: untimed rounds first (>= 0).
        num_threads: LiteRT threads per interpreter (1 = the edge setting).
        batch: leading input dimension (inputs resized if they differ).
        seed: seeds the random inputs and the per-round order.

    Returns:
        {label: dict} in the order of ``files``, each with ``path``, ``ms``
        (median milliseconds per ``invoke()``), ``ms_p10``, ``ms_p90``,
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
    interps = {}
    for label, p in paths.items():
        interps[label] = _interpreter(p, num_threads, batch)
        _random_inputs(interps[label], rng)
    times = {label: [] for label in paths}
    order = list(paths)
    shuffler = random.Random(seed)
    clock = time.perf_counter
    for r in range(warmup + repeats):
        shuffler.shuffle(order)
        for label in order:
            invoke = interps[label].invoke
            start = clock()
            invoke()
            elapsed = clock() - start
            if r >= warmup:
                times[label].append(elapsed * 1e3)
    out = {}
    for label, p in paths.items():
        t = np.asarray(times[label])
        out[label] = {
            "path": p,
            "ms": float(np.median(t)),
            "ms_p10": float(np.percentile(t, 10)),
            "ms_p90": float(np.percentile(t, 90)),
            "repeats": repeats,
            "bytes": os.path.getsize(p),
            **graph_stats(interps[label]),
        }
    return out


def ratios(results: Mapping[str, Mapping], baseline: str) -> dict[str, float]:
    """Median latency of every file over the baseline's median.

    Args:
        results: the output of `time_tflite_files`.
        baseline: the label of the reference file.

    Returns:
        {label: ms / baseline's ms}.

    Raises:
        ValueError: ``baseline`` is not a label of ``results``.
    """
    if baseline not in results:
        raise ValueError(
            f"`baseline` must be one of {sorted(results)}. Received: baseline={baseline!r}"
        )
    base = results[baseline]["ms"]
    return {label: r["ms"] / base for label, r in results.items()}


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
