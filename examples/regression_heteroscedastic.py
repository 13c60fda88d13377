"""Heteroscedastic 1-D regression: aleatoric vs epistemic variance in and out of range.

Shows the regression side of tfp_bcnn. The data are ``y = x sin(x) + eps``
with noise whose std grows with ``|x|`` (``eps ~ N(0, (0.1 + 0.2 |x|)^2)``),
for ``x`` drawn in ``[-x_max, x_max]``. The model is an MLP of
``DenseFlipout`` layers ending in a ``GaussianHead`` (a mean and a softplus
std per target), trained with ``tfp_bcnn.gaussian_nll`` plus the layers' KL
(scaled by ``1 / N``): the per-example negative ELBO.

``tfp_bcnn.predict`` then splits the predictive variance by the law of total
variance (Kendall & Gal 2017, https://arxiv.org/abs/1703.04977)::

    Var[y] = mean_s sigma_s(x)^2  +  Var_s mu_s(x)
           = aleatoric            +  epistemic

On a grid wider than the training range the example prints both parts
in range and out of range: the aleatoric part follows the noise of the data
(growing with ``|x|``), the epistemic part is small where there are data and
grows where there are none. Writes ``regression.png`` (predictive mean with
its bands, and the two standard deviations against ``x``).

Run (about 15 s on 2 CPU cores)::

    python examples/regression_heteroscedastic.py
    python examples/regression_heteroscedastic.py --epochs 400 --hidden 64
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# TensorFlow logs: warnings and info off (TF_CPP_MIN_LOG_LEVEL=0 brings them back);
# tfp_bcnn is imported first so that it hides TensorFlow's start-up lines
# (TFP_BCNN_VERBOSE=1 shows them).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfp_bcnn as bcnn  # noqa: E402  (before keras)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tfp_bcnn import layers  # noqa: E402


def noise_std(x):
    """True std of the noise at ``x``."""
    return 0.1 + 0.2 * np.abs(x)


def make_data(n: int, x_max: float, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-x_max, x_max, size=(n, 1)).astype(np.float32)
    y = (x * np.sin(x) + noise_std(x) * rng.standard_normal((n, 1))).astype(np.float32)
    return x, y


def build_model(num_train_examples: int, hidden: int, posterior_std_init: float,
                seed: int) -> keras.Model:
    """Input (1) -> DenseFlipout x2 (relu) -> GaussianHead (mean, std)."""
    kwargs = dict(kl_weight=1.0 / num_train_examples, posterior_std_init=posterior_std_init)
    return keras.Sequential(
        [
            keras.Input((1,), name="x"),
            layers.DenseFlipout(hidden, activation="relu", seed=seed, name="fc1", **kwargs),
            layers.DenseFlipout(hidden, activation="relu", seed=seed + 1, name="fc2", **kwargs),
            layers.GaussianHead(1, name="head"),
        ],
        name="bayesian_mlp",
    )


def plot(path, x, y, grid, p, x_max):
    mean = p.mean[:, 0]
    epi = np.sqrt(p.epistemic_variance[:, 0])
    ale = np.sqrt(p.aleatoric_variance[:, 0])
    total = p.std[:, 0]
    g = grid[:, 0]
    figure = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for ax in (left, right):
        ax.axvspan(-x_max, x_max, color="0.92", zorder=0, label="training range")
    left.scatter(x[:, 0], y[:, 0], s=6, color="0.35", alpha=0.6, label="training data")
    left.plot(g, g * np.sin(g), "k--", linewidth=1, label="x sin x")
    left.fill_between(g, mean - 2 * total, mean + 2 * total, color="C0", alpha=0.2,
                      label="mean ± 2 total std")
    left.fill_between(g, mean - 2 * epi, mean + 2 * epi, color="C3", alpha=0.35,
                      label="mean ± 2 epistemic std")
    left.plot(g, mean, color="C0", linewidth=2, label="predictive mean")
    left.set_ylim(-10, 10)
    left.set_xlabel("x")
    left.set_ylabel("y")
    left.legend(fontsize=7, loc="lower center")
    right.plot(g, ale, color="C0", label="aleatoric std (predicted noise)")
    right.plot(g, noise_std(g), "k--", linewidth=1, label="true noise std")
    right.plot(g, epi, color="C3", label="epistemic std (model uncertainty)")
    right.set_xlabel("x")
    right.set_ylabel("std")
    right.legend(fontsize=7, loc="upper center")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    figure.suptitle("Bayesian MLP (DenseFlipout + GaussianHead) on heteroscedastic data")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--x-max", type=float, default=3.0, help="training x in [-x_max, x_max]")
    parser.add_argument("--grid-max", type=float, default=6.0,
                        help="prediction grid in [-grid_max, grid_max]")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--posterior-std-init", type=float, default=0.02)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--num-samples", type=int, default=64,
                        help="Monte Carlo samples per prediction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir",
                        default=os.path.join("example_outputs", "regression_heteroscedastic"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Train, predict on a wide grid, compare the two variances; returns the key numbers."""
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    start = time.time()

    x, y = make_data(args.n_train, args.x_max, args.seed)
    model = build_model(len(x), args.hidden, args.posterior_std_init, args.seed)
    model.compile(keras.optimizers.Adam(args.learning_rate), loss=bcnn.gaussian_nll,
                  metrics=[bcnn.KLDivergence(model)])
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    logs = {k: v[-1] for k, v in history.history.items()}
    print(f"trained {args.epochs} epochs on {len(x)} points: loss {logs['loss']:.3f} "
          f"(of which KL / N {logs['kl']:.3f})")

    grid = np.linspace(-args.grid_max, args.grid_max, 241, dtype=np.float32)[:, None]
    p = bcnn.predict(model, grid, num_samples=args.num_samples)
    g = np.abs(grid[:, 0])
    regions = {
        "in range": g <= args.x_max,
        "out of range": g >= args.x_max + 0.5 * (args.grid_max - args.x_max),
    }
    print(f"\n{'region':<14}{'|x|':>12}{'aleatoric var':>15}{'epistemic var':>15}"
          f"{'true noise var':>16}")
    summary = {}
    for name, mask in regions.items():
        lo, hi = g[mask].min(), g[mask].max()
        summary[name] = {
            "aleatoric_variance": float(p.aleatoric_variance[mask, 0].mean()),
            "epistemic_variance": float(p.epistemic_variance[mask, 0].mean()),
            "true_noise_variance": float(np.mean(noise_std(grid[mask, 0]) ** 2)),
        }
        s = summary[name]
        print(f"{name:<14}{f'{lo:.1f}-{hi:.1f}':>12}{s['aleatoric_variance']:>15.4f}"
              f"{s['epistemic_variance']:>15.4f}{s['true_noise_variance']:>16.4f}")
    ratio = (summary["out of range"]["epistemic_variance"]
             / summary["in range"]["epistemic_variance"])
    # Inside the training range the predicted noise should grow with |x| like the truth.
    centre, edge = g <= 1.0, (g >= 2.0) & (g <= args.x_max)
    ale_centre = float(np.sqrt(p.aleatoric_variance[centre, 0]).mean())
    ale_edge = float(np.sqrt(p.aleatoric_variance[edge, 0]).mean())
    rmse = float(np.sqrt(np.mean((p.mean[regions["in range"], 0]
                                  - (grid * np.sin(grid))[regions["in range"], 0]) ** 2)))
    print(f"\nepistemic variance out of range / in range: {ratio:.1f}x")
    print(f"aleatoric std in range: {ale_centre:.3f} at |x| <= 1, {ale_edge:.3f} at "
          f"2 <= |x| <= {args.x_max:g} (true {noise_std(0.5):.2f} and "
          f"{noise_std(0.5 * (2 + args.x_max)):.2f})")
    print(f"RMSE of the mean against x sin x in range: {rmse:.3f}")
    path = plot(out_dir / "regression.png", x, y, grid, p, args.x_max)
    print(f"wrote {path}")
    elapsed = time.time() - start
    print(f"done in {elapsed:.1f} s")
    return {
        "in_range": summary["in range"],
        "out_of_range": summary["out of range"],
        "epistemic_ratio": ratio,
        "aleatoric_std_centre": ale_centre,
        "aleatoric_std_edge": ale_edge,
        "rmse_in_range": rmse,
        "final_loss": float(logs["loss"]),
        "grid": grid,
        "prediction": p,
        "files": {"plot": str(path)},
        "seconds": elapsed,
    }


if __name__ == "__main__":
    main()
