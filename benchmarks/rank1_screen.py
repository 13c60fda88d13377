"""Screen of the rank-1 mixture recipe (issue 23): chosen on in-distribution validation only.

Trains rank-1 LeNet-5s (``models.lenet5(posterior="rank1")``, batch tiled K
times in training by `tfp_bcnn.layers.TileComponents`) on the 3,600 training
images of ``baselines.py``'s split and scores each configuration on the 400
held-out validation digits of the same split: accuracy, NLL, Brier and ECE
(15 bins). Nothing out of distribution is scored here: the recipe is chosen
without looking at letters or noise (the checks of the issue use other OOD
data). The choice rule (written in the block): a configuration replaces the
default only if its seed-mean validation NLL is lower by more than the
seed-to-seed spread and neither its accuracy nor its ECE is worse by more
than theirs. Not part of ``run_all.py``; a short screen (few seeds, the
recipe's epochs unless a row says otherwise).

    python benchmarks/rank1_screen.py --seeds 0 1 --json benchmarks/results/rank1_screen.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

import tfp_bcnn
from tfp_bcnn import metrics, models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_json  # noqa: E402

#: name -> (lenet5 keyword arguments beyond posterior="rank1", epochs or None).
CONFIGS = {
    "K=4 default": ({"num_components": 4}, None),
    "K=4 random-sign means": ({"num_components": 4,
                               "rank1_options": {"random_sign_init": 0.5}}, None),
    "K=4 factor std 0.2": ({"num_components": 4, "posterior_std_init": 0.2}, None),
    "K=8": ({"num_components": 8}, None),
    "K=4 Cauchy factors": ({"num_components": 4, "rank1_options": {"posterior": "cauchy"}},
                           None),
    "K=4 default, 40 epochs": ({"num_components": 4}, 40),
}


def _split(seed=0):
    from baselines import _split as split

    return split(seed)


def run(name, seed, epochs, num_samples=32):
    """Trains one configuration with one seed; its validation metrics and time."""
    (x, y), (x_val, y_val), _ = _split()
    kwargs, own_epochs = CONFIGS[name]
    epochs = own_epochs or epochs
    keras.utils.set_random_seed(seed)
    model = models.lenet5(num_train_examples=len(x), seed=seed, posterior="rank1", **kwargs)
    models.compile_bayesian(model, models.RECIPE["learning_rate"])
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=models.RECIPE["batch_size"], verbose=0)
    secs = time.perf_counter() - t0
    out = {"train_s": secs, "epochs": epochs, "val": None}
    try:
        pv = tfp_bcnn.predict(model, x_val, num_samples=num_samples)
        out["val"] = metrics.summary(pv.mean, y_val)
    except ValueError as err:  # e.g. Cauchy draws that overflow to inf / NaN
        out["error"] = str(err).splitlines()[0]
    print(name, seed, json.dumps(out), flush=True)
    return out


def markdown(results) -> str:
    """Seed means +- std of every configuration's validation metrics."""
    lines = ["| configuration | epochs | seeds | val accuracy | val NLL | val ECE | train s |",
             "|---|---|---|---|---|---|---|"]
    for name, by_seed in results.items():
        runs = list(by_seed.values())
        failed = sum(r["val"] is None for r in runs)

        def cell(key, digits=4, runs=runs, failed=failed):
            v = np.array([r["val"][key] for r in runs if r["val"] is not None])
            text = f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) else "—"
            return text + (f" ({failed} seed(s) non-finite)" if failed else "")
        secs = np.mean([r["train_s"] for r in runs])
        lines.append(f"| {name} | {runs[0]['epochs']} | {len(runs)} | {cell('accuracy')} | "
                     f"{cell('nll')} | {cell('ece')} | {secs:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=models.RECIPE["epochs"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None)
    p.add_argument("--json")
    args = p.parse_args(argv)
    results = {}
    if args.json and os.path.exists(args.json):  # --only / other seeds add to a screen
        with open(args.json) as f:
            results = json.load(f).get("results", {})
    for seed in args.seeds:
        for name in args.only or CONFIGS:
            results.setdefault(name, {})[str(seed)] = run(name, seed, args.epochs)
            if args.json:
                write_json(args.json, {"results": results})
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
