"""Priors over the weights of Bayesian layers, and their KL to the posterior.

Every prior is a small serializable object (registered with Keras, never a
lambda) with one method the layers use::

    prior.kl(loc, scale, sample) -> elementwise KL(q || p) estimate

where ``q = N(loc, scale)`` is the mean-field posterior of each weight and
``sample`` is a weight tensor drawn from ``q`` in the same forward pass. The
result has the shape of ``loc``; layers multiply it by the pruning mask and
sum it. The direction is always KL(posterior || prior):

    KL(q || p) = E_q[log q(w) - log p(w)].

* ``Normal`` has the closed form (no sampling noise).
* ``ScaleMixtureNormal`` (Blundell et al. 2015, https://arxiv.org/abs/1505.05424)
  has no closed form; the single-sample Monte Carlo estimate
  ``log q(w) - log p(w)`` at the drawn ``w`` is unbiased.
* ``Cauchy`` (heavy tails, for Cauchy posteriors) has no closed form either:
  the same single-sample estimate.
* ``TFPPrior`` wraps any ``tfp.distributions`` distribution (TensorFlow backend):
  analytic KL through TFP's registry where one is registered, else the Monte
  Carlo estimate with the distribution's ``log_prob``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from . import _validation as check

__all__ = ["Prior", "Normal", "ScaleMixtureNormal", "Cauchy", "TFPPrior", "get"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _normal_log_prob(x, loc, scale):
    z = (x - loc) / scale
    return -0.5 * ops.square(z) - ops.log(scale) - _HALF_LOG_2PI


class Prior:
    """Base class of weight priors.

    Subclasses implement :meth:`kl` and :meth:`get_config`.
    """

    #: True when :meth:`kl` needs the weights drawn in the same call.
    needs_sample = False

    def kl(self, loc, scale, sample):
        """Elementwise KL(N(loc, scale) || prior) (or its estimate at ``sample``)."""
        raise NotImplementedError

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(self.get_config())))


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class Normal(Prior):
    """Isotropic normal prior ``p(w) = N(loc, scale^2)`` with the closed-form KL.

    For ``q = N(m, s^2)``::

        KL(q || p) = log(scale / s) + (s^2 + (m - loc)^2) / (2 scale^2) - 1/2

    Args:
        loc: prior mean.
        scale: prior standard deviation, > 0.

    Example:
    >>> from tfp_bcnn import priors
    >>> priors.Normal(0.0, 1.0)
    Normal(loc=0.0, scale=1.0)
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        self.loc = float(loc)
        self.scale = check.positive_float("scale", scale)

    def kl(self, loc, scale, sample=None):
        # (s^2 + (m - loc)^2) / (2 scale^2) - log s + (log scale - 1/2): the
        # closed form above with the constants folded (fewer ops per step).
        centred = loc if self.loc == 0.0 else loc - self.loc
        quad = (ops.square(scale) + ops.square(centred)) * (0.5 / self.scale**2)
        return quad - ops.log(scale) + (math.log(self.scale) - 0.5)

    def log_prob(self, x):
        return _normal_log_prob(x, self.loc, self.scale)

    def get_config(self):
        return {"loc": self.loc, "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class ScaleMixtureNormal(Prior):
    """Blundell's scale mixture ``mix N(0, scale1^2) + (1 - mix) N(0, scale2^2)``.

    A wide component and a narrow spike at zero; it has no closed-form KL to a
    normal posterior, so the layers use the single-sample Monte Carlo estimate
    ``log q(w) - log p(w)`` at the weights ``w`` drawn in the same forward pass
    (unbiased; its noise averages out over training steps).

    Args:
        mix: weight of the first component, in (0, 1].
        scale1: standard deviation of the first component, > 0.
        scale2: standard deviation of the second component, > 0.
    """

    needs_sample = True

    def __init__(self, mix: float = 0.5, scale1: float = 1.0, scale2: float = 0.0025):
        self.mix = check.fraction("mix", mix, include_zero=False, include_one=True)
        self.scale1 = check.positive_float("scale1", scale1)
        self.scale2 = check.positive_float("scale2", scale2)

    def log_prob(self, x):
        lp1 = _normal_log_prob(x, 0.0, self.scale1) + math.log(self.mix)
        if self.mix == 1.0:
            return lp1
        lp2 = _normal_log_prob(x, 0.0, self.scale2) + math.log1p(-self.mix)
        return ops.logaddexp(lp1, lp2)

    def kl(self, loc, scale, sample):
        return _normal_log_prob(sample, loc, scale) - self.log_prob(sample)

    def get_config(self):
        return {"mix": self.mix, "scale1": self.scale1, "scale2": self.scale2}


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class Cauchy(Prior):
    """Cauchy prior ``p(w) = 1 / (pi scale (1 + ((w - loc) / scale)^2))``.

    Heavy-tailed: the prior for Cauchy posteriors (rank-1 mixture layers with
    ``posterior="cauchy"``), whose KL to a normal prior is infinite. No closed
    form: the single-sample estimate ``log q(w) - log p(w)`` at the drawn ``w``.

    Args:
        loc: location (the median).
        scale: half width at half maximum, > 0.
    """

    needs_sample = True

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        self.loc = float(loc)
        self.scale = check.positive_float("scale", scale)

    def log_prob(self, x):
        z = (x - self.loc) / self.scale
        return -ops.log1p(ops.square(z)) - math.log(math.pi * self.scale)

    def kl(self, loc, scale, sample):
        return _normal_log_prob(sample, loc, scale) - self.log_prob(sample)

    def get_config(self):
        return {"loc": self.loc, "scale": self.scale}


def _to_list(value):
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class TFPPrior(Prior):
    """Any ``tfp.distributions`` distribution as a prior (TensorFlow backend).

    The KL uses ``tfp.distributions.kl_divergence(q, prior)`` when TFP has an
    analytic KL registered for (Normal, type(prior)); otherwise the single-sample
    Monte Carlo estimate ``q.log_prob(w) - prior.log_prob(w)``. Serialized by
    the distribution's class name and its numeric parameters, so it survives a
    ``.keras`` round trip for the usual parameterised distributions.

    Args:
        distribution: a ``tfp.distributions.Distribution`` instance with scalar
            (or kernel-broadcastable) batch shape.

    Example:
    >>> import tensorflow_probability as tfp
    >>> prior = TFPPrior(tfp.distributions.Laplace(0.0, 1.0))
    """

    def __init__(self, distribution):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "A tfp.distributions prior needs the TensorFlow backend. "
                f"Received: backend={keras.backend.backend()!r}"
            )
        import tensorflow_probability as tfp

        if not isinstance(distribution, tfp.distributions.Distribution):
            raise ValueError(
                "`distribution` must be a tfp.distributions.Distribution. "
                f"Received: distribution={distribution!r}"
            )
        self.distribution = distribution
        self._analytic = None

    @property
    def needs_sample(self):
        return not self._has_analytic()

    def _has_analytic(self):
        if self._analytic is None:
            import tensorflow_probability as tfp

            tfd = tfp.distributions
            try:
                tfd.kl_divergence(tfd.Normal(0.0, 1.0), self.distribution)
                self._analytic = True
            except NotImplementedError:
                self._analytic = False
        return self._analytic

    def kl(self, loc, scale, sample):
        import tensorflow_probability as tfp

        q = tfp.distributions.Normal(loc, scale)
        if self._has_analytic():
            return tfp.distributions.kl_divergence(q, self.distribution)
        return q.log_prob(sample) - self.distribution.log_prob(sample)

    def get_config(self):
        params = {}
        for key, value in self.distribution.parameters.items():
            if value is None or isinstance(value, (bool, str)):
                params[key] = value
                continue
            try:
                params[key] = _to_list(value)
            except Exception:  # a non-numeric parameter (a callable, a distribution)
                raise ValueError(
                    f"Cannot serialize the parameter {key!r} of "
                    f"{type(self.distribution).__name__}. Received: {key}={value!r}"
                ) from None
        return {"class_name": type(self.distribution).__name__, "parameters": params}

    @classmethod
    def from_config(cls, config):
        import tensorflow_probability as tfp

        dist_cls = getattr(tfp.distributions, config["class_name"])
        return cls(dist_cls(**config["parameters"]))


_BY_NAME = {"normal": Normal, "scale_mixture_normal": ScaleMixtureNormal}


def get(identifier) -> Prior:
    """Resolve a prior from an instance, a name, a config dict or a TFP distribution.

    Raises:
        ValueError: for anything that is not a prior.
    """
    if identifier is None:
        return Normal(0.0, 1.0)
    if isinstance(identifier, Prior):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(
                f"Unknown prior {identifier!r}; expected one of {sorted(_BY_NAME)}, a "
                f"tfp_bcnn.priors.Prior or a tfp distribution. Received: prior={identifier!r}"
            )
        return _BY_NAME[key]()
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, Prior):
            return obj
        raise ValueError(f"The config does not describe a prior. Received: prior={identifier!r}")
    if type(identifier).__module__.startswith("tensorflow_probability"):
        return TFPPrior(identifier)
    raise ValueError(
        "`prior` must be a tfp_bcnn.priors.Prior, a name, or a tfp distribution. "
        f"Received: prior={identifier!r}"
    )
