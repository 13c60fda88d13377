"""Run an exported Bayesian .tflite file on an edge device: numpy + LiteRT, no TensorFlow.

Shows the device side of tfp_bcnn: ``export/runtime.py`` (installed as
``tfp_bcnn.export.runtime``) imports only numpy and ``ai_edge_litert``, so a
device needs neither TensorFlow nor Keras nor tfp_bcnn. This script loads
that one file BY PATH, never through ``import tfp_bcnn.export.runtime``:
importing it as a submodule would first run ``tfp_bcnn/__init__.py``, which
imports Keras and TensorFlow. It then predicts with Monte Carlo sampling
(drawn inside the .tflite file), prints each input's class, confidence and
epistemic uncertainty, and flags the inputs whose uncertainty exceeds
``--threshold``: the ones a device should not act on alone.

Where the runtime comes from, first match wins:

1. ``--runtime path/to/runtime.py``;
2. a ``runtime.py`` next to this script: on a device, copy the two files
   together (``pip install numpy ai-edge-litert`` is all they need);
3. the installed tfp_bcnn package, located with ``importlib.util.find_spec``
   (which finds a top-level package WITHOUT importing it):
   ``tfp_bcnn/export/runtime.py`` in a regular install, or
   ``export/runtime.py`` beside ``tfp_bcnn/`` in a source checkout
   (editable install).

With no model given it uses ``example_outputs/prune_and_export/model_sparse.tflite``
(what ``examples/prune_and_export.py`` writes), and runs that example first,
in a separate process, when the file is not there yet. Step by step, from the
repository root::

    python examples/prune_and_export.py            # writes .../model_sparse.tflite
    python examples/edge_inference.py              # probe images: blank, bar, stripes, noise
    python -c "import numpy as np, tfp_bcnn as b; (_, _), (x, y) = b.datasets.mnist_5k(); \\
        np.savez('digits.npz', x=x[:200], y=y[:200])"   # 200 test digits, on the training machine
    python examples/edge_inference.py example_outputs/prune_and_export/model_sparse.tflite \\
        --images digits.npz --threshold 2e-4

``--images`` is a ``.npz`` with images under ``x`` (uint8 0..255 or floats in
[0, 1], ``(N, H, W)`` or ``(N, H, W, C)``) and optional labels under ``y``.
Without it the script makes a few probe images with numpy (blank, noise,
stripes). ``--check-imports`` prints the TensorFlow / Keras / tfp_bcnn modules loaded
(there should be none). Results go to ``--out-dir``/``predictions.csv`` and
``results.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Packages a device does not need: none of them may be imported here.
HEAVY = ("tensorflow", "keras", "tfp_bcnn")
#: Where ``examples/prune_and_export.py`` writes its TFLite file (run from the same folder).
DEFAULT_MODEL = os.path.join("example_outputs", "prune_and_export", "model_sparse.tflite")
SCORES = ("epistemic", "predictive_entropy", "aleatoric")


def locate_runtime(path: str | None = None) -> Path:
    """Path of the TF-free ``runtime.py``, without importing tfp_bcnn (see the docstring)."""
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = [Path(__file__).resolve().parent / "runtime.py"]
        spec = importlib.util.find_spec("tfp_bcnn")  # top-level: found, not imported
        if spec is not None and spec.origin:
            package = Path(spec.origin).resolve().parent
            candidates += [package / "export" / "runtime.py",  # regular install
                           package.parent / "export" / "runtime.py"]  # source checkout
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Could not find the tfp_bcnn runtime.py; pass --runtime path/to/runtime.py or copy "
        f"runtime.py next to this script. Looked at: {[str(c) for c in candidates]}"
    )


def load_runtime(path: str | None = None):
    """Import ``runtime.py`` from its file as the module ``tfp_bcnn_runtime``."""
    location = locate_runtime(path)
    spec = importlib.util.spec_from_file_location("tfp_bcnn_runtime", location)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def load_images(path: str, x_key: str = "x", y_key: str = "y"):
    """``(x float32 (N, H, W, C) in [0, 1], y int (N,) or None)`` from a ``.npz``."""
    with np.load(path, allow_pickle=False) as data:
        if x_key not in data.files:
            raise ValueError(f"Key {x_key!r} not in {path!r}; keys: {sorted(data.files)}. "
                             f"Received: x_key={x_key!r}")
        x = data[x_key]
        y = data[y_key].astype(np.int64).reshape(-1) if y_key in data.files else None
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.ndim == 3:
        x = x[..., None]
    return x, y


def probe_images(example_shape) -> tuple[np.ndarray, list[str]]:
    """A few synthetic inputs of the model's shape: blank, noise and stripes."""
    rng = np.random.default_rng(0)
    h, w = example_shape[0], example_shape[1]
    blank = np.zeros(example_shape, np.float32)
    stripes = np.zeros(example_shape, np.float32)
    stripes[:, ::4] = 1.0
    bar = np.zeros(example_shape, np.float32)
    bar[h // 4: 3 * h // 4, w // 2 - 2: w // 2 + 2] = 1.0  # a vertical stroke, a bit like "1"
    images = [blank, bar, stripes] + [rng.uniform(size=example_shape).astype(np.float32)
                                      for _ in range(3)]
    names = ["blank", "vertical bar", "stripes", "noise 1", "noise 2", "noise 3"]
    return np.stack(images), names


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None,
                        help="the .tflite file written by tfp_bcnn.export.to_tflite; default "
                        f"{DEFAULT_MODEL} (made by examples/prune_and_export.py if missing)")
    parser.add_argument("--images", help=".npz with images under x (and labels under y)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N images only")
    parser.add_argument("--score", choices=SCORES, default="epistemic",
                        help="uncertainty compared with --threshold (nats)")
    parser.add_argument("--threshold", type=float, default=2e-4,
                        help="flag inputs whose score is above this, in nats. Choose it on "
                        "held-out in-distribution data (e.g. their 95th percentile): "
                        "epistemic values depend on how far training has widened the "
                        "posterior, and are ~1e-4 nats after a few epochs from the default "
                        "posterior std 1e-3")
    parser.add_argument("--num-invocations", type=int, default=1,
                        help="invocations pooled per input (each draws the file's S samples)")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--runtime", default=None, help="path of runtime.py (see the docstring)")
    parser.add_argument("--show", type=int, default=10, help="rows of the per-input table")
    parser.add_argument("--check-imports", action="store_true",
                        help="print the TensorFlow / Keras / tfp_bcnn modules loaded "
                        "(expected: none)")
    parser.add_argument("--out-dir", default=os.path.join("example_outputs", "edge_inference"))
    args = parser.parse_args(argv)
    if args.images is not None and not os.path.isfile(args.images):
        parser.error(f"--images: no such file (a .npz with images under x; the module "
                     f"docstring shows how to make digits.npz). Received: {args.images!r}")
    if args.model is not None and not os.path.isfile(args.model):
        parser.error(f"model: no such .tflite file. Received: {args.model!r}")
    return args


def find_or_make_model(path: str | None) -> str:
    """``path``, or the default model, made by ``prune_and_export.py`` if missing.

    The example runs in a separate process: it needs TensorFlow, this one
    must not import it.
    """
    if path is not None:
        return path
    if not os.path.isfile(DEFAULT_MODEL):
        maker = Path(__file__).resolve().parent / "prune_and_export.py"
        if not maker.is_file():
            raise FileNotFoundError(
                f"No model given and no {DEFAULT_MODEL}: pass the .tflite file to run. "
                f"Received: model=None")
        print(f"no model given and no {DEFAULT_MODEL} yet: making it with {maker.name} "
              "(a separate process, with TensorFlow)", flush=True)
        subprocess.run([sys.executable, str(maker)], check=True)
    return DEFAULT_MODEL


def main(argv=None) -> dict:
    """Predict with uncertainty on the device; returns the key numbers."""
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime = load_runtime(args.runtime)
    model = runtime.TFLiteBayesianModel(find_or_make_model(args.model),
                                        num_threads=args.num_threads)
    print(f"{model}\nruntime: {runtime.__file__}")

    if args.images:
        x, y = load_images(args.images)
        names = [f"#{i}" for i in range(len(x))]
    else:
        x, names = probe_images(model.input_shape[1:])
        y = None
    if args.limit is not None:
        x, names = x[: args.limit], names[: args.limit]
        y = None if y is None else y[: args.limit]

    start = time.perf_counter()
    p = model.predict(x, num_invocations=args.num_invocations)
    elapsed = time.perf_counter() - start
    score = getattr(p, args.score)
    flagged = score > args.threshold
    predicted = p.mean.argmax(-1)
    confidence = p.mean.max(-1)
    samples = model.num_samples * args.num_invocations
    print(f"{len(x)} inputs x {samples} Monte Carlo samples in {elapsed * 1e3:.0f} ms "
          f"({elapsed / len(x) * 1e3:.2f} ms per input)")

    label_col = "" if y is None else f"{'label':>6}"
    print(f"\n{'input':<14}{label_col}{'class':>6}{'conf':>7}{'epistemic':>11}"
          f"{'aleatoric':>11}  flag")
    for i in range(min(len(x), args.show)):
        label = "" if y is None else f"{y[i]:>6}"
        print(f"{names[i]:<14}{label}{predicted[i]:>6}{confidence[i]:>7.3f}"
              f"{p.epistemic[i]:>11.5f}{p.aleatoric[i]:>11.4f}  "
              f"{'UNCERTAIN' if flagged[i] else ''}")
    if len(x) > args.show:
        print(f"... ({len(x) - args.show} more in predictions.csv)")

    results = {
        "num_inputs": int(len(x)),
        "num_samples": int(samples),
        "score": args.score,
        "threshold": args.threshold,
        "num_flagged": int(flagged.sum()),
        "flagged": np.flatnonzero(flagged).tolist(),
        "mean_epistemic": float(p.epistemic.mean()),
        "mean_aleatoric": float(p.aleatoric.mean()),
        "ms_per_input": elapsed / len(x) * 1e3,
        "predicted": predicted.tolist(),
    }
    print(f"\nflagged {results['num_flagged']} of {len(x)} inputs "
          f"({args.score} > {args.threshold:g} nats)")
    labelled = np.zeros(len(x), bool) if y is None else y >= 0  # -1: no label (OOD)
    if labelled.any():
        correct = predicted[labelled] == y[labelled]
        kept = ~flagged[labelled]
        results["accuracy"] = float(correct.mean())
        results["accuracy_unflagged"] = float(correct[kept].mean()) if kept.any() else None
        kept_text = f"{results['accuracy_unflagged']:.3f}" if kept.any() else "n/a"
        print(f"accuracy on the {int(labelled.sum())} labelled inputs: all "
              f"{results['accuracy']:.3f}, unflagged {kept_text} ({int(kept.sum())} inputs)")
    if y is not None and (~labelled).any():
        results["flagged_unlabelled"] = int(flagged[~labelled].sum())
        print(f"unlabelled (label -1, e.g. OOD) inputs flagged: "
              f"{results['flagged_unlabelled']} of {int((~labelled).sum())}")

    rows = ["input,label,class,confidence,epistemic,aleatoric,predictive_entropy,flagged"]
    for i in range(len(x)):
        label = "" if y is None else str(y[i])
        rows.append(f"{names[i]},{label},{predicted[i]},{confidence[i]:.6f},"
                    f"{p.epistemic[i]:.6g},{p.aleatoric[i]:.6g},"
                    f"{p.predictive_entropy[i]:.6g},{int(flagged[i])}")
    (out_dir / "predictions.csv").write_text("\n".join(rows) + "\n")

    heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    results["heavy_modules"] = heavy
    if args.check_imports:
        print(f"TensorFlow / Keras / tfp_bcnn modules imported: {heavy}")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out_dir / 'predictions.csv'} and {out_dir / 'results.json'}")
    return {**results, "prediction": p}


if __name__ == "__main__":
    main()
