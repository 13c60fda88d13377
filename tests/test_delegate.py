"""Op counts and XNNPack delegate partitions (`export.describe`, `benchmarks/_latency.py`).

Small hand-made TFLite files whose partitions are known: two convolutions
around a random draw. A draw of a static shape depends on nothing, so LiteRT
runs it first and XNNPack keeps both convolutions in one partition; a draw
shaped by ``tf.shape`` of the first convolution's output needs a SHAPE op
there (not delegated) and splits the graph in two.
"""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfp_bcnn import export
from tfp_bcnn.export import _delegate

pytest.importorskip("ai_edge_litert")

HERE = os.path.dirname(os.path.abspath(__file__))


def _tflite(path, dynamic_noise: bool):
    rng = np.random.default_rng(0)
    k1 = tf.constant(rng.normal(size=(3, 3, 2, 4)).astype(np.float32))
    k2 = tf.constant(rng.normal(size=(3, 3, 4, 3)).astype(np.float32))

    batch = None if dynamic_noise else 1  # a static shape folds tf.shape away

    @tf.function(input_signature=[tf.TensorSpec((batch, 8, 8, 2), tf.float32)])
    def f(x):
        h = tf.nn.conv2d(x, k1, 1, "SAME")
        shape = tf.shape(h) if dynamic_noise else (1, 8, 8, 4)
        noise = tf.raw_ops.RandomStandardNormal(shape=shape, dtype=tf.float32, seed=0, seed2=0)
        return tf.nn.relu(tf.nn.conv2d(h + noise, k2, 1, "SAME"))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    with open(path, "wb") as out:
        out.write(converter.convert())
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("delegate")
    return {"static": _tflite(root / "static.tflite", False),
            "dynamic": _tflite(root / "dynamic.tflite", True)}


def test_describe_counts_ops_and_partitions(files):
    static, dynamic = export.describe(files["static"]), export.describe(files["dynamic"])
    assert static["ops"]["CONV_2D"] == 2 and static["ops"]["RANDOM_STANDARD_NORMAL"] == 1
    assert static["op_count"] == sum(static["ops"].values())
    assert static["delegate_partitions"] == 1
    assert static["undelegated_ops"] == {"RANDOM_STANDARD_NORMAL": 1}
    assert dynamic["delegate_partitions"] == 2
    assert dynamic["undelegated_ops"] == {"SHAPE": 1, "RANDOM_STANDARD_NORMAL": 1}


def test_undelegated_from_a_plan():
    # Ops 0 -> 1 -> 2 -> 3; ops 0-1 and 3 in partitions, op 2 outside.
    nodes = [
        {"op_name": "CONV_2D", "inputs": [0], "outputs": [1]},
        {"op_name": "ADD", "inputs": [1], "outputs": [2]},
        {"op_name": "SHAPE", "inputs": [2], "outputs": [3]},
        {"op_name": "MUL", "inputs": [3, 2], "outputs": [4]},
        {"op_name": "DELEGATE", "inputs": [0], "outputs": [2]},
        {"op_name": "DELEGATE", "inputs": [3, 2], "outputs": [4]},
    ]
    outside = _delegate._undelegated(nodes, graph_outputs={4})
    assert [n["op_name"] for n in outside] == ["SHAPE"]


def test_delegate_stats_names_a_bad_file(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="bad.tflite"):
        _delegate.delegate_stats(str(bad))


def test_latency_helper_times_interleaved(files):
    sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
    try:
        import _latency
    finally:
        sys.path.pop(0)
    res = _latency.time_tflite_files(files, repeats=3, warmup=1)
    assert list(res) == ["static", "dynamic"]
    for r in res.values():
        assert r["repeats"] == 3 and 0 < r["ms_p10"] <= r["ms"] <= r["ms_p90"]
        assert 0 < r["cpu_ms_p10"] <= r["cpu_ms"] <= r["cpu_ms_p90"]
    assert res["dynamic"]["partitions"] == 2
    assert _latency.ratios(res, "static")["static"] == 1.0
    cpu = _latency.ratios(res, "static", key="cpu_ms")
    assert cpu["dynamic"] == res["dynamic"]["cpu_ms"] / res["static"]["cpu_ms"]
    with pytest.raises(ValueError, match="key='wall'"):
        _latency.ratios(res, "static", key="wall")
    with pytest.raises(ValueError, match="baseline='nope'"):
        _latency.ratios(res, "nope")
    with pytest.raises(ValueError, match="repeats=0"):
        _latency.time_tflite_files(files, repeats=0)
