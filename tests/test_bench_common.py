"""benchmarks/_common.py: the shared helpers every benchmark formats and trains with."""

import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common  # noqa: E402


def test_mean_std_is_sample_std_with_one_symbol():
    vals = [0.97, 0.975, 0.98]
    # statistics.stdev is the ddof=1 reference: 0.005 here, np.std (ddof=0) gives 0.0041
    assert _common.mean_std(vals) == f"0.975 +- {statistics.stdev(vals):.3f}"
    assert _common.mean_std(vals, digits=4) == "0.9750 +- 0.0050"
    assert _common.mean_std([0.5]) == "0.500"
    with pytest.raises(ValueError, match="values="):
        _common.mean_std([])


def test_markdown_table_and_row_check():
    table = _common.markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 | y |"]
    with pytest.raises(ValueError, match="Row 0 has 1 cells"):
        _common.markdown_table(["a", "b"], [[1]])


def test_emit_writes_the_block_atomically(tmp_path, capsys):
    path = tmp_path / "sub" / "block.md"
    _common.emit(path, "## title\n\nbody\n\n\n")
    assert path.read_text() == "## title\n\nbody\n"
    assert "body" in capsys.readouterr().out
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.random(50)
    b = a + 0.3 * rng.random(50)
    assert _common.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="len"):
        _common.spearman([1.0], [1.0])


def test_timer_and_median_time():
    calls = []
    with _common.Timer() as t:
        sum(range(10_000))
    assert t.seconds > 0
    assert _common.median_time(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5


def test_seeds_and_recipe_departures():
    from tfp_bcnn.models import RECIPE

    assert _common.seeds(3) == [0, 1, 2] and _common.seeds(2, first=5) == [5, 6]
    with pytest.raises(ValueError, match="n=0"):
        _common.seeds(0)
    assert _common.recipe() == dict(RECIPE)
    assert _common.recipe(epochs=None) == dict(RECIPE)
    used = _common.recipe(epochs=3)
    assert used["epochs"] == 3 and used["learning_rate"] == RECIPE["learning_rate"]
    assert _common.recipe_note(_common.recipe()).endswith("`models.RECIPE`.")
    note = _common.recipe_note(used, "2 cores")
    assert f"epochs 3 (recipe {RECIPE['epochs']})" in note and "(2 cores)" in note
    with pytest.raises(ValueError, match="lr"):
        _common.recipe(lr=1.0)


def test_train_uses_the_recipe_and_the_workflow_callbacks():
    import keras

    from tfp_bcnn import layers, models

    rng = np.random.default_rng(0)
    x = rng.random((32, 4), dtype=np.float32)
    y = rng.integers(0, 3, 32)
    model = keras.Sequential([keras.Input((4,)), layers.DenseFlipout(3, kl_weight=1 / 32),
                              keras.layers.Softmax()])
    used = _common.recipe(epochs=1, batch_size=16, kl_beta=0.5)
    model, secs = _common.train(model, x, y, recipe=used, seed=0)
    assert secs > 0
    assert float(model.optimizer.learning_rate) == pytest.approx(used["learning_rate"])
    assert model.optimizer.iterations.numpy() == 2  # one epoch of 32 in batches of 16
    # kl_beta 0.5 went through recipe_callbacks: every layer's KL weight is beta / N
    weights = [float(layer.kl_weight.numpy()) for layer in models.kl_lib.bayesian_layers(model)]
    assert weights and weights == pytest.approx([0.5 / 32] * len(weights))
