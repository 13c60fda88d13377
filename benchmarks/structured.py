"""Structured pruning benchmark: filters removed, accuracy, size and TFLite latency.

For LeNet-5 and the small AlexNet of the zoo (Flipout, ``kl_weight = 1/N``)
on MNIST-5k, per seed:

1. two trainings of ``--epochs`` epochs from the same initialisation: plain
   (the ELBO only) and L1-trained (``regularizers.GroupL1(--group-l1)`` on the
   posterior means of every hidden layer: the group lasso, which drives whole
   filters to zero);
2. from each trained model, for each filter score (``"l1"``: a filter's L1
   norm of means; ``"snr"``: its mean |mu|/sigma) and each fraction of
   filters removed (of all the hidden filters / units together,
   ``scope="global"``: one threshold on the per-weight scores, every layer
   keeping at least one filter; the classifier keeps its units),
   ``--finetune-epochs`` epochs of fine-tuning under
   ``pruning.prune(..., structure="filter")`` with the workflow's schedule
   (``workflow.finetune_schedule``), then ``pruning.strip`` and
   ``pruning.shrink``. The 0 % row is fine-tuned the same way without
   pruning, so every row has trained exactly as long;
3. accuracy of the Monte Carlo mean (``--num-samples``) on the 1,000 test
   images, parameters (``count_params``: a Bayesian kernel counts mean, std
   and mask) and FLOPs of the mean path per image (``pruning.layer_costs``);
4. for the first seed and the L1-trained / L1-score models: the ``.keras``
   file (uncompiled), the TFLite file (``export.to_tflite``, MC, 32 samples,
   ``sampling="lrt"``) and its latency per image (batch 1, one thread,
   median of ``--repeats`` invocations, the models interleaved round by
   round), against the unpruned model in the same run. Moments export
   (``sampling="moments"``) is measured too when the installed export has it.

Prints its markdown block (``--markdown FILE`` writes it for ``run_all.py``);
progress goes to stderr; ``--out`` writes the figures as JSON::

    python benchmarks/structured.py --models lenet5 --seeds 0 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np
from _common import emit, log, mc_accuracy, recipe, recipe_note, train, write_json
from _common import mean_std as _mean_std
from _latency import time_tflite_files

from tfp_bcnn import datasets, models, pruning, regularizers, workflow

TRAININGS = ("plain", "l1")
SCORES = ("l1", "snr")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "alexnet"],
                   choices=["lenet5", "alexnet"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--alexnet-seeds", type=int, nargs="+", default=None,
                   help="seeds for AlexNet (default: --seeds)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--group-l1", type=float, default=3e-3,
                   help="GroupL1 strength (3e-3: LeNet-5 keeps its accuracy, about 20%% of "
                   "its fc units reach ~0 in 6 epochs)")
    p.add_argument("--scope", default="global", choices=pruning.SCOPES)
    p.add_argument("--alexnet-epochs", type=int, default=None, help="default: --epochs")
    p.add_argument("--alexnet-finetune-epochs", type=int, default=None,
                   help="default: --finetune-epochs")
    p.add_argument("--alexnet-group-l1", type=float, default=3e-4,
                   help="GroupL1 strength for AlexNet (its 1,024 filters make the summed "
                   "penalty ~10x LeNet-5's: 3e-3 collapsed it to chance in a trial, 3e-4 "
                   "zeroed about half of conv3's filters at -1 point)")
    p.add_argument("--learning-rate", type=float, default=None, help="default: models.RECIPE")
    p.add_argument("--finetune-learning-rate", type=float,
                   default=workflow.FINETUNE["learning_rate"],
                   help="default: workflow.FINETUNE (that of tfp-bcnn prune)")
    p.add_argument("--batch-size", type=int, default=None, help="default: models.RECIPE")
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--markdown", help="write the markdown block to this file")
    p.add_argument("--render", nargs="+", metavar="JSON",
                   help="only render the block from the --out files of earlier runs "
                   "(their models merged; e.g. LeNet-5 and AlexNet run as two processes)")
    return p.parse_args(argv)


def build(name, n, seed, group_l1):
    reg = regularizers.GroupL1(group_l1) if group_l1 else None
    return getattr(models, name)(input_shape=(28, 28, 1), num_classes=10,
                                 num_train_examples=n, seed=seed, kernel_regularizer=reg)


def costs(model):
    rows = pruning.layer_costs(model)
    return {"params": int(model.count_params()), "flops": int(sum(r["flops"] for r in rows)),
            "channels": {r["layer"]: r["channels"] for r in rows}}


def finetune(name, weights, data, args, seed, group_l1, fraction, score):
    """One row: fine-tune (pruning ``fraction`` of the filters by ``score``), shrink."""
    (x, y), (x_test, y_test) = data
    keras.utils.set_random_seed(seed + 1000)
    model = build(name, len(x), seed, group_l1)
    model.set_weights(weights)
    if fraction > 0:  # as `tfp-bcnn prune --structured` does
        model = workflow.prune_and_finetune(
            model, x, y, final_sparsity=fraction, criterion=score,
            epochs=args.finetune_epochs, batch_size=args.batch_size,
            learning_rate=args.finetune_learning_rate, scope=args.scope, structure="filter",
            verbose=0)
    else:
        models.compile_bayesian(model, args.finetune_learning_rate)
        train(model, x, y, recipe=recipe(epochs=args.finetune_epochs,
                                         batch_size=args.batch_size))
    small = pruning.shrink(model)  # also an uncompiled copy of an unpruned model
    return small, {"accuracy": mc_accuracy(small, x_test, y_test, args.num_samples),
                   **costs(small)}


def export_sizes(small, directory, tag, samplings):
    """``.keras`` and TFLite files of a shrunk model: {kind: (path, bytes)}."""
    from tfp_bcnn import export

    out = {}
    path = pathlib.Path(directory) / f"{tag}.keras"
    small.save(path)
    out["keras"] = (str(path), path.stat().st_size)
    for sampling in samplings:
        lite = pathlib.Path(directory) / f"{tag}_{sampling}.tflite"
        export.to_tflite(small, lite, num_samples=32, sampling=sampling, sparse=True)
        out[sampling] = (str(lite), lite.stat().st_size)
    return out


def latencies(paths: dict, repeats):
    """Median ms per image of each TFLite file, batch 1, one thread, interleaved
    (``_latency.time_tflite_files``)."""
    res = time_tflite_files(paths, repeats=repeats)
    return {k: r["ms"] for k, r in res.items()}


def mean_std(values):
    return _mean_std(values, 4)


def _samplings():
    from tfp_bcnn.export import _inference

    return [s for s in ("lrt", "moments") if s in getattr(_inference, "SAMPLINGS", ())]


def _select(res, training, fraction, score):
    """The rows (one per seed) of a training, fraction and score (any score at 0)."""
    return [r for r in res["rows"] if r["training"] == training and r["fraction"] == fraction
            and (fraction == 0 or r["score"] == score)]


def markdown(results) -> str:
    cfg = results["config"]
    out = [
        "Flipout models on MNIST-5k, trained (Adam "
        f"{cfg['learning_rate']:g}, batch {cfg['batch_size']}) plain or with "
        "`regularizers.GroupL1` on the posterior means of the hidden "
        "layers (epochs and strength in each heading); then every row fine-tuned (Adam "
        f"{cfg['finetune_learning_rate']:g}) from the trained weights, pruning the given "
        "fraction of the filters / units of the hidden layers (`structure=\"filter\"`, "
        f"`scope=\"{cfg['scope']}\"`: "
        + ("one threshold over all hidden layers, each keeping at least one filter, the "
           "channels left per layer are in the second table" if cfg["scope"] == "global"
           else "that fraction of every hidden layer")
        + "; the workflow's polynomial schedule), then `pruning.shrink`. "
        f"Accuracy of the mean of {cfg['num_samples']} Monte Carlo samples on the 1,000 test "
        "images, mean +- sample std over the seeds, and in brackets the parameters of the "
        "shrunk model (`count_params`: mean, std and mask of each kernel) as a ratio to the "
        "unpruned row of the same training (mean over seeds); FLOPs per image (mean path) "
        "likewise for the L1-trained, L1-score models. "
        + recipe_note(recipe(epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                             learning_rate=cfg["learning_rate"]),
                      "fewer epochs: 2 shared cores, many rows per seed")
        + " Fine-tuning: `workflow.prune_and_finetune`, as `tfp-bcnn prune --structured`.\n",
    ]
    for name, res in results["models"].items():
        seeds = res["seeds"]
        st = res["settings"]
        out.append(f"### {name} (seeds {', '.join(map(str, seeds))}; {st['epochs']} training "
                   f"+ {st['finetune_epochs']} fine-tuning epochs; GroupL1({st['group_l1']:g}))"
                   "\n")
        head = ["filters removed"] + [f"{t} training, {s} score" for t in TRAININGS
                                      for s in SCORES] + ["FLOPs (l1 / l1)"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for f in [0.0] + cfg["fractions"]:
            cells = [f"{f:.0%}"]
            for t in TRAININGS:
                base = _select(res, t, 0.0, None)
                for s in SCORES:
                    rows = _select(res, t, f, s)
                    ratio = np.mean([r["params"] for r in rows]) / base[0]["params"]
                    cells.append(f"{mean_std([r['accuracy'] for r in rows])} "
                                 f"({ratio:.2f}x)")
            rows, base = _select(res, "l1", f, "l1"), _select(res, "l1", 0.0, None)
            cells.append(f"{np.mean([r['flops'] for r in rows]) / base[0]['flops']:.2f}x")
            out.append("| " + " | ".join(cells) + " |")
        files = res["files"]
        out.append("")
        out.append(f"Files and TFLite latency (seed {seeds[0]}, L1-trained, L1 score; "
                   f"MC {32} samples in one invocation, batch 1, one thread, median of "
                   f"{cfg['repeats']}; moments export "
                   f"{'measured' if 'moments' in results['samplings'] else 'not on this branch'}):"
                   "\n")
        head = ["filters removed", "channels", ".keras KiB", "TFLite KiB", "MC-32 ms/image",
                "x unpruned"]
        if "moments" in results["samplings"]:
            head += ["moments ms/image", "x unpruned"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        base = files["0.0"]
        for f, d in files.items():
            cells = [f"{float(f):.0%}", "/".join(str(c) for c in d["channels"].values()),
                     f"{d['keras'] / 1024:.0f}", f"{d['lrt'] / 1024:.0f}",
                     f"{d['ms_lrt']:.2f}", f"{d['ms_lrt'] / base['ms_lrt']:.2f}"]
            if "moments" in results["samplings"]:
                cells += [f"{d['ms_moments']:.2f}", f"{d['ms_moments'] / base['ms_moments']:.2f}"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(verdict(name, res, cfg) + "\n")
    return "\n".join(out).rstrip()


def verdict(name, res, cfg):
    """The targets: >= half of the parameters removed within 1 point, and the
    TFLite MC-32 latency of that model <= 0.6x the unpruned one."""
    best = None
    for f in cfg["fractions"]:
        for t in TRAININGS:
            base = _select(res, t, 0.0, None)
            for s in SCORES:
                rows = _select(res, t, f, s)
                drop = np.mean([b["accuracy"] for b in base]) - np.mean(
                    [r["accuracy"] for r in rows])
                removed = 1 - np.mean([r["params"] for r in rows]) / base[0]["params"]
                if removed >= 0.5 and drop <= 0.01 and (best is None or removed > best[0]):
                    best = (removed, f, t, s, drop)
    files = res["files"]
    if best is None:
        return (f"**Target missed** ({name}): no row removed >= 50 % of the parameters with "
                "the mean accuracy within 1 point of its unpruned row.")
    removed, f, t, s, drop = best
    text = (f"Target ({name}): {removed:.0%} of the parameters removed ({f:.0%} of the filters, "
            f"{t} training, {s} score) with an accuracy change of {-drop * 100:+.2f} points "
            "against its unpruned row (mean over seeds; target: at most 1 point lower): "
            "**met**.")
    key = str(f)
    if key in files:
        ratio = files[key]["ms_lrt"] / files["0.0"]["ms_lrt"]
        met = "**met**" if ratio <= 0.6 else f"**missed** by {ratio - 0.6:.2f}"
        text += (f" TFLite MC-32 latency of the L1-trained / L1-score model at {f:.0%}: "
                 f"{ratio:.2f}x the unpruned one (target <= 0.6x: {met}).")
    return text


def model_args(name, args):
    """``args`` with AlexNet's own epochs and strength where given."""
    if name != "alexnet":
        return args
    args = argparse.Namespace(**vars(args))
    args.epochs = args.alexnet_epochs or args.epochs
    args.finetune_epochs = args.alexnet_finetune_epochs or args.finetune_epochs
    args.group_l1 = args.alexnet_group_l1
    return args


def run_model(name, seeds, data, args, tmp, samplings):
    (x, y), _ = data
    args = model_args(name, args)
    rows, files = [], {}
    for seed in seeds:
        trained = {}
        for training in TRAININGS:
            t0 = time.time()
            keras.utils.set_random_seed(seed)
            group_l1 = args.group_l1 if training == "l1" else 0.0
            model = build(name, len(x), seed, group_l1)
            train(model, x, y, recipe=recipe(epochs=args.epochs, batch_size=args.batch_size,
                                             learning_rate=args.learning_rate))
            trained[training] = model.get_weights()
            log(f"{name} seed {seed} {training}: trained in {time.time() - t0:.0f} s")
        for training in TRAININGS:
            group_l1 = args.group_l1 if training == "l1" else 0.0
            for fraction in [0.0] + args.fractions:
                for score in (SCORES if fraction > 0 else ("-",)):
                    t0 = time.time()
                    small, row = finetune(name, trained[training], data, args, seed, group_l1,
                                          fraction, score if fraction > 0 else "l1")
                    row.update(seed=seed, training=training, fraction=fraction, score=score)
                    rows.append(row)
                    log(f"  {training:5s} {score:3s} {fraction:.2f}: acc {row['accuracy']:.4f} "
                        f"params {row['params']:,} channels {list(row['channels'].values())} "
                        f"({time.time() - t0:.0f} s)")
                    if seed == seeds[0] and training == "l1" and score in ("l1", "-"):
                        sizes = export_sizes(small, tmp, f"{name}_{fraction}", samplings)
                        files[str(fraction)] = {
                            "channels": row["channels"], "keras": sizes["keras"][1],
                            **{s: sizes[s][1] for s in samplings},
                            "_paths": {s: sizes[s][0] for s in samplings}}
    for sampling in samplings:
        ms = latencies({f: d["_paths"][sampling] for f, d in files.items()}, args.repeats)
        for f, v in ms.items():
            files[f][f"ms_{sampling}"] = v
    for d in files.values():
        d.pop("_paths")
    res = {"seeds": seeds, "rows": rows, "files": files,
           "settings": {k: getattr(args, k) for k in ("epochs", "finetune_epochs", "group_l1")}}
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    used = recipe(epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate)
    args.batch_size, args.learning_rate = used["batch_size"], used["learning_rate"]
    if args.render:
        parts = [json.loads(pathlib.Path(p).read_text()) for p in args.render]
        results = dict(parts[0], models={k: v for r in parts for k, v in r["models"].items()},
                       seconds=sum(r["seconds"] for r in parts))
        return _emit(results, args)
    data = datasets.mnist_5k()
    samplings = _samplings()
    start = time.time()
    results = {"config": vars(args), "samplings": samplings, "models": {}}
    with tempfile.TemporaryDirectory(prefix="tfp_bcnn_structured_") as tmp:
        for name in args.models:
            seeds = args.alexnet_seeds if (name == "alexnet" and args.alexnet_seeds) \
                else args.seeds
            results["models"][name] = run_model(name, seeds, data, args, tmp, samplings)
    results["seconds"] = time.time() - start
    return _emit(results, args)


def _emit(results, args) -> int:
    emit(args.markdown, markdown(results))
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
