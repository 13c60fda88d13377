"""Deep networks: a Bayesian MobileNetV2 against its deterministic, MC-dropout and ensemble twins.

MobileNetV2 alpha 0.35 (``models.mobilenet_v2``) on MNIST-5k padded to
32x32x3, trained with ``models.MOBILENET_RECIPE`` (fewer epochs with
``--epochs``; the block says so): deterministic, MC dropout, a deep
ensemble, fully Bayesian, Bayesian last block + head (``last=5``) and
Bayesian head only (``last=1``). Columns: accuracy, NLL, ECE, OOD AUROC
(predictive entropy and mutual information) against letters A-J and
uniform noise, accuracy on ``datasets.shifted_digits()``, training time
per epoch against the deterministic net, and TFLite latency (moments and
MC-32 ``lrt``) against the deterministic file, every file timed
interleaved in one loop (``_latency.time_tflite_files``). Then filter
pruning of the fully Bayesian and the last-block model at 50 % of the
channels (``structure="filter"``, fine-tuned, ``pruning.shrink``):
parameters, FLOPs, accuracy and MC-32 latency against the unpruned file.

    python benchmarks/deep.py                       # 3 seeds, the recipe's epochs
    python benchmarks/deep.py --seeds 0 --epochs 2 --train-size 500   # smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import _common as common  # noqa: E402
import _latency  # noqa: E402

#: label -> builder keyword arguments (``bayesian``, ``last``, ``dropout``)
CONFIGS = {
    "deterministic": {"bayesian": False},
    "MC dropout (0.2)": {"bayesian": False, "dropout": 0.2},
    "deep ensemble": {"bayesian": False},
    "fully Bayesian": {"bayesian": True},
    "Bayesian last block + head": {"bayesian": True, "last": 5},
    "Bayesian head only": {"bayesian": True, "last": 1},
}
PRUNED = ("fully Bayesian", "Bayesian last block + head")
#: channel allocation -> `pruning.prune` options (criterion L1, 50 % of the channels):
#: the same fraction of every group, or one global ranking of L2-normalised
#: group scores with a floor (the narrow groups of alpha 0.35 keep >= 8 channels
#: and >= a quarter of theirs); see tfp_bcnn/pruning/_allocation.py
ALLOCATIONS = {
    "per group": {"scope": "layer"},
    "global": {"scope": "global", "normalize": "l2", "min_channels": 8, "min_fraction": 0.25},
    "per group floored": {"scope": "layer", "min_channels": 8},
    "global mean": {"scope": "global", "normalize": "mean", "min_channels": 8,
                     "min_fraction": 0.25},
    # the global ranking by score per FLOP that removing the channel saves
    # (`cost="flops"`), and tempered ((cost / mean cost) ** 0.5)
    "global flops": {"scope": "global", "normalize": "l2", "min_channels": 8,
                     "min_fraction": 0.25, "cost": "flops"},
    "global sqrt flops": {"scope": "global", "normalize": "l2", "min_channels": 8,
                          "min_fraction": 0.25, "cost": "flops", "cost_exponent": 0.5},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="default: MOBILENET_RECIPE")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--members", type=int, default=3, help="deep ensemble size")
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--letters-per-class", type=int, default=50)
    p.add_argument("--prune-epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=30, help="latency rounds")
    p.add_argument("--pruning-only", action="store_true",
                   help="train only the pruned models (first seed), prune them and time "
                   "their MC-32 files against the unpruned ones: the pruning rows alone")
    p.add_argument("--allocations", nargs="+", choices=list(ALLOCATIONS),
                   default=["per group", "global"], help="channel allocations to compare")
    p.add_argument("--pruned-models", nargs="+", choices=PRUNED, default=list(PRUNED),
                   help="the models pruned")
    p.add_argument("--markdown", default=None)
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def load_data(train_size, letters_per_class):
    from tfp_bcnn import datasets

    (x, y), (xt, yt) = datasets.mnist_5k()
    xs, ys = datasets.shifted_digits()
    letters, _ = datasets.letters(letters_per_class, seed=0)
    noise, _ = datasets.noise(500, (28, 28, 1), seed=0)
    fit = datasets.fit_images
    return {"train": (fit(x[:train_size], 32), y[:train_size]), "test": (fit(xt, 32), yt),
            "shifted": (fit(xs, 32), ys), "letters": fit(letters, 32), "noise": fit(noise, 32)}


def build(label, seed, n):
    from tfp_bcnn import models

    kwargs = dict(CONFIGS[label])
    if kwargs["bayesian"]:
        kwargs["num_train_examples"] = n
    return models.mobilenet_v2(seed=seed, **kwargs)


def quality(model, data, num_samples) -> dict:
    """Accuracy, NLL, ECE, OOD AUROCs and shifted accuracy of one model (or ensemble)."""
    import tfp_bcnn as bcnn
    from tfp_bcnn import metrics

    x, y = data["test"]
    p = bcnn.predict(model, x, num_samples=num_samples)
    row = {"acc": metrics.accuracy(p.mean, y),
           "nll": float(metrics.negative_log_likelihood(p.mean, y)),
           "ece": float(metrics.expected_calibration_error(p.mean, y))}
    for name in ("letters", "noise"):
        q = bcnn.predict(model, data[name], num_samples=num_samples)
        row[f"h_{name}"] = float(metrics.ood_auroc(p.predictive_entropy, q.predictive_entropy))
        row[f"mi_{name}"] = float(metrics.ood_auroc(p.epistemic, q.epistemic))
    xs, ys = data["shifted"]
    row["shifted"] = metrics.accuracy(bcnn.predict(model, xs, num_samples=num_samples).mean, ys)
    return row


def train_all(args, data, recipe):
    """Every configuration for every seed: quality rows, seconds per epoch, the models."""
    x, y = data["train"]
    rows = {label: [] for label in CONFIGS}
    per_epoch = {label: [] for label in CONFIGS}
    kept = {}
    for seed in args.seeds:
        nets = {}
        for label in CONFIGS:
            if label == "deep ensemble":
                members = [nets["deterministic"]]
                secs = per_epoch["deterministic"][-1] * recipe["epochs"]
                for m in range(1, args.members):
                    net, s = common.train(build("deterministic", seed + 1000 * m, len(x)), x, y,
                                          recipe=recipe, seed=seed + 1000 * m)
                    members.append(net)
                    secs += s
                nets[label] = members
            else:
                common.log(f"seed {seed}: training {label}")
                nets[label], secs = common.train(build(label, seed, len(x)), x, y,
                                                 recipe=recipe, seed=seed)
            per_epoch[label].append(secs / recipe["epochs"])
            rows[label].append(quality(nets[label], data, args.num_samples))
            common.log(f"  {label}: {rows[label][-1]}")
        if seed == args.seeds[0]:
            kept = nets
    return rows, per_epoch, kept


def prune(nets, data, recipe, epochs, allocations=("per group", "global"), labels=PRUNED):
    """50 % of the channels of the Bayesian models, fine-tuned and shrunk, per allocation.

    Returns:
        ``{"<model>, <allocation>": {"model", "params", "flops", "acc"}}``.
    """
    from tfp_bcnn import pruning, workflow

    x, y = data["train"]
    xt, yt = data["test"]
    out = {}
    for label in labels:
        source = nets[label]
        before = sum(r["flops"] for r in pruning.layer_costs(source))
        acc = common.mc_accuracy(source, xt, yt, 32)
        for name in allocations:
            options = ALLOCATIONS[name]
            common.log(f"pruning {label}, {name}")
            copy = _clone(source)
            workflow.prune_and_finetune(copy, x, y, final_sparsity=0.5, criterion="l1",
                                        epochs=epochs, batch_size=recipe["batch_size"],
                                        learning_rate=recipe["learning_rate"] / 4,
                                        structure="filter", verbose=0, **options)
            small = pruning.shrink(copy)
            out[f"{label}, {name}"] = {
                "model": small, "params": (source.count_params(), small.count_params()),
                "flops": (before, sum(r["flops"] for r in pruning.layer_costs(small))),
                "acc": (acc, common.mc_accuracy(small, xt, yt, 32))}
    return out


def _clone(model):
    """An independent copy (weights included) through a .keras round trip."""
    import keras

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.keras"
        model.save(path)
        return keras.saving.load_model(path)


def latency(nets, pruned, repeats, tmp):
    """Interleaved TFLite latency of every file of the table, one loop."""
    from tfp_bcnn import export

    files = {"deterministic": export.to_tflite(nets["deterministic"], Path(tmp) / "det.tflite",
                                               num_samples=1)}
    files["MC dropout (0.2) MC-32"] = export.to_tflite(
        nets["MC dropout (0.2)"], Path(tmp) / "drop.tflite", num_samples=32)
    for i, label in enumerate(("fully Bayesian", "Bayesian last block + head",
                               "Bayesian head only")):
        for sampling in ("moments", "lrt"):
            name = f"{label} {'moments' if sampling == 'moments' else 'MC-32'}"
            files[name] = export.to_tflite(nets[label], Path(tmp) / f"b{i}_{sampling}.tflite",
                                           num_samples=32, sampling=sampling)
    for i, (label, res) in enumerate(pruned.items()):
        files[f"{label} pruned 50 % MC-32"] = export.to_tflite(
            res["model"], Path(tmp) / f"p{i}.tflite", num_samples=32)
    results = _latency.time_tflite_files(files, repeats=repeats)
    return results, _latency.ratios(results, "deterministic")


def _model(label: str) -> str:
    """``"fully Bayesian, global"`` -> ``"fully Bayesian"``."""
    return label.rsplit(", ", 1)[0]


def _speedup(ratios, label: str) -> float:
    """MC-32 latency of a pruned file over its unpruned model's file."""
    return ratios[f"{label} pruned 50 % MC-32"] / ratios[f"{_model(label)} MC-32"]


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def targets(rows, ratios, pruned) -> list[str]:
    """Every target of issue 21, met or missed, with the numbers."""
    mean = {label: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
            for label, rs in rows.items()}
    det, full = mean["deterministic"], mean["fully Bayesian"]
    out = [
        f"- fully Bayesian accuracy within 1 point of the deterministic: "
        f"{full['acc']:.3f} vs {det['acc']:.3f} "
        f"({100 * (full['acc'] - det['acc']):+.1f} points): "
        f"{_verdict(full['acc'] >= det['acc'] - 0.01)}",
        f"- fully Bayesian ECE below the deterministic's: {full['ece']:.4f} vs "
        f"{det['ece']:.4f}: {_verdict(full['ece'] < det['ece'])}",
        f"- fully Bayesian entropy AUROC vs letters at least the deterministic's: "
        f"{full['h_letters']:.3f} vs {det['h_letters']:.3f}: "
        f"{_verdict(full['h_letters'] >= det['h_letters'])}",
    ]
    for label, key in (("Bayesian last block + head", "Bayesian last block + head moments"),
                       ("Bayesian head only", "Bayesian head only moments")):
        part = mean[label]
        # one-sided: the partial net may not lose more than 0.01 (a higher AUROC is no miss)
        gaps = [full[k] - part[k] for k in ("h_letters", "h_noise")]
        ok = max(gaps) <= 0.01 and ratios[key] <= 1.5
        out.append(
            f"- {label} at most 0.01 entropy AUROC below the fully Bayesian net (letters "
            f"{part['h_letters']:.3f} vs {full['h_letters']:.3f}, noise {part['h_noise']:.3f} "
            f"vs {full['h_noise']:.3f}) at <= 1.5x the deterministic latency with moments "
            f"({ratios[key]:.2f}x): {_verdict(ok)}")
    head = ratios["Bayesian head only MC-32"]
    out.append(f"- head-only MC-32 TFLite latency <= 2x deterministic: {head:.2f}x: "
               f"{_verdict(head <= 2.0)}")
    return out + pruning_targets(ratios, pruned)


def pruning_targets(ratios, pruned) -> list[str]:
    """The pruning target of issue 21 for every pruned model and allocation."""
    out = []
    for label, res in pruned.items():
        fewer = 1 - res["params"][1] / res["params"][0]
        drop = res["acc"][0] - res["acc"][1]
        speed = _speedup(ratios, label)
        out.append(
            f"- {label} allocation, 50 % of the channels pruned: {100 * fewer:.0f} % fewer "
            "parameters "
            f"({_verdict(fewer >= 0.4)}), accuracy {res['acc'][0]:.3f} -> {res['acc'][1]:.3f} "
            f"({_verdict(drop <= 0.015)}), MC-32 latency {speed:.2f}x the unpruned file "
            f"({_verdict(speed <= 0.7)})")
    return out


def pruning_block(args, ratios, pruned) -> str:
    """The pruning paragraph and table of the markdown block."""
    prune_rows = [[label, f"{a:,} -> {b:,}", f"{f0:,} -> {f1:,}",
                   f"{res['acc'][0]:.3f} -> {res['acc'][1]:.3f}",
                   f"{_speedup(ratios, label):.2f}x"]
                  for label, res in pruned.items()
                  for (a, b), (f0, f1) in [(res["params"], res["flops"])]]
    return "\n\n".join([
        "Filter pruning, 50 % of the channels (`structure=\"filter\"`, L1; "
        f"{args.prune_epochs} fine-tuning epoch(s) with `UpdatePruning` at a quarter of the "
        "recipe's learning rate, then `pruning.shrink`). Allocations (`pruning.prune` "
        "options): " + "; ".join(f"`{name}`: `{ALLOCATIONS[name]}`" for name in args.allocations)
        + " (`scope=\"layer\"`: 50 % of every channel group; `\"global\"`: 50 % of all the "
        "channels in one ranking of normalised group scores; `min_channels`, `min_fraction`: "
        "the floor of every group). Parameters count every weight (a Bayesian kernel's "
        "mean, std and mask each):",
        common.markdown_table(["model, allocation", "parameters", "FLOPs per image", "accuracy",
                               "MC-32 latency vs unpruned"], prune_rows),
    ])


def markdown(args, recipe, rows, per_epoch, lat, ratios, pruned) -> str:
    ms = common.mean_std
    det_epoch = np.mean(per_epoch["deterministic"])
    table = []
    for label, rs in rows.items():
        col = {k: [r[k] for r in rs] for k in rs[0]}
        table.append([label, ms(col["acc"]), ms(col["nll"]), ms(col["ece"]),
                      ms(col["h_letters"]), ms(col["mi_letters"]), ms(col["h_noise"]),
                      ms(col["mi_noise"]), ms(col["shifted"]),
                      f"{np.mean(per_epoch[label]) / det_epoch:.2f}x"])
    header = ["model", "accuracy", "NLL", "ECE", "AUROC H letters", "AUROC MI letters",
              "AUROC H noise", "AUROC MI noise", "shifted acc", "train s/epoch vs det"]
    lat_rows = [[name, f"{r['ms']:.3f}", f"{ratios[name]:.2f}x", r["ops"],
                 r["partitions"] if r["partitions"] is not None else "?"]
                for name, r in lat.items()]
    from tfp_bcnn.models import MOBILENET_RECIPE

    note = (f"Training: `models.MOBILENET_RECIPE` (Adam {recipe['learning_rate']:g}, batch "
            f"{recipe['batch_size']}) for {recipe['epochs']} epochs"
            + ("." if recipe["epochs"] == MOBILENET_RECIPE["epochs"] else
               f" (the recipe says {MOBILENET_RECIPE['epochs']}: fewer, as the shared CPU "
               "allowed)."))
    return "\n\n".join([
        f"Seeds {args.seeds} (mean +- std over them; one seed has no std), "
        f"{args.train_size} training digits, {args.num_samples} Monte Carlo samples, deep "
        f"ensemble of {args.members}. {note} Latency: one image, one thread, every file "
        f"timed interleaved in one loop ({args.repeats} rounds), seed {args.seeds[0]}'s "
        "models; `partitions` are XNNPack delegate partitions.",
        common.markdown_table(header, table),
        "TFLite latency (32x32x3 input; median ms per call):",
        common.markdown_table(["file", "ms", "vs deterministic", "ops", "partitions"],
                              lat_rows),
        pruning_block(args, ratios, pruned),
        "Targets of issue 21:\n\n" + "\n".join(targets(rows, ratios, pruned)),
    ])


def _seed_label(label: str, seed: int) -> str:
    return f"{label} s{seed}"


def _summary(pruned, seeds) -> dict:
    """``{"<model>, <allocation>": {"fewer", "flops", "acc0", "acc1", "speed"}: lists}``.

    One value per seed of every figure: the fraction of parameters removed,
    FLOPs after / before, MC-32 accuracy before and after, MC-32 latency of
    the pruned file / its unpruned file.
    """
    out = {}
    for key, res in pruned.items():
        model, name = key.rsplit(", ", 1)
        for seed in seeds:
            suffix = f" s{seed}"
            if model.endswith(suffix):
                model = model[:-len(suffix)]
        row = out.setdefault(f"{model}, {name}", {k: [] for k in
                                                 ("fewer", "flops", "acc0", "acc1", "speed")})
        row["fewer"].append(1 - res["params"][1] / res["params"][0])
        row["flops"].append(res["flops"][1] / res["flops"][0])
        row["acc0"].append(res["acc"][0])
        row["acc1"].append(res["acc"][1])
        row["speed"].append(res["speed"])
    return out


def summary_block(summary) -> str:
    """The mean +- std table over seeds and the pruning targets on the means."""
    ms = common.mean_std
    rows, lines = [], []
    for key, r in summary.items():
        drop = [a - b for a, b in zip(r["acc0"], r["acc1"])]
        rows.append([key, ms([100 * v for v in r["fewer"]], 1) + " %", ms(r["flops"], 2),
                     ms(r["acc0"]), ms(r["acc1"]), ms([-100 * d for d in drop], 1),
                     ms(r["speed"], 2) + "x"])
        fewer, d, speed = (float(np.mean(v)) for v in (r["fewer"], drop, r["speed"]))
        lines.append(
            f"- {key}: {100 * fewer:.0f} % fewer parameters ({_verdict(fewer >= 0.4)}), "
            f"accuracy {-100 * d:+.1f} points ({_verdict(d <= 0.015 + 1e-9)}), MC-32 latency "
            f"{speed:.2f}x the unpruned file ({_verdict(speed <= 0.7)})")
    table = common.markdown_table(
        ["model, allocation", "fewer parameters", "FLOPs after / before", "accuracy before",
         "accuracy after", "change (points)", "MC-32 latency vs unpruned"], rows)
    return ("Over the seeds (mean +- std; accuracy: MC-32 on the 1,000 test digits):\n\n"
            + table + "\n\nPruning targets of issue 21 (on the means over the seeds):\n\n"
            + "\n".join(lines))


def pruning_only(args, recipe, data) -> dict:
    """``--pruning-only``: the models of `PRUNED`, every seed, pruned per allocation, timed.

    Every file (each seed's unpruned and pruned MC-32 files) is timed in one
    interleaved loop; a pruned file's latency is taken against its own
    seed's unpruned file.
    """
    from tfp_bcnn import export

    x, y = data["train"]
    nets, pruned = {}, {}
    for seed in args.seeds:
        labels = []
        for label in args.pruned_models:
            common.log(f"seed {seed}: training {label}")
            labels.append(_seed_label(label, seed))
            nets[labels[-1]], _ = common.train(build(label, seed, len(x)), x, y,
                                               recipe=recipe, seed=seed)
        pruned.update(prune(nets, data, recipe, args.prune_epochs, args.allocations, labels))
        if args.json:  # the pruning results survive a failure in the latency stage
            common.write_json(args.json + ".pruned.json",
                              {k: {kk: v for kk, v in r.items() if kk != "model"}
                               for k, r in pruned.items()})
    with tempfile.TemporaryDirectory() as tmp:
        files = {f"{label} MC-32": export.to_tflite(nets[label], Path(tmp) / f"b{i}.tflite",
                                                    num_samples=32)
                 for i, label in enumerate(nets)}
        for i, (label, res) in enumerate(pruned.items()):
            files[f"{label} pruned 50 % MC-32"] = export.to_tflite(
                res["model"], Path(tmp) / f"p{i}.tflite", num_samples=32)
        lat = _latency.time_tflite_files(files, repeats=args.repeats)
    base = next(iter(files))
    ratios = _latency.ratios(lat, base)
    for label, res in pruned.items():
        res["speed"] = _speedup(ratios, label)
    summary = _summary(pruned, args.seeds)
    lat_rows = [[name, f"{r['ms']:.3f}", f"{ratios[name]:.2f}x", r["ops"]]
                for name, r in lat.items()]
    text = "\n\n".join([
        f"`--pruning-only`: seeds {args.seeds} (`sN` in the labels), {args.train_size} "
        f"training digits, `models.MOBILENET_RECIPE` for {recipe['epochs']} epochs; only the "
        "models that are pruned are trained. TFLite latency (32x32x3, one image, one thread, "
        f"every file timed interleaved in one loop, {args.repeats} rounds; median ms):",
        common.markdown_table(["file", "ms", f"vs {base}", "ops"], lat_rows),
        pruning_block(args, ratios, pruned),
        summary_block(summary),
    ])
    common.emit(args.markdown, text)
    return {"ratios": ratios, "summary": summary,
            "pruned": {k: {kk: v for kk, v in r.items() if kk != "model"}
                       for k, r in pruned.items()}}


def main(argv=None) -> dict:
    from tfp_bcnn import models

    args = parse_args(argv)
    recipe = dict(models.MOBILENET_RECIPE)
    if args.epochs is not None:
        recipe["epochs"] = args.epochs
    data = load_data(args.train_size, args.letters_per_class)
    if args.pruning_only:
        result = pruning_only(args, recipe, data)
        common.write_json(args.json, result)
        return result
    rows, per_epoch, nets = train_all(args, data, recipe)
    if args.json:  # the quality rows survive a failure in the later stages
        common.write_json(args.json + ".rows.json", {"rows": rows, "per_epoch": per_epoch})
    pruned = prune(nets, data, recipe, args.prune_epochs, args.allocations, args.pruned_models)
    with tempfile.TemporaryDirectory() as tmp:
        lat, ratios = latency(nets, pruned, args.repeats, tmp)
    text = markdown(args, recipe, rows, per_epoch, lat, ratios, pruned)
    common.emit(args.markdown, text)
    result = {"rows": rows, "per_epoch": per_epoch, "ratios": ratios,
              "latency": {k: {kk: v for kk, v in r.items() if kk in ("ms", "ops", "partitions")}
                          for k, r in lat.items()},
              "pruned": {k: {kk: v for kk, v in r.items() if kk != "model"}
                         for k, r in pruned.items()}}
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
