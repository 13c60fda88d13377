"""models.mobilenet_v2 (twins, last=k), to_bayesian(last=k), datasets.fit_images."""

import keras
import numpy as np
import pytest

import tfp_bcnn as bcnn
from tfp_bcnn import datasets, models
from tfp_bcnn.layers import BayesianLayer, MCDropout

# MobileNetV2 alpha 0.35: 52 convolutions (expand / depthwise / project per
# block, Conv1, block_0's depthwise and project, Conv_1) and the Dense head.
CONVERTIBLE = 53


@pytest.fixture(scope="module")
def twins():
    """Deterministic, MC-dropout and Bayesian (last 5) MobileNetV2s, same seed."""
    return {
        "det": models.mobilenet_v2(bayesian=False, seed=3),
        "drop": models.mobilenet_v2(bayesian=False, dropout=0.2, seed=3),
        "last5": models.mobilenet_v2(num_train_examples=100, last=5, seed=3),
    }


def _kernels(model):
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                  keras.layers.Dense, BayesianLayer))]


def test_twins_share_names_kernels_and_shapes(twins):
    det, drop, bnn = twins["det"], twins["drop"], twins["last5"]
    assert det.name == "mobilenet_v2_deterministic"
    assert drop.name == "mobilenet_v2_mc_dropout" and bnn.name == "mobilenet_v2"
    assert det.output_shape == bnn.output_shape == (None, 10)
    assert [layer.name for layer in _kernels(det)] == [layer.name for layer in _kernels(bnn)]
    assert len(_kernels(det)) == CONVERTIBLE
    assert [type(la).__name__ for la in drop.layers if isinstance(la, MCDropout)] == ["MCDropout"]
    # Same seed: the Bayesian means start at the twin's kernels, the rest equal too.
    np.testing.assert_array_equal(det.get_layer("predictions").kernel.numpy(),
                                  bnn.get_layer("predictions").kernel_loc.numpy())
    np.testing.assert_array_equal(det.get_layer("block_3_project").kernel.numpy(),
                                  bnn.get_layer("block_3_project").kernel.numpy())
    bn = [la.momentum for la in det.layers if isinstance(la, keras.layers.BatchNormalization)]
    assert set(bn) == {models.MOBILENET_RECIPE["bn_momentum"]}


def test_last_k_converts_the_last_layers_in_graph_order(twins):
    names = [la.name for la in bcnn.bayesian_layers(twins["last5"])]
    assert names == ["block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1",
                     "predictions"]
    head = models.to_bayesian(twins["det"], num_train_examples=10, last=1)
    assert [la.name for la in bcnn.bayesian_layers(head)] == ["predictions"]
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    # posterior std 1e-3 of one layer: the function barely moves
    np.testing.assert_allclose(head(x).numpy(), twins["det"](x).numpy(), atol=1e-3)


def test_last_counts_after_skip_and_separable_once():
    net = keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.SeparableConv2D(4, 3, name="sep"),
        keras.layers.Conv2D(4, 1, name="c1"),
        keras.layers.Flatten(),
        keras.layers.Dense(3, name="d1"),
    ])
    two = models.to_bayesian(net, num_train_examples=10, last=2)
    assert [la.name for la in bcnn.bayesian_layers(two)] == ["c1", "d1"]
    three = models.to_bayesian(net, num_train_examples=10, last=3)
    assert len(list(bcnn.bayesian_layers(three))) == 4  # sep = depthwise + pointwise
    skipped = models.to_bayesian(net, num_train_examples=10, skip=["d1"], last=1)
    assert [la.name for la in bcnn.bayesian_layers(skipped)] == ["c1"]


@pytest.mark.parametrize("last", [0, 4, -1, 1.5, "2"])
def test_last_out_of_range_names_the_count(last):
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"2 in model .*Received: last="):
        models.to_bayesian(net, num_train_examples=10, last=last)


@pytest.mark.parametrize("kwargs,match", [
    ({"input_shape": (16, 16, 3)}, "input_shape"),
    ({"input_shape": (32, 32, 1)}, "input_shape"),
    ({"alpha": 0}, "alpha"),
    ({"num_train_examples": None}, "num_train_examples"),
    ({"estimator": "laplace"}, "estimator"),
    ({"dropout": 1.5}, "dropout"),
])
def test_mobilenet_bad_arguments(kwargs, match):
    kwargs = {"num_train_examples": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        models.mobilenet_v2(**kwargs)


def test_fit_images_pads_resizes_and_tiles():
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    y = datasets.fit_images(x, 32)
    assert y.shape == (2, 32, 32, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:, 2:30, 2:30, 1], x[..., 0])
    assert y[:, :2].sum() == 0 and y[:, :, 30:].sum() == 0
    small = datasets.fit_images(x, 14, channels=1)
    assert small.shape == (2, 14, 14, 1)
    np.testing.assert_allclose(small.mean(), x.mean(), atol=0.02)  # filters sum to 1
    with pytest.raises(ValueError, match="Received: x with shape"):
        datasets.fit_images(x[..., :1].repeat(2, -1), 32)


@pytest.mark.slow
def test_cli_trains_and_structurally_prunes_mobilenet_v2(tmp_path, capsys, monkeypatch):
    """``train --model mobilenet_v2 --last K --input-size`` then ``prune --structured``
    on a tiny .npz set (28x28x1 digits padded to 32x32x3): the commands, not
    the accuracy. The commands run in this process (``cli.main``, as in
    ``test_cli.py``): three fresh processes cost three TensorFlow imports
    and nothing they check is process-wide (the CLI's own process, its log
    lines and exit codes, are checked in ``test_cli.py`` / ``test_outputs.py``)."""
    import json

    from tfp_bcnn import cli

    monkeypatch.chdir(tmp_path)
    (x, y), _ = datasets.mnist_5k()
    np.savez(tmp_path / "tiny.npz", x_train=x[:64], y_train=y[:64], x_test=x[64:96],
             y_test=y[64:96])
    assert cli.main(["train", "--model", "mobilenet_v2", "--last", "5", "--input-size", "32",
                     "--epochs", "1", "--dataset", "tiny.npz", "--output", "mn.keras",
                     "--verbose", "0"]) == 0
    assert "training mobilenet_v2 (flipout)" in capsys.readouterr().out
    net = keras.saving.load_model(tmp_path / "mn.keras")
    assert net.input_shape == (None, 32, 32, 3)
    assert len(list(bcnn.bayesian_layers(net))) == 5
    # 4 steps an epoch: the fine-tuning schedule prunes after steps, not before the first
    assert cli.main(["prune", "mn.keras", "--structured", "--scope", "layer", "--epochs", "2",
                     "--batch-size", "16", "--dataset", "tiny.npz", "--verbose", "0"]) == 0
    small = keras.saving.load_model(tmp_path / "mn_pruned.keras")
    assert small.get_layer("Conv_1").units < net.get_layer("Conv_1").units
    assert small.get_layer("block_16_depthwise").kernel_loc.shape[-2] == \
        small.get_layer("block_16_expand").units < 336
    # evaluate: the 28x28x1 test digits, letters and noise are fitted to 32x32x3
    assert cli.main(["evaluate", "mn_pruned.keras", "--dataset", "tiny.npz", "--samples", "2",
                     "--out-dir", "ev"]) == 0
    report = json.loads((tmp_path / "ev" / "mn_pruned_report.json").read_text())
    assert report["num_test"] == 32 and set(report["ood"]) == {"letters", "noise"}
