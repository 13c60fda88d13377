"""Op counts and XNNPack delegate partitions of a TFLite file, from LiteRT's own plan.

LiteRT applies the XNNPack delegate by default when an interpreter allocates
its tensors. The delegate takes over connected runs of the ops it supports
(a *partition* each, replaced by one ``DELEGATE`` node); every op it does
not support (``RANDOM_STANDARD_NORMAL``, ``SHAPE``, ...) runs in LiteRT's
reference kernels and splits the graph: each split costs a hand-over of
tensors between the delegate and the interpreter, so a file with many
partitions is slow even when its arithmetic is small.

After ``allocate_tensors()`` the interpreter's node list (primary subgraph)
holds every op of the file followed by the ``DELEGATE`` nodes, each with the
tensors that enter and leave its partition. So

* ``partitions`` = the number of ``DELEGATE`` nodes;
* ``ops`` / ``op_counts`` = the other nodes (the file's own ops);
* ``undelegated`` = the ops outside every partition (`_undelegated`).

Imports only the standard library: the interpreter is the caller's.
"""

from __future__ import annotations

import collections

__all__ = ["graph_stats", "delegate_stats"]


def _undelegated(nodes: list[dict], graph_outputs: set[int]) -> list[dict]:
    """The nodes that run outside every delegate partition.

    An op inside a partition produces a delegate output or a tensor consumed
    inside that partition; an op outside produces a delegate input, a graph
    output no delegate produces, or a tensor consumed by other outside ops.
    Tensors not on a partition boundary therefore connect ops of the same
    kind: the producers of boundary tensors are labelled, and the labels
    spread along the remaining tensors until nothing changes (an op left
    unlabelled, which a valid plan does not have, counts as delegated when
    there is a delegate).
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
    label: dict[int, bool] = {}  # op index -> inside a partition?
    for t, i in producer.items():
        if t in d_out:
            label[i] = True
        elif t in d_in or t in graph_outputs:
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
    return [n for i, n in enumerate(ops) if not label.get(i, bool(delegates))]


def graph_stats(interpreter) -> dict:
    """Op counts and delegate partitions of an allocated LiteRT interpreter.

    Args:
        interpreter: an ``ai_edge_litert.interpreter.Interpreter`` after
            ``allocate_tensors()`` (default delegates applied).

    Returns:
        dict with ``ops`` (int: the file's ops, ``DELEGATE`` nodes excluded),
        ``op_counts`` (``{op name: count}``, most frequent first),
        ``partitions`` (int: XNNPack partitions, 0 when nothing is
        delegated) and ``undelegated`` (``{op name: count}`` of the ops
        outside every partition). ``ops``, ``partitions`` and
        ``undelegated`` are None when the interpreter has no node list.
    """
    try:
        nodes = interpreter._get_ops_details()  # the only view of LiteRT's execution plan
    except Exception:  # an interpreter build without the node API
        return {"ops": None, "op_counts": {}, "partitions": None, "undelegated": None}
    counts = collections.Counter(n["op_name"] for n in nodes if n["op_name"] != "DELEGATE")
    outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    outside = collections.Counter(n["op_name"] for n in _undelegated(nodes, outputs))
    return {
        "ops": sum(counts.values()),
        "op_counts": dict(counts.most_common()),
        "partitions": sum(n["op_name"] == "DELEGATE" for n in nodes),
        "undelegated": dict(outside.most_common()),
    }


def delegate_stats(path: str, num_threads: int = 1) -> dict:
    """`graph_stats` of a ``.tflite`` file, on a fresh interpreter.

    Args:
        path: the file.
        num_threads: interpreter threads (partitions do not depend on it).

    Returns:
        `graph_stats`'s dict; all None when ``ai_edge_litert`` is not
        installed (the "export" extra).

    Raises:
        ValueError: LiteRT cannot load or allocate the file (names ``path``).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {"ops": None, "op_counts": {}, "partitions": None, "undelegated": None}
    from tfp_bcnn._quiet import native_stderr_silenced

    try:
        with native_stderr_silenced():  # LiteRT's "Created ... XNNPACK delegate" line
            interpreter = Interpreter(model_path=path, num_threads=num_threads)
            interpreter.allocate_tensors()
    except Exception as err:  # LiteRT raises ValueError / RuntimeError on bad files
        first = next((line for line in str(err).splitlines() if line.strip()), "")
        raise ValueError(  # one line: LiteRT's messages span several
            f"LiteRT cannot load this file ({type(err).__name__}: {first}). Received: path={path!r}"
        ) from err
    return graph_stats(interpreter)
