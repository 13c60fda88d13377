"""benchmarks/gpu.py runs on the JAX backend without TensorFlow (a CPU smoke run).

The figures of a smoke run mean nothing; the test checks that a later session
with a GPU can run the script as it is: both policies, every model, a
markdown block, and no TensorFlow import.
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
        [sys.executable, str(SCRIPT), "--copies", "1", "--train-images", "256", "--epochs", "2",
         "--batch-size", "128", "--predict-images", "32", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["backend"] == "jax" and not report["tensorflow_imported"]
    assert report["train_images"] == 256
    assert {(r["policy"], r["model"]) for r in report["rows"]} == {
        (p, m) for p in ("float32", "mixed_float16")
        for m in ("frequentist", "reparameterization", "flipout", "local_reparameterization")
    }
    assert "| mixed_float16 | flipout |" in proc.stdout
