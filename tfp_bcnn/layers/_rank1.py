"""Rank-1 mixture layers: one shared kernel, K components of rank-1 factors.

Dusenberry et al. 2020, "Efficient and Scalable Bayesian Neural Nets with
Rank-1 Factors" (https://arxiv.org/abs/2005.07186). Every component ``k`` of
``K`` has its own multiplicative factors on the inputs and on the outputs of
one shared, deterministic kernel ``W`` (the point estimate, masked for
pruning), and its own bias::

    y = ((x o r_k) (*) (W o mask)) o s_k + b_k

``(*)`` a matrix product or convolution, ``o`` elementwise (``r_k`` has one
entry per input channel, ``s_k`` and ``b_k`` one per output channel; a
convolution broadcasts them over the spatial positions). The effective kernel
of component ``k`` is ``W o (r_k s_k^T)``: a rank-1 perturbation, ``in + out``
extra numbers per component instead of ``in * out``.

Posterior: a mixture with equal weights of the K components; in component
``k`` every factor entry is independent, ``N(mu, sigma^2)`` (``posterior=
"normal"``) or ``Cauchy(mu, sigma)`` (``posterior="cauchy"``, heavier tails),
``sigma = softplus(rho) + 1e-8``. The means start apart, so the components
begin in different modes of the posterior: at ``N(1, 0.5^2)`` by default
(``random_sign_init=-0.5``, the default of uncertainty-baselines' recipe), or
at random signs, +1 with probability ``random_sign_init`` > 0 and else -1.
The defaults were chosen on in-distribution validation data only
(``benchmarks/rank1_screen.py``: LeNet-5, 3,600 MNIST-5k training digits,
scored on 400 held-out ones, 20 epochs, 3 seeds; BENCHMARKS.md; nothing out
of distribution was looked at): random signs +-1 (validation NLL 0.059 +-
0.005, ECE 0.022) and factor scale 0.2 (NLL 0.055 +- 0.011, ECE 0.013,
accuracy 0.979) differ from the defaults (NLL 0.064 +- 0.024, ECE 0.018,
accuracy 0.983) by less than the seed-to-seed spread of the NLL, and not in
the same direction on every seed, so the defaults stayed; Cauchy factors
(scale 0.05, prior ``Cauchy(1, 1)``) diverged there (non-finite weights
within 2 epochs, and within 1 at scale 0.004: in a network without
normalisation layers, trained by Adam without gradient clipping, a draw of
100x the scale, once in about 160 factors, makes activations and gradients
overflow). More components win on every
validation metric (K = 8: NLL 0.044, ECE 0.009, 2 seeds) and so do more
epochs (40: NLL 0.039), each at twice the training cost: cost choices left to
the caller (``num_components``, the epochs).

Which row uses which component: a call on ``B`` rows splits them into K
contiguous blocks, row ``i`` (0-based) belongs to component
``floor(i * K / B)``. When K divides B these are K blocks of ``B / K`` rows;
otherwise the block sizes differ by one (so any batch size trains: the last,
short batch of ``model.fit`` included). Each row draws its own factors (fresh
noise per row, like Flipout). ``tfp_bcnn.predict`` tiles a batch of N
examples S times (row ``s * N + n``), so with S a multiple of K sample ``s``
of every example comes from component ``floor(s * K / S)``: each component
gives exactly ``S / K`` samples of every example. In training the same map
does the reference recipe (Dusenberry et al.'s code tiles images and labels
``ensemble_size`` times): `TileComponents` at the input of a rank-1 model
tiles the batch K times, so copy ``k`` of every example is in block ``k`` and
every example trains every component (``models.MixtureLoss`` averages the
likelihood over the copies; the KL below is added once per call).

Loss: each call adds ``kl_weight * (1 / K) sum_k KL(q_k || p)``, the KL of
every factor summed over entries and averaged over the components; by the
joint convexity of the KL this average bounds the KL of the mixture
posterior from above, so the Keras loss (``kl_weight = 1 / N``) stays an upper
bound of the per-example negative ELBO. The prior ``p`` is any
`tfp_bcnn.priors` prior (default ``Normal(1, 1)``: centred on the identity
factor, wide enough that a sign-flipped mode costs about 2 nats a factor;
``Cauchy(1, 1)`` for Cauchy factors, whose KL to any normal prior is infinite);
Normal posteriors use the prior's ``kl`` (closed form for ``Normal``), Cauchy
ones the one-sample estimate ``log q(z) - log p(z)``. The shared kernel gets
no KL (it is a point estimate, as in the paper); ``kernel_regularizer``
applies to it.

Moments (`propagate_moments`): for independent inputs ``x ~ N(m, v)``,
``z = (x o r) (*) W`` has mean ``(m mu_r) (*) W`` and variance
``[v (sigma_r^2 + mu_r^2) + m^2 sigma_r^2] (*) W^2`` (that is
``(v + m^2)(sigma_r^2 + mu_r^2) - m^2 mu_r^2``, without the cancellation),
and ``y = z o s + b`` has mean ``E[z] mu_s + b`` and variance
``Var[z](sigma_s^2 + mu_s^2) + E[z]^2 sigma_s^2`` (exact per output element; the
usual diagonal approximation drops the correlations between outputs). Cauchy factors have no
variance: their layers refuse moments.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
from keras import ops

from .. import _validation as check
from .. import priors as priors_lib
from ._base import (
    DRAW_SCOPE,
    SIGMA_FLOOR,
    BayesianLayer,
    _normalize_tuple,
    _ReplicaSeedGenerator,
    rho_from_sigma,
)

POSTERIORS = ("normal", "cauchy")

#: Added to every propagated variance (as `tfp_bcnn.moments.VAR_FLOOR`).
_VAR_FLOOR = 1e-12


def component_index(batch, num_components: int):
    """Component of each row of a batch: ``floor(i * K / B)`` for row ``i`` of ``B``.

    Args:
        batch: ``B``, an int or a scalar integer tensor (dynamic batch size).
        num_components: ``K``.

    Returns:
        ``(B,)`` int32 tensor with values in ``[0, K)``, non-decreasing.
    """
    rows = ops.arange(batch, dtype="int32")
    return ops.floor_divide(rows * num_components, ops.cast(batch, "int32"))


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class RandomSign(keras.initializers.Initializer):
    """+1 with probability ``p``, else -1 (the random-sign init of the factor means).

    Args:
        p: probability of +1, in (0, 1].
        seed: int seed.
    """

    def __init__(self, p: float = 0.5, seed=None):
        self.p = check.fraction("p", p, include_zero=False, include_one=True)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        rng = np.random.default_rng(self.seed)
        signs = np.where(rng.random(shape) < self.p, 1.0, -1.0)
        return ops.convert_to_tensor(signs, dtype=dtype or "float32")

    def get_config(self):
        return {"p": self.p, "seed": self.seed}


def _factor_prior(prior, posterior):
    """The prior of the factors: given, or ``Normal(1, 1)`` / ``Cauchy(1, 1)``.

    Raises:
        ValueError: a Cauchy posterior with a normal (or scale-mixture) prior:
            their KL is infinite (``E_q[w^2]`` diverges under a Cauchy ``q``).
    """
    if prior is None:
        return priors_lib.Cauchy(1.0, 1.0) if posterior == "cauchy" else priors_lib.Normal(1.0, 1.0)
    prior = priors_lib.get(prior)
    if posterior == "cauchy" and isinstance(prior, (priors_lib.Normal,
                                                    priors_lib.ScaleMixtureNormal)):
        raise ValueError(
            "KL(Cauchy posterior || normal prior) is infinite: give Cauchy factors a "
            "heavy-tailed prior, e.g. tfp_bcnn.priors.Cauchy(1.0, 1.0). "
            f"Received: prior={prior!r}")
    return prior


def factor_initializer(random_sign_init: float, seed=None):
    """``RandomSign(p)`` for ``p > 0``, else ``RandomNormal(1, |p|)`` (edward2's convention)."""
    if random_sign_init > 0:
        return RandomSign(random_sign_init, seed=seed)
    return keras.initializers.RandomNormal(1.0, -random_sign_init, seed=seed)


class Rank1Layer(keras.layers.Layer):
    """Rank-1 mixture layer (module docstring for the maths and the row mapping).

    Variables (float32 under any dtype policy, read without autocasting):
    ``kernel`` the shared ``W`` (``(in, units)`` or ``kernel_size + (in,
    units)``); ``kernel_mask`` (non-trainable ones, set by pruning; multiplies
    ``W`` everywhere); ``in_factor_loc`` / ``in_factor_rho`` ``(K, in)``;
    ``out_factor_loc`` / ``out_factor_rho`` ``(K, units)``; ``bias`` ``(K,
    units)`` (with ``use_bias``); ``kl_weight`` (non-trainable scalar).
    The noise and the linear maps are in the compute dtype, the KL in float32.

    Not used directly: `Rank1Dense` and `Rank1Conv1D/2D/3D` fix the rank.
    """

    _rank: int = 0

    def __init__(self, *, rank, units, num_components=4, kernel_size=None, strides=1,
                 padding="valid", data_format=None, dilation_rate=1, activation=None,
                 use_bias=True, posterior="normal", prior=None, posterior_std_init=0.05,
                 random_sign_init=-0.5, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kl_weight=1.0, seed=None, kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.rank = int(rank)
        self.units = check.positive_int("units" if self.rank == 0 else "filters", units)
        self.num_components = check.positive_int("num_components", num_components)
        if self.rank > 0:
            self.kernel_size = _normalize_tuple("kernel_size", kernel_size, self.rank)
            self.strides = _normalize_tuple("strides", strides, self.rank)
            self.dilation_rate = _normalize_tuple("dilation_rate", dilation_rate, self.rank)
            self.padding = check.choice("padding", str(padding).lower(), ("valid", "same"))
            self.data_format = check.choice(
                "data_format", data_format or keras.config.image_data_format(),
                ("channels_last", "channels_first"))
        self.posterior = check.choice("posterior", posterior, POSTERIORS)
        self.prior = _factor_prior(prior, self.posterior)
        self.posterior_std_init = check.positive_float("posterior_std_init", posterior_std_init)
        self.random_sign_init = check.finite_float("random_sign_init", random_sign_init)
        if self.random_sign_init > 1.0:
            raise ValueError("`random_sign_init` must be a probability of +1 in (0, 1], or <= 0 "
                             f"for N(1, value^2). Received: random_sign_init={random_sign_init!r}")
        self._initial_kl_weight = check.finite_float("kl_weight", kl_weight, minimum=0.0)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.seed = seed
        self.seed_generator = _ReplicaSeedGenerator(seed, name=f"{self.name}_seed_generator")
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), trainable=False, autocast=False,
            initializer=keras.initializers.Constant(self._initial_kl_weight))

    # ------------------------------------------------------------------ build
    def _channel_axis(self):
        return 1 if self.rank > 0 and self.data_format == "channels_first" else -1

    def _check_input_rank(self, shape):
        ndim = len(shape)
        if (self.rank == 0 and ndim < 2) or (self.rank > 0 and ndim != self.rank + 2):
            want = ">= 2" if self.rank == 0 else str(self.rank + 2)
            raise ValueError(f"{type(self).__name__} expects inputs of rank {want}. "
                             f"Received: input_shape={tuple(shape)}")

    def build(self, input_shape):
        self._check_input_rank(input_shape)
        in_channels = input_shape[self._channel_axis()]
        if in_channels is None:
            raise ValueError(f"The channel dimension of the inputs of {type(self).__name__} "
                             f"must be known. Received: input_shape={tuple(input_shape)}")
        in_channels = int(in_channels)
        k = self.num_components
        shape = (in_channels, self.units)
        if self.rank:
            shape = self.kernel_size + shape
        weight = functools.partial(self.add_weight, autocast=False)
        rho = keras.initializers.Constant(float(rho_from_sigma(self.posterior_std_init)))
        seed = None if self.seed is None else int(self.seed)
        self.kernel = weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        self.kernel_mask = weight(name="kernel_mask", shape=shape, initializer="ones",
                                  trainable=False)
        self.in_factor_loc = weight(name="in_factor_loc", shape=(k, in_channels),
                                    initializer=factor_initializer(self.random_sign_init, seed))
        self.in_factor_rho = weight(name="in_factor_rho", shape=(k, in_channels), initializer=rho)
        out_seed = None if seed is None else seed + 1
        self.out_factor_loc = weight(name="out_factor_loc", shape=(k, self.units),
                                     initializer=factor_initializer(self.random_sign_init,
                                                                    out_seed))
        self.out_factor_rho = weight(name="out_factor_rho", shape=(k, self.units),
                                     initializer=rho)
        self.bias = None
        if self.use_bias:
            self.bias = weight(name="bias", shape=(k, self.units),
                               initializer=self.bias_initializer)
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2 if self.rank == 0 else None,
            ndim=None if self.rank == 0 else self.rank + 2,
            axes={self._channel_axis(): in_channels})

    # ---------------------------------------------------------------- pieces
    @property
    def in_factor_sigma(self):
        """``(K, in)`` posterior scale of the input factors, ``softplus(rho) + 1e-8``."""
        return ops.softplus(self.in_factor_rho) + SIGMA_FLOOR

    @property
    def out_factor_sigma(self):
        """``(K, units)`` posterior scale of the output factors."""
        return ops.softplus(self.out_factor_rho) + SIGMA_FLOOR

    def masked_kernel(self):
        """The shared kernel with pruned entries at exactly 0, ``W o mask``."""
        return self.kernel * ops.convert_to_tensor(self.kernel_mask)

    def linear(self, inputs, kernel):
        """The layer's linear map ``x (*) kernel`` (no factors, bias or activation)."""
        if self.rank == 0:
            return ops.matmul(inputs, kernel)
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding,
                        data_format=self.data_format, dilation_rate=self.dilation_rate)

    def per_row(self, table, x):
        """``(K, c)`` per-component values -> one row each, broadcastable against ``x``.

        Row ``i`` of the ``B`` rows of ``x`` gets component ``floor(i K / B)``;
        the result is ``(B, c)`` for Dense inputs of rank 2, ``(B, 1.., c)`` for
        channels_last and ``(B, c, 1..)`` for channels_first inputs. A list of
        tables gives the list of their rows, from one gather of their
        concatenation (one GATHER op in an exported graph).
        """
        if isinstance(table, (list, tuple)):
            widths = np.cumsum([int(t.shape[-1]) for t in table])[:-1].tolist()
            rows = self.per_row(ops.concatenate(table, axis=-1), x)
            return ops.split(rows, widths, axis=self._channel_axis())
        rows = ops.take(table, component_index(ops.shape(x)[0], self.num_components), axis=0)
        ones = (1,) * (len(x.shape) - 2)
        if not ones:
            return rows
        if self._channel_axis() == 1:
            return ops.reshape(rows, (-1, table.shape[-1]) + ones)
        return ops.reshape(rows, (-1,) + ones + (table.shape[-1],))

    def _noise(self, shape, dtype, normal=None):
        """Standard normal (or standard Cauchy, the ratio of two normals) noise.

        ``normal(shape, dtype)`` draws the standard normals; default the
        layer's seeded generator (the exporter passes its unseeded draw).
        """
        with keras.name_scope(DRAW_SCOPE):
            if normal is None:
                normal = functools.partial(keras.random.normal, seed=self.seed_generator)
            eps = normal(shape, dtype=dtype)
            if self.posterior == "cauchy":
                eps = eps / normal(shape, dtype=dtype)
        return eps

    def apply_factors(self, x, kernel, r, s, bias):
        """``((x o r) (*) kernel) o s + bias``, then the activation (the sample path).

        Args:
            x: inputs ``(B, ..., in)``; r: ``(B, 1.., in)``; s, bias: ``(B, 1.., units)``
                (shapes of `per_row`; bias may be None).
        """
        out = self.linear(x * r, kernel) * s
        if bias is not None:
            out = out + bias
        if self.activation is not None:
            out = self.activation(out)
        return out

    # -------------------------------------------------------------------- KL
    def kl_divergence(self):
        """``(1 / K) sum_k KL(q_k || p)`` over every factor entry (unscaled, float32)."""
        total = 0.0
        for loc, sigma in ((self.in_factor_loc, self.in_factor_sigma),
                           (self.out_factor_loc, self.out_factor_sigma)):
            loc = ops.convert_to_tensor(loc)
            if self.posterior == "normal":
                sample = None
                if self.prior.needs_sample:
                    sample = loc + sigma * self._noise(ops.shape(loc), loc.dtype)
                kl = self.prior.kl(loc, sigma, sample)
            else:
                z = loc + sigma * self._noise(ops.shape(loc), loc.dtype)
                log_q = -ops.log(math.pi * sigma) - ops.log1p(ops.square((z - loc) / sigma))
                log_p = getattr(self.prior, "log_prob", None)
                if log_p is None:  # a TFPPrior
                    log_p = self.prior.distribution.log_prob
                kl = log_q - log_p(z)
            total = total + ops.sum(kl)
        return total / float(self.num_components)

    # ------------------------------------------------------------------ call
    def factors(self):
        """``(W o mask, mu_r, sigma_r, mu_s, sigma_s, b or None)``, the tuple `sample` takes."""
        return (self.masked_kernel(), self.in_factor_loc, self.in_factor_sigma,
                self.out_factor_loc, self.out_factor_sigma, self.bias)

    def sample(self, x, factors=None, normal=None):
        """One posterior draw per row: ``((x o r) (*) W) o s + b``, then the activation.

        Row ``i`` of ``x`` draws ``r = mu_r[k] + sigma_r[k] eps`` and ``s =
        mu_s[k] + sigma_s[k] eps'`` of its component ``k = floor(i K / B)``
        (`per_row`; ``eps`` normal or Cauchy noise) and adds ``b[k]``.

        Args:
            x: inputs ``(B, ...)`` in the compute dtype.
            factors: the `factors` tuple (the exporter passes its constants);
                default the layer's own.
            normal: ``(shape, dtype) -> N(0, 1)`` draws (see ``_noise``).

        Returns:
            ``(B, ..., units)`` outputs in ``x``'s dtype.
        """
        kernel, *tables = factors or self.factors()
        dtype = keras.backend.standardize_dtype(x.dtype)
        rows = [*self.per_row([t for t in tables if t is not None], x), None]
        r_loc, r_scale, s_loc, s_scale, bias = rows[:5]
        r = r_loc + r_scale * ops.cast(self._noise(ops.shape(r_loc), dtype, normal), r_loc.dtype)
        s = s_loc + s_scale * ops.cast(self._noise(ops.shape(s_loc), dtype, normal), s_loc.dtype)
        if bias is not None:
            bias = ops.cast(bias, dtype)
        return self.apply_factors(x, ops.cast(kernel, dtype), ops.cast(r, dtype),
                                  ops.cast(s, dtype), bias)

    def call(self, inputs):
        out = self.sample(ops.convert_to_tensor(inputs, dtype=self.compute_dtype))
        kl = self.kl_divergence()
        self.add_loss(ops.cast(self.kl_weight, kl.dtype) * kl)
        if self.kernel_regularizer is not None:
            self.add_loss(self.kernel_regularizer(self.masked_kernel()))
        return out

    def propagate_moments(self, mean, var):
        """Mean and variance of the pre-activations (module docstring), per row's component.

        Args:
            mean: ``(B, ..., in)`` input means; var: their variances or None (a
                deterministic input).

        Returns:
            ``(mean, var)`` of the outputs before the activation.

        Raises:
            ValueError: a Cauchy posterior (its factors have no variance).
        """
        if self.posterior != "normal":
            raise ValueError(
                f"method='moments' needs finite factor variances; layer {self.name!r} has "
                "Cauchy factors. Use method='mc'. Received: posterior='cauchy'")
        dtype = mean.dtype
        w = ops.cast(self.masked_kernel(), dtype)

        def rows(table):
            return ops.cast(self.per_row(table, mean), dtype)

        r_mu, r_var = rows(self.in_factor_loc), ops.square(rows(self.in_factor_sigma))
        s_mu, s_var = rows(self.out_factor_loc), ops.square(rows(self.out_factor_sigma))
        # Var[x r] = (v + m^2)(s_r^2 + mu_r^2) - m^2 mu_r^2, written without the
        # cancellation: v (s_r^2 + mu_r^2) + m^2 s_r^2.
        xr_var = ops.square(mean) * r_var
        if var is not None:
            xr_var = xr_var + var * (r_var + ops.square(r_mu))
        z_mean = self.linear(mean * r_mu, w)
        z_var = self.linear(xr_var, ops.square(w))
        out_var = z_var * (s_var + ops.square(s_mu)) + ops.square(z_mean) * s_var
        out_mean = z_mean * s_mu
        if self.bias is not None:
            out_mean = out_mean + rows(self.bias)
        return out_mean, ops.relu(out_var) + _VAR_FLOOR

    # ----------------------------------------------------------------- shape
    def compute_output_shape(self, input_shape):
        # The attributes it reads (rank, units, kernel_size, strides, padding,
        # dilation_rate, data_format) mean the same here: one formula.
        return BayesianLayer.compute_output_shape(self, input_shape)

    # ---------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update({
            ("units" if self.rank == 0 else "filters"): self.units,
            "num_components": self.num_components,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "posterior": self.posterior,
            "prior": keras.saving.serialize_keras_object(self.prior),
            "posterior_std_init": self.posterior_std_init,
            "random_sign_init": self.random_sign_init,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kl_weight": self._initial_kl_weight,
            "seed": self.seed,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        if self.rank > 0:
            config.update({"kernel_size": self.kernel_size, "strides": self.strides,
                           "padding": self.padding, "data_format": self.data_format,
                           "dilation_rate": self.dilation_rate})
        return config

    # the prior and regularizer come back from their configs as in BayesianLayer
    from_config = classmethod(BayesianLayer.from_config.__func__)


_ARGS_DOC = """
    Args:
        num_components: K, the mixture components, >= 1 (keyword).
        posterior: ``"normal"`` or ``"cauchy"`` factor posteriors.
        prior: a `tfp_bcnn.priors` prior of every factor entry (default
            ``Normal(1, 1)``, or ``Cauchy(1, 1)`` for Cauchy factors, which
            refuse normal priors: infinite KL).
        posterior_std_init: initial factor scale ``sigma``, > 0 (default 0.05).
        random_sign_init: <= 0: factor means start at
            ``N(1, random_sign_init^2)`` (default -0.5); > 0: at +1 with this
            probability, else -1 (0.5: random signs).
        kl_weight: initial scale of the KL added to the loss (``1 / N``).
        seed: int seed of the factor noise and of the sign initialisation.
        activation, use_bias, kernel_initializer, bias_initializer,
            kernel_regularizer: as in Keras (the regularizer on ``W o mask``).

    Raises:
        ValueError: a non-positive size or ``num_components``, an unknown
            ``posterior`` or prior, ``posterior_std_init <= 0``, ``kl_weight < 0``.
"""


def _register(cls):
    return keras.saving.register_keras_serializable(package="tfp_bcnn")(cls)


@_register
class Rank1Dense(Rank1Layer):
    __doc__ = ("""Rank-1 mixture dense layer, ``y = ((x o r_k) W) o s_k + b_k`` (see
    ``tfp_bcnn.layers._rank1``). Input ``(batch, ..., in)``, output ``(batch, ..., units)``.

    Example:
    >>> import keras, tfp_bcnn
    >>> layer = tfp_bcnn.layers.Rank1Dense(3, num_components=2, kl_weight=1 / 4000)
    >>> layer(keras.ops.ones((4, 5))).shape
    (4, 3)
    """ + _ARGS_DOC)

    def __init__(self, units, activation=None, *, num_components=4, **kwargs):
        super().__init__(rank=0, units=units, activation=activation,
                         num_components=num_components, **kwargs)


class Rank1Conv(Rank1Layer):
    __doc__ = ("""Rank-1 mixture N-D convolution; ``Rank1Conv1D/2D/3D`` fix the rank.

    ``filters``, ``kernel_size``, ``strides``, ``padding``, ``data_format``,
    ``dilation_rate`` as in ``keras.layers.Conv2D``. Input ``(batch, *spatial,
    in)``, output ``(batch, *new_spatial, filters)`` (channels_last).
    """ + _ARGS_DOC)

    def __init__(self, filters, kernel_size, strides=1, padding="valid", activation=None, *,
                 num_components=4, **kwargs):
        super().__init__(rank=self._rank, units=filters, kernel_size=kernel_size,
                         strides=strides, padding=padding, activation=activation,
                         num_components=num_components, **kwargs)

    @property
    def filters(self):
        return self.units


@_register
class Rank1Conv1D(Rank1Conv):
    """1-D rank-1 mixture convolution (``Rank1Conv``)."""
    _rank = 1


@_register
class Rank1Conv2D(Rank1Conv):
    """2-D rank-1 mixture convolution (``Rank1Conv``)."""
    _rank = 2


@_register
class Rank1Conv3D(Rank1Conv):
    """3-D rank-1 mixture convolution (``Rank1Conv``)."""
    _rank = 3


@_register
class TileComponents(keras.layers.Layer):
    """Training-time input of a rank-1 mixture model: the batch tiled K times.

    In training (``training=True``, as ``model.fit`` calls the model) a batch
    ``(B, ...)`` becomes ``(K * B, ...)``, sample-major (row ``k * B + n`` is
    copy ``k`` of example ``n``). The rank-1 layers map the ``K * B`` rows to
    their components in contiguous blocks (row ``i`` to ``floor(i K / (K B))
    = floor(i / B)``), so copy ``k`` of every example goes through component
    ``k``: every example trains every component, the recipe of Dusenberry et
    al. 2020 (edward2 / uncertainty-baselines tile images and labels
    ``ensemble_size`` times). The loss must then pair the ``K * B`` outputs
    with the ``B`` labels: `tfp_bcnn.models.MixtureLoss` averages the
    likelihood term over the K copies (``models.compile_bayesian`` uses it for
    rank-1 models); the KL is added once per layer call, whatever the batch,
    so it is counted once.

    At inference (``training`` False or None: ``predict``, ``evaluate``,
    moments, export) the layer is the identity and the caller's own tiling
    spreads the samples over the components (`tfp_bcnn._mixture`).

    Args:
        num_components: K, >= 1 (keyword or first positional).

    Input shape: ``(B, ...)``. Output shape: ``(K * B, ...)`` in training,
    ``(B, ...)`` otherwise.

    Raises:
        ValueError: ``num_components`` not a positive int.
    """

    def __init__(self, num_components: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.num_components = check.positive_int("num_components", num_components)
        # the copies keep the dtype they receive (the image, float32)
        self.autocast = False

    def call(self, inputs, training=None):
        if not training or self.num_components == 1:
            return inputs
        return ops.tile(inputs, (self.num_components,) + (1,) * (len(inputs.shape) - 1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components}


#: rank -> class; rank 0 is Dense.
RANK1_CLASSES = {0: Rank1Dense, 1: Rank1Conv1D, 2: Rank1Conv2D, 3: Rank1Conv3D}


def rank1_class(rank: int):
    """The rank-1 mixture class of a rank (0 = Dense, 1-3 = ConvND).

    Raises:
        ValueError: another rank.
    """
    if rank not in RANK1_CLASSES:
        raise ValueError(f"`rank` must be 0 (Dense), 1, 2 or 3. Received: rank={rank!r}")
    return RANK1_CLASSES[rank]
