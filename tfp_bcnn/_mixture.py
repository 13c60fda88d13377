"""Models whose posterior is a mixture of K components (rank-1 mixture layers).

A rank-1 mixture layer maps the ``B`` rows of a batch to its K components in
contiguous blocks, row ``i`` to component ``floor(i * K / B)``
(`tfp_bcnn.layers.Rank1Layer`). ``predict`` tiles a batch of N examples
S times, sample-major (row ``s * N + n``), so with S a multiple of K sample
``s`` of every example comes from component ``floor(s * K / S)``: the
samples are spread evenly over the components, S / K each, and the
predictive is the equal-weight mixture. A ``num_samples`` that is not a
multiple of K is refused (it would give some examples more samples of one
component than of another).

With ``method="moments"`` the batch is tiled K times (row ``k * N + n`` is
component ``k``), one moment pass gives a Gaussian of the logits per component
and example, and sample ``s`` is drawn from the Gaussian of component
``floor(s * K / S)``: the mixture of the K logit Gaussians, sampled at the end.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from ._compat import all_layers
from .layers import Rank1Layer
from .moments import MomentsSampler, _softmax, head_outputs

__all__ = ["num_components", "check_num_samples", "sample_components", "MixtureMomentsSampler"]


def num_components(model) -> int | None:
    """K of the model's rank-1 mixture layers, or None when it has none.

    Raises:
        ValueError: layers with different K (no common row-to-component map).
    """
    ks = {layer.num_components for layer in all_layers(model, include_self=True)
          if isinstance(layer, Rank1Layer)}
    if len(ks) > 1:
        raise ValueError(
            "Every rank-1 mixture layer of a model must have the same num_components. "
            f"Received: num_components={sorted(ks)}")
    return ks.pop() if ks else None


def check_num_samples(model, num_samples: int) -> int | None:
    """K of ``model`` (None if not a mixture) after checking that K divides ``num_samples``.

    Raises:
        ValueError: ``num_samples`` not a multiple of K.
    """
    k = num_components(model)
    if k is not None and num_samples % k:
        raise ValueError(
            f"A rank-1 mixture model with num_components={k} spreads its samples evenly over "
            f"the components: num_samples must be a multiple of {k} (e.g. "
            f"{k * max(1, round(num_samples / k))}). Received: num_samples={num_samples}")
    return k


def sample_components(num_samples: int, k: int) -> np.ndarray:
    """``(S,)`` component of each sample, ``floor(s * K / S)`` (S / K of each)."""
    return (np.arange(num_samples) * k) // num_samples


class MixtureMomentsSampler(MomentsSampler):
    """`tfp_bcnn.moments.MomentsSampler` for a mixture: K moment passes, mixed draws.

    The chunk ``(b, ...)`` is tiled K times; the compiled moment pass gives
    means and variances ``(K, b, C)``; sample ``s`` is
    ``z_s = mean[k_s] + sqrt(var[k_s]) * eps_s`` with ``k_s = floor(s K / S)``.

    Args:
        num_components: K; the other arguments as `MomentsSampler`.
    """

    def __init__(self, model, x_example, num_samples: int, from_logits: bool,
                 num_components: int, max_pool: str = "separate"):
        super().__init__(model, x_example, num_samples, from_logits, max_pool)
        self.num_components = int(num_components)

    def __call__(self, x):
        k, b = self.num_components, len(x)
        tiled = np.tile(np.asarray(x), (k,) + (1,) * (np.ndim(x) - 1))
        mean, var = (np.asarray(ops.convert_to_numpy(t), np.float64) for t in self._fn(tiled))
        mean = mean.reshape((k, b) + mean.shape[1:])
        var = var.reshape((k, b) + var.shape[1:])
        comp = sample_components(self.num_samples, k)
        eps = np.random.standard_normal((self.num_samples, *mean.shape[1:]))
        z = mean[comp] + np.sqrt(np.maximum(var[comp], 0.0)) * eps
        if self.output == "gaussian_head":
            return head_outputs(self.head, z).astype(np.float32)
        return _softmax(z).astype(np.float32)
