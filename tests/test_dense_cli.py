"""`tfp-bcnn train --model unet --dataset digit_scenes` and `evaluate` on it."""

import json

import pytest

from tfp_bcnn import cli, datasets


@pytest.mark.slow
def test_train_and_evaluate_unet(tmp_path, capsys, monkeypatch):
    # A few scenes so the run takes seconds (the defaults are 1,000 / 250).
    monkeypatch.setattr(datasets, "DIGIT_SCENES_SIZES", {"train": 48, "test": 12, "size": 32})
    model = tmp_path / "unet.keras"
    assert cli.main(["train", "--model", "unet", "--dataset", "digit_scenes", "--epochs", "1",
                     "--batch-size", "16", "--output", str(model), "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert "training unet (flipout) on 48 scenes 32x32, 11 classes per pixel" in out
    assert "test pixel accuracy" in out and "mean IoU" in out and model.exists()
    assert cli.main(["evaluate", str(model), "--dataset", "digit_scenes", "--samples", "4",
                     "--out-dir", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "| mean_iou" in out and "| pixel_ece" in out
    assert "AUSE / random" in out and "| epistemic" in out
    report = json.loads((tmp_path / "eval" / "unet_report.json").read_text())
    assert 0 <= report["mean_iou"] <= 1 and report["ause_random"] > 0
    assert (tmp_path / "eval" / "unet_maps.png").exists()
    assert (tmp_path / "eval" / "unet_sparsification.png").exists()


def test_unet_needs_per_pixel_labels(tmp_path, capsys):
    assert cli.main(["train", "--model", "unet", "--dataset", "digits", "--epochs", "1",
                     "--output", str(tmp_path / "u.keras")]) != 0
    err = capsys.readouterr().err
    assert "A U-Net needs per-pixel labels" in err and "dataset='digits'" in err
    assert not (tmp_path / "u.keras").exists()
