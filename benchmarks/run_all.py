"""Run every benchmark and rewrite BENCHMARKS.md.

Each benchmark runs in its own process (a fresh TensorFlow/Keras state, and
the TFP reference of the training-cost benchmark needs legacy Keras), prints
its markdown tables, and measures its baseline in the same run, so every
figure is a ratio taken on the same machine at the same time. The GPU
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# name -> (script, full args, quick args, title)
BENCHMARKS = {
    "train_cost": ("train_cost.py", ["--epochs", "6"], ["--epochs", "2", "--train-size", "1000"],
                   "Training cost per epoch (issue 3)"),
    "uncertainty": ("uncertainty.py", ["--epochs", "20", "--seeds", "0", "1", "2"],
                    ["--epochs", "1", "--num-samples", "8"],
                    "Uncertainty quality and predict speed (issue 4)"),
    "pruning": ("pruning.py", ["--epochs", "8", "--finetune-epochs", "3", "--scope", "global"],
                ["--epochs", "1", "--finetune-epochs", "1"],
                "Pruning: accuracy against sparsity, magnitude vs SNR (issue 5)"),
    "export": ("export.py", [], ["--epochs", "1", "--finetune-epochs", "1", "--repeats", "3"],
               "Export: sizes, accuracy and latency of TFLite (issue 6)"),
    "tuning": ("tuning.py", ["--from-json", "benchmarks/results/tuning.json"],
               ["--from-json", "benchmarks/results/tuning.json"],
               "Tuning of the Bayesian recipe (issue 13; recorded screening runs)"),
    "baselines": ("baselines.py", ["--seeds", "0", "1", "2", "3", "4",
                                   "--figure", "docs/baselines.png"],
                  ["--seeds", "0", "--epochs", "1", "--num-samples", "4", "--members", "2"],
                  "Uncertainty baselines: MC dropout, deep ensembles, temperature scaling "
                  "(issue 13)"),
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
                "tensorflow-model-optimization", "numpy"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def run_one(name, quick, extra):
    script, full, quick_args, _ = BENCHMARKS[name]
    args = [sys.executable, str(HERE / script), *(quick_args if quick else full), *extra]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    secs = time.time() - t0
    if proc.returncode != 0:
        body = f"**failed** (exit {proc.returncode}):\n\n```\n{proc.stderr[-3000:]}\n```"
    else:
        # the scripts' own headings sit below this file's "## <benchmark>" headings
        body = re.sub(r"^#{1,2} ", "### ", proc.stdout.strip(), flags=re.M)
    return body, secs, " ".join(args[1:]).replace(str(ROOT) + "/", "")


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
        title = BENCHMARKS[name][3]
        sections.append(f"## {title}\n\n`python {cmd}` ({secs:.0f} s)\n\n{body}\n")
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
        f"{dt.date.today().isoformat()}.\n\n"
        f"- machine: {machine()}\n- backend: {keras.backend.backend()} (CPU)\n"
        f"- versions: {versions()}\n\n"
        "Every figure is measured side by side with its baseline in the same run; "
        "the machines are shared and noisy, so read ratios, not absolute seconds.\n"
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
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".BENCHMARKS.", suffix=".md")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
