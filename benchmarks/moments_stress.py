"""Moments vs Monte Carlo on dense, high-contrast inputs: which rule loses the ranking.

The main job's Flipout LeNet-5 (trained as in ``benchmarks/moments.py``:
``models.lenet5`` defaults, Adam 2e-3, batch 64, ``--epochs`` on the 4,000
MNIST-5k training images) scores the first ``--images`` MNIST test images
against out-of-distribution sets of as many images by mutual information
(MI AUROC):

* ``letters``: rendered letters A-J (sparse strokes, as in ``moments.py``);
* ``blocks``: a 7x7 grid of 4x4 pixel blocks, each on (1) or off (0) with
  probability 1/2: half the pixels active, hard edges everywhere;
* ``stripes``: binary gratings, random orientation, period 3-8 pixels and
  phase: half the pixels active, one long-range pattern.

Scored by ``moments`` (``predict(method="moments")``, separate max
pooling), ``moments (Clark)``, ``MC-32`` and three hybrids that locate the
loss: the first layers run on ``S`` = 32 sampled kernels (one draw per
sample, shared by every position, as Monte Carlo), the rest as moments
(`tfp_bcnn.moments.propagate` on the remaining layers), one logit draw per
sample:

* ``conv1 sampled``: conv1 and pool1 exact per sample; the moment rules of
  conv2 (diagonal), its ReLU and max pool, and the dense layers remain;
* ``conv1 sampled, conv2 drawn per position``: conv2 sampled too, but with
  an independent draw per position and unit (local reparameterization:
  its output marginals exact, the correlation its shared kernel creates
  dropped), so pool2's max acts on samples: separates conv2's correlation
  from the max-pool rule;
* ``conv1 + conv2 sampled``: conv2's shared kernel sampled as well; only
  the dense layers' moments remain.

    python benchmarks/moments_stress.py --seeds 0 --epochs 20
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import emit, markdown_table, mean_std  # noqa: E402
from keras import ops  # noqa: E402

import tfp_bcnn  # noqa: E402
from tfp_bcnn import datasets, metrics, moments  # noqa: E402
from tfp_bcnn.layers import BayesianLayer  # noqa: E402
from tfp_bcnn.uncertainty import decompose  # noqa: E402

SAMPLES = 32
SETS = ("letters", "blocks", "stripes")
#: Issue 22: MI AUROC of moments within this of MC-32's on every OOD set.
TARGET_GAP = 0.02


def stress_sets(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{"blocks", "stripes"}``: ``(n, 28, 28, 1)`` float32 images in {0, 1}."""
    blocks = (rng.random((n, 7, 7)) < 0.5).astype("float32")
    yy, xx = np.mgrid[:28, :28]
    theta, period = rng.uniform(0, np.pi, n), rng.uniform(3, 8, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    along = np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy
    stripes = np.sin(along * (2 * np.pi / period)[:, None, None] + phase[:, None, None]) > 0
    return {"blocks": np.kron(blocks, np.ones((4, 4), "float32"))[..., None],
            "stripes": stripes.astype("float32")[..., None]}


def _sampled(layer, h, rng, per_position: bool):
    """One draw of a Bayesian layer's output on a deterministic input ``h``."""
    kernel, kernel_var, bias, bias_var = moments.default_kernel_moments(layer)
    if per_position:  # independent per output: exact marginals, no correlation
        mean = layer.linear(h, kernel)
        std = ops.sqrt(layer.linear(ops.square(h), kernel_var))
        y = mean + std * rng.standard_normal(tuple(mean.shape)).astype("float32")
    else:  # one kernel shared by every position, as Monte Carlo
        noise = rng.standard_normal(tuple(kernel.shape)).astype("float32")
        y = layer.linear(h, kernel + ops.sqrt(kernel_var) * noise)
    if bias is not None:
        if bias_var is not None:
            noise = rng.standard_normal(tuple(bias.shape)).astype("float32")
            bias = bias + ops.sqrt(bias_var) * noise
        y = y + bias
    return layer.activation(y)


def hybrid(model, x, k: int, rng, per_position=()):
    """`decompose`d predictions: ``model.layers[:k]`` sampled, the rest as moments."""
    rest = keras.Sequential([keras.Input(model.layers[k - 1].output.shape[1:]),
                             *model.layers[k:]])
    probs = []
    for _ in range(SAMPLES):
        h = ops.convert_to_tensor(x)
        for layer in model.layers[:k]:
            h = (_sampled(layer, h, rng, layer.name in per_position)
                 if isinstance(layer, BayesianLayer) else layer(h))
        out = moments.propagate(rest, h)
        mean, var = (np.asarray(ops.convert_to_numpy(t), np.float64)
                     for t in (out.mean, out.variance))
        z = mean + np.sqrt(np.maximum(var, 0.0)) * rng.standard_normal(mean.shape)
        z -= z.max(axis=-1, keepdims=True)
        probs.append(np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True))
    return decompose(np.stack(probs).astype("float32"))


def methods(model, rng):
    """name -> ``x -> decomposed predictions``."""
    from moments import _clark_predict

    return {
        "moments": lambda x: tfp_bcnn.predict(model, x, num_samples=SAMPLES,
                                              method="moments"),
        "moments (Clark)": lambda x: _clark_predict(model, x, SAMPLES),
        "MC-32": lambda x: tfp_bcnn.predict(model, x, num_samples=SAMPLES, method="mc"),
        "conv1 sampled": lambda x: hybrid(model, x, 1, rng),
        "conv1 sampled, conv2 drawn per position":
            lambda x: hybrid(model, x, 3, rng, per_position=("conv2",)),
        "conv1 + conv2 sampled": lambda x: hybrid(model, x, 3, rng),
    }


def run(seed: int, epochs: int, images: int) -> dict:
    from moments import train

    (x_train, y_train), (x_test, _) = datasets.mnist_5k()
    model, _ = train(x_train, y_train, epochs, 64, 2e-3, seed)
    rng = np.random.default_rng(seed)
    sets = {"test": x_test[:images], "letters": datasets.letters()[0][:images],
            **stress_sets(images, rng)}
    out = {}
    for name, predict in methods(model, rng).items():
        t0 = time.perf_counter()
        mi = {k: np.asarray(predict(x).epistemic) for k, x in sets.items()}
        out[name] = {k: metrics.ood_auroc(mi["test"], mi[k]) for k in SETS}
        out[name]["seconds"] = time.perf_counter() - t0
        print(seed, name, out[name], file=sys.stderr, flush=True)
    return out


def markdown(runs: list[dict], args) -> str:
    """The block: MI AUROC per method and set, gaps to MC-32, the targets."""
    names = list(runs[0])
    rows = [[name, *(mean_std([r[name][s] for r in runs], 4) for s in SETS)]
            for name in names]
    gap = {s: float(np.mean([r["moments"][s] - r["MC-32"][s] for r in runs])) for s in SETS}
    lines = [
        f"Flipout LeNet-5 as in the moments section ({args.epochs} epochs, seeds "
        f"{', '.join(map(str, args.seeds))}); MI AUROC of the first {args.images} MNIST "
        f"test images against {args.images} images of each set (S = {SAMPLES}).\n",
        markdown_table(["MI AUROC", *SETS], rows), "",
        markdown_table(["target (issue 22)", "met", "moments - MC-32"],
                       [[f"MI AUROC vs {s} within {TARGET_GAP} of MC-32",
                         "yes" if gap[s] >= -TARGET_GAP else "**no**", f"{gap[s]:+.4f}"]
                        for s in SETS]),
        "", reading(runs),
    ]
    return "\n".join(lines)


def reading(runs: list[dict]) -> str:
    """Which hybrid closes the moments-to-MC-32 gap on the dense sets."""
    def mean(name, s):
        return float(np.mean([r[name][s] for r in runs]))

    per_set = []
    for s in SETS[1:]:
        mc = mean("MC-32", s)
        per_set.append(
            f"{s}: moments {mean('moments', s) - mc:+.4f} from MC-32, Clark "
            f"{mean('moments (Clark)', s) - mc:+.4f}, conv1 sampled "
            f"{mean('conv1 sampled', s) - mc:+.4f}, conv2 drawn per position "
            f"{mean('conv1 sampled, conv2 drawn per position', s) - mc:+.4f}, conv1 + conv2 "
            f"sampled {mean('conv1 + conv2 sampled', s) - mc:+.4f}")
    short = {s: mean("conv1 sampled, conv2 drawn per position", s) - mean("MC-32", s)
             for s in SETS[1:]}
    closed = all(g >= -TARGET_GAP / 2 for g in short.values())  # at or above MC-32
    verdict = (
        "drawing conv2 per position (its outputs' marginals exact, the correlation of its "
        "shared kernel dropped) brings the ranking up to MC-32's (or above), as sampling "
        "its shared kernel does: the ranking is lost in the moment rules applied to "
        "conv2's output (its ReLU and the 2x2 max pool on Gaussians, the separate and the "
        "Clark forms alike), not in the correlation a shared kernel creates, nor in "
        "conv1's rules (sampling conv1 alone does not help)"
        if closed else
        "drawing conv2 per position does not close the gap: the correlation that conv2's "
        "shared kernel creates is part of the loss")
    return (f"Reading (MI AUROC differences to MC-32, mean over {len(runs)} seed(s); on a "
            f"few hundred images per set, differences below ~0.01 are within the AUROC's "
            f"sampling noise): " + "; ".join(per_set) + f". So {verdict}.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--markdown", help="write the markdown block to this file")
    args = p.parse_args(argv)
    runs = [run(seed, args.epochs, args.images) for seed in args.seeds]
    emit(args.markdown, markdown(runs, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
