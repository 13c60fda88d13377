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
    python benchmarks/rank1_screen.py --cost      # where a rank-1 epoch's time goes

`epoch_cost` (also printed by ``baselines.py``'s latency block) times one
training epoch of the frequentist, the frequentist with its batch tiled K
times (the recipe's inherent cost: K forward/backward passes per example),
the mean-field model, the rank-1 model with its factor products removed
(`NoFactorProducts`: the per-row gathers, noise, KL of the rank-1 layers, but
no ``x o r`` / ``o s`` on the activations) and the rank-1 model, interleaved
(one epoch of each in turn, so load changes hit all alike), in wall and
process CPU seconds (CPU time is less disturbed by other jobs on shared
cores).
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
from tfp_bcnn import layers, metrics, models
from tfp_bcnn.layers import Rank1Layer

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


class NoFactorProducts:
    """Mixin: a rank-1 layer without its factor products, ``(x (*) W) + b_k`` (diagnostic).

    Everything else of the layer (the per-row gathers of the factor tables,
    the noise draws, the KL) still runs, so the time it saves against the
    full layer is the cost of the products ``x o r`` and ``o s`` and their
    gradients. Not a model to train for results.
    """

    def apply_factors(self, x, kernel, r, s, bias):
        out = self.linear(x, kernel) + 0.0 * (keras.ops.sum(r) + keras.ops.sum(s))
        out = out if bias is None else out + bias
        return out if self.activation is None else self.activation(out)


def _without_factor_products(model):
    """A clone of a rank-1 Sequential model whose rank-1 layers are `NoFactorProducts`."""
    def clone(layer):
        if not isinstance(layer, Rank1Layer):
            return layer.__class__.from_config(layer.get_config())
        cls = type(f"NoFactor{type(layer).__name__}", (NoFactorProducts, type(layer)), {})
        return cls.from_config(layer.get_config())
    return keras.models.clone_model(model, clone_function=clone)


def _cost_models(k, n):
    """name -> compiled LeNet-5 of `epoch_cost`."""
    freq = models.lenet5(bayesian=False, seed=0)
    tiled = models.Rank1Sequential([keras.Input((28, 28, 1)), layers.TileComponents(k)]
                                   + models.lenet5(bayesian=False, seed=0).layers)
    rank1 = models.lenet5(num_train_examples=n, seed=0, posterior="rank1", num_components=k)
    built = {"frequentist": freq, f"frequentist, batch tiled {k}x": tiled,
             "mean-field": models.lenet5(num_train_examples=n, seed=0),
             f"rank-1 K={k} without factor products": _without_factor_products(rank1),
             f"rank-1 K={k}": models.lenet5(num_train_examples=n, seed=0, posterior="rank1",
                                            num_components=k)}
    for model in built.values():
        models.compile_bayesian(model)
    return built


def epoch_cost(k=4, rounds=3, batch_size=64):
    """Seconds per training epoch of the `_cost_models`, interleaved (module docstring).

    After one warm-up epoch each, ``rounds`` rounds of one epoch of every
    model in turn on the 3,600 training images. Returns the markdown lines
    and the issue-23 check (median rank-1 wall epoch / median frequentist).
    """
    import time as clock

    (x, y), _, _ = _split()
    built = _cost_models(k, len(x))
    wall = {name: [] for name in built}
    cpu = {name: [] for name in built}
    for model in built.values():
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # trace, warm up
    for _ in range(rounds):
        for name, model in built.items():
            t0, c0 = clock.perf_counter(), clock.process_time()
            model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
            wall[name].append(clock.perf_counter() - t0)
            cpu[name].append(clock.process_time() - c0)
    med = {name: (float(np.median(wall[name])), float(np.median(cpu[name]))) for name in built}
    base = med["frequentist"]
    lines = [f"Training time per epoch, interleaved (one epoch of each model in turn, {rounds} "
             "rounds, median; `benchmarks/rank1_screen.py --cost`):", "",
             "| model | wall s | x frequentist | CPU s | x frequentist |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {w:.2f} | {w / base[0]:.2f}x | {c:.2f} | {c / base[1]:.2f}x |"
              for name, (w, c) in med.items()]
    ratio = med[f"rank-1 K={k}"][0] / base[0]
    return lines, ("training time <= 3x the frequentist per epoch (interleaved epochs, wall)",
                   ratio <= 3.0, f"{ratio:.2f}x (K = {k}: each example passes K times; CPU "
                   f"{med[f'rank-1 K={k}'][1] / base[1]:.2f}x)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=models.RECIPE["epochs"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--only", nargs="+", choices=list(CONFIGS), default=None)
    p.add_argument("--json")
    p.add_argument("--cost", action="store_true", help="only time the epochs (epoch_cost)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.cost:
        lines, check = epoch_cost(rounds=args.rounds)
        print("\n".join(lines + ["", f"- {check[0]}: {check[2]}"]))
        return None
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
