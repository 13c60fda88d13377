"""benchmarks/gpu.py runs on the JAX backend without TensorFlow (a CPU smoke run).

The figures of a smoke run mean nothing; the test checks that a later session
with a GPU can run the script as it is: both policies, every model, a
markdown block, and no TensorFlow import. Two steps an epoch (64 images,
batch 32) and 8 predicted images keep every code path (two epochs for the
median after the first; the compiles dominate, float16 being emulated on the
CPU) at a quarter of the arithmetic of 256 images in batches of 128.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.slow
def test_gpu_benchmark_smoke_on_jax_cpu(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--copies", "1", "--train-images", "64", "--epochs", "2",
         "--batch-size", "32", "--predict-images", "8", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["backend"] == "jax" and not report["tensorflow_imported"]
    assert report["train_images"] == 64 and report["predict_images"] == 8
    assert {(r["policy"], r["model"]) for r in report["rows"]} == {
        (p, m) for p in ("float32", "mixed_float16")
        for m in ("frequentist", "reparameterization", "flipout", "local_reparameterization")
    }
    assert "| mixed_float16 | flipout |" in proc.stdout
