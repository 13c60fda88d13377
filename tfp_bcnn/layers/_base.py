"""The one Bayesian layer base: mean-field normal weights, three estimators.

All twelve public layer classes (``{Conv1D, Conv2D, Conv3D, Dense} x
{Reparameterization, Flipout, LocalReparameterization}``) are this class with a
rank and an estimator fixed; nothing else differs between them. The
depthwise and transposed convolutions (``_public.py``) also override the two
seams ``_kernel_shape`` (the kernel layout) and ``linear`` (the linear map),
and set ``_kernel_in_axis`` (which kernel axis Flipout's input signs run over).

The seams are the one home of the sampling maths: the exporters
(``tfp_bcnn.export._inference``) and the moment pass (`tfp_bcnn.moments`)
call ``linear`` (with a ``data_format`` override), ``grouped_linear``,
``kernel_posterior`` / ``posterior_moments`` and ``preactivation_moments``
(`linear_moments` of module ``_linear``) instead of writing their own maps,
and add only what is theirs (unseeded draws, constant kernels, tiling).
"""

from __future__ import annotations

import functools
import itertools

import keras
import numpy as np
from keras import ops

from .. import _validation as check
from .. import priors as priors_lib
from ._linear import dense_map, linear_moments

ESTIMATORS = ("reparameterization", "flipout", "local_reparameterization")

#: Added to softplus(rho) so that log(sigma) stays finite in float32.
SIGMA_FLOOR = 1e-8


def _normalize_tuple(name, value, rank):
    received = value
    if check.is_int(value):
        value = (int(value),) * rank
    try:
        value = tuple(value)
    except TypeError:
        raise ValueError(
            f"`{name}` must be an int or a tuple of {rank} ints. Received: {name}={value!r}"
        ) from None
    if len(value) != rank or not all(check.is_int(v) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of {rank} positive ints. "
            f"Received: {name}={received!r}"
        )
    return tuple(int(v) for v in value)


def rho_from_sigma(sigma):
    """Inverse of ``softplus(rho) + SIGMA_FLOOR`` (numpy, for initialisation)."""
    s = np.maximum(np.asarray(sigma, dtype="float64") - SIGMA_FLOOR, 1e-30)
    # log(expm1(s)), stable for large s
    return np.where(s > 20.0, s, np.log(np.expm1(np.minimum(s, 20.0))))


#: Name scope of every random draw of a layer. Keras' seeded draws are
#: stateless random ops, which TFLite runs only with the Flex delegate;
#: ``tf.lite.TFLiteConverter.from_keras_model`` reports every op it cannot
#: convert by its scoped name, so its error names the exporter that can.
DRAW_SCOPE = "random_draws_need_flex_use_tfp_bcnn.export.to_tflite"

_SQRT_EPS = 1e-16


def _safe_sqrt(x):
    """``sqrt(max(x, 0))`` that is exactly 0 at x == 0 and has a finite gradient there.

    ``sqrt(x + eps) - sqrt(eps)``: at x = 0 both terms are the same rounded
    float, so the result is exactly 0 (a fully pruned unit gets no noise);
    the gradient there is ``1 / (2 sqrt(eps))``, finite, and multiplied by the
    zero derivative of a masked variance. Elsewhere the shift is <= 1e-8.
    Three elementwise ops instead of the five of a double ``where``.
    """
    eps = ops.convert_to_tensor(_SQRT_EPS, dtype=x.dtype)
    return ops.sqrt(ops.relu(x) + eps) - ops.sqrt(eps)


class _ReplicaSeedGenerator(keras.random.SeedGenerator):
    """A ``SeedGenerator`` whose draws differ between ``tf.distribute`` replicas.

    Under ``MirroredStrategy`` every replica reads the same (mirrored) seed
    state, so the k-th example of each replica's shard would get the same
    Flipout / LRT noise. The replica id is added to the seed's first component
    (the stream), the second (the counter) is left alone; one replica, or any
    other backend, draws exactly what a plain ``SeedGenerator`` draws.
    """

    _count = itertools.count()

    def __init__(self, seed=None, name=None, **kwargs):
        # SeedGenerator names itself after its class ("__replica_seed_generator_N"
        # here), which TensorFlow rejects as a root name scope in model.export().
        if name is None:
            name = f"replica_seed_generator_{next(self._count)}"
        super().__init__(seed, name=name, **kwargs)

    def next(self, ordered=True):
        seed = super().next(ordered)
        if keras.backend.backend() != "tensorflow":
            return seed
        import tensorflow as tf

        if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
            return seed
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return seed
        replica = tf.cast(ctx.replica_id_in_sync_group, seed.dtype)
        return seed + tf.stack([replica * 7919, tf.zeros_like(replica)])


class BayesianLayer(keras.layers.Layer):
    """Mean-field Gaussian variational layer (Bayes by Backprop).

    Each kernel weight has the posterior ``q(w) = N(mu, sigma^2)`` with
    ``mu = kernel_loc``, ``sigma = softplus(kernel_rho) + 1e-8``, and a fixed
    binary ``kernel_mask`` (ones at build, set by pruning) that multiplies
    ``mu`` and ``sigma`` wherever they are used, so a pruned weight is exactly
    0 in every sample. Each call adds ``kl_weight * sum_w mask * KL(q(w) || p(w))``
    to ``layer.losses``; the KL is summed over weights and ``kl_weight`` (a
    non-trainable scalar variable) is usually ``1 / num_train_examples`` so
    that the Keras loss is the per-example negative ELBO.
    With ``kernel_regularizer`` (``tfp_bcnn.regularizers.L1`` / ``GroupL1``
    or any Keras regularizer) each call also adds
    ``kernel_regularizer(kernel_loc * kernel_mask)``.

    Estimators of the layer output ``y = x (*) W`` (``(*)`` a convolution or a
    matrix product):

    * ``"reparameterization"``: one kernel ``W = mu + sigma * eps`` per call,
      shared by every example of the batch (Blundell et al. 2015,
      https://arxiv.org/abs/1505.05424).
    * ``"flipout"``: ``y = x (*) mu + ((x o s) (*) (sigma o eps)) o r`` with
      random signs ``s``, ``r`` per example, so each example sees its own
      pseudo-independent kernel (Wen et al. 2018, https://arxiv.org/abs/1803.04386);
      a Bayesian bias is drawn per example too. ``eps`` is one draw per call:
      the copies of an example tiled into one batch share it, so ``predict``
      passes ``sample_groups=S`` and each copy gets its own ``eps``
      (`grouped_linear`).
    * ``"local_reparameterization"``: pre-activations drawn from
      ``N(x (*) mu, x^2 (*) sigma^2)``, independently per output element: two
      convolutions (Kingma et al. 2015, https://arxiv.org/abs/1506.02557;
      Shridhar et al. 2019, https://arxiv.org/abs/1901.02731).

    All three have the same mean ``x (*) mu``.

    Mixed precision (``mixed_float16`` / ``mixed_bfloat16`` policies): the
    variables are float32 and read without autocasting; ``sigma``, the
    sampled kernels and the KL are float32; the noise ``eps``, the signs and
    the linear maps are in the compute dtype, the float32 kernels being cast
    right before a linear map. Under float16 the local-reparameterization
    variance ``x^2 (*) sigma^2`` is computed in float32 (``sigma^2`` is
    subnormal in float16 for sigma below 8e-3).

    This base is not used directly: the public classes fix ``rank`` (0 for
    Dense, 1-3 for convolutions) and the estimator.
    """

    _rank: int = 0
    _estimator: str = "flipout"

    def __init__(
        self,
        *,
        rank,
        estimator,
        units,
        kernel_size=None,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        bayesian_bias=False,
        prior=None,
        posterior_std_init=1e-3,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        centered_prior=False,
        kl_weight=1.0,
        seed=None,
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check.choice("estimator", estimator, ESTIMATORS)
        self.rank = int(rank)
        self.estimator = estimator
        name = "units" if self.rank == 0 else "filters"
        self.units = check.positive_int(name, units)
        if self.rank > 0:
            self.kernel_size = _normalize_tuple("kernel_size", kernel_size, self.rank)
            self.strides = _normalize_tuple("strides", strides, self.rank)
            self.dilation_rate = _normalize_tuple("dilation_rate", dilation_rate, self.rank)
            self.padding = check.choice("padding", str(padding).lower(), ("valid", "same"))
            data_format = data_format or keras.config.image_data_format()
            self.data_format = check.choice("data_format", data_format,
                                            ("channels_last", "channels_first"))
        self.posterior_std_init = check.positive_float("posterior_std_init", posterior_std_init)
        kl_value = check.finite_float("kl_weight", kl_weight, minimum=0.0)
        self._initial_kl_weight = kl_value
        self.prior = priors_lib.get(prior)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bayesian_bias = bool(bayesian_bias) and self.use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.centered_prior = bool(centered_prior)
        self.seed = seed
        # Named after the layer, so that its state variable reads
        # "<layer>_seed_generator/seed_generator_state" in a SavedModel.
        self.seed_generator = _ReplicaSeedGenerator(seed, name=f"{self.name}_seed_generator")
        # On the masked means (see `call`), e.g. tfp_bcnn.regularizers.GroupL1.
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.kl_weight = self.add_weight(
            name="kl_weight",
            shape=(),
            initializer=keras.initializers.Constant(kl_value),
            trainable=False,
            autocast=False,
        )
        # Checked in build() with a message that quotes the shape received.
        self.input_spec = None

    # ------------------------------------------------------------------ build
    def _channel_axis(self):
        if self.rank == 0 or self.data_format == "channels_last":
            return -1
        return 1

    def _check_input_rank(self, shape):
        ndim = len(shape)
        if self.rank == 0:
            if ndim < 2:
                raise ValueError(
                    f"{type(self).__name__} expects inputs of rank >= 2 (batch, ..., features). "
                    f"Received: input_shape={tuple(shape)}"
                )
        elif ndim != self.rank + 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank {self.rank + 2} "
                f"(batch, {self.rank} spatial dims, channels). Received: input_shape={tuple(shape)}"
            )

    def build(self, input_shape):
        self._check_input_rank(input_shape)
        in_channels = input_shape[self._channel_axis()]
        if in_channels is None:
            raise ValueError(
                f"The channel dimension of the inputs of {type(self).__name__} must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        kernel_shape = self._kernel_shape(in_channels)
        rho0 = float(rho_from_sigma(self.posterior_std_init))
        # Variables are read in float32 even under a mixed-precision policy
        # (autocast=False): the KL is a sum over every weight and must not be
        # formed in float16; `call` casts explicitly where it computes in the
        # compute dtype.
        weight = functools.partial(self.add_weight, autocast=False)
        self.kernel_loc = weight(
            name="kernel_loc", shape=kernel_shape, initializer=self.kernel_initializer
        )
        self.kernel_rho = weight(
            name="kernel_rho", shape=kernel_shape, initializer=keras.initializers.Constant(rho0)
        )
        self.kernel_mask = weight(
            name="kernel_mask", shape=kernel_shape, initializer="ones", trainable=False
        )
        self.kernel_prior_loc = None
        if self.centered_prior:
            self.kernel_prior_loc = weight(
                name="kernel_prior_loc", shape=kernel_shape, initializer="zeros", trainable=False
            )
        self.bias = self.bias_loc = self.bias_rho = None
        if self.use_bias and self.bayesian_bias:
            self.bias_loc = weight(
                name="bias_loc", shape=(self.units,), initializer=self.bias_initializer
            )
            self.bias_rho = weight(
                name="bias_rho", shape=(self.units,), initializer=keras.initializers.Constant(rho0)
            )
        elif self.use_bias:
            self.bias = weight(name="bias", shape=(self.units,), initializer=self.bias_initializer)
        axis = self._channel_axis()
        axes = {axis: in_channels} if self.rank else {-1: in_channels}
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2 if self.rank == 0 else None,
            ndim=None if self.rank == 0 else self.rank + 2,
            axes=axes,
        )

    #: Axis of the kernel that runs over the input channels (Flipout's input
    #: signs): -2 for ``(..., in, out)`` kernels; the transposed convolutions'
    #: ``(..., out, in)`` kernels set -1.
    _kernel_in_axis = -2

    def _kernel_shape(self, in_channels):
        """Shape of the kernel (and of its ``rho``, mask, prior loc) for ``in_channels``.

        ``(in, units)`` for Dense, ``kernel_size + (in, units)`` for a
        convolution; subclasses with another kernel layout override it.
        """
        if self.rank == 0:
            return (in_channels, self.units)
        return self.kernel_size + (in_channels, self.units)

    # --------------------------------------------------------------- moments
    @property
    def kernel_sigma(self):
        """Posterior std of every kernel weight, ``softplus(rho) + 1e-8`` (unmasked)."""
        return ops.softplus(self.kernel_rho) + SIGMA_FLOOR

    @property
    def bias_sigma(self):
        if self.bias_rho is None:
            return None
        return ops.softplus(self.bias_rho) + SIGMA_FLOOR

    def kernel_posterior(self):
        """Masked moments ``(mu * mask, sigma * mask)`` of the kernel posterior."""
        mask = ops.convert_to_tensor(self.kernel_mask)
        return self.kernel_loc * mask, self.kernel_sigma * mask

    def posterior_moments(self):
        """``(kernel mean, kernel variance, bias mean or None, bias variance or None)``.

        The masked kernel posterior ``(mu * mask, (sigma * mask)^2)``; the
        bias ``bias_loc`` and ``bias_sigma^2`` when it is Bayesian, else the
        deterministic bias (or None) and None. The tuple that
        `preactivation_moments` takes as ``posterior``.
        """
        loc, sigma = self.kernel_posterior()
        if self.bias_loc is not None:
            return loc, ops.square(sigma), self.bias_loc, ops.square(self.bias_sigma)
        return loc, ops.square(sigma), self.bias, None

    def _data_format(self, data_format=None):
        """``data_format`` (checked) or the layer's own; None for Dense."""
        if self.rank == 0:
            return None
        if data_format is None:
            return self.data_format
        return check.choice("data_format", data_format, ("channels_last", "channels_first"))

    def linear(self, inputs, kernel, data_format=None):
        """The layer's linear map ``x (*) kernel``, without bias or activation.

        Args:
            inputs: ``(batch, ..., in)`` (Dense) or the convolution's input
                in ``data_format``.
            kernel: a kernel of the layer's kernel shape (``_kernel_shape``).
            data_format: overrides the layer's layout (the exporters run every
                layer channels_last); None keeps it. Ignored by Dense.

        Returns:
            ``x (*) kernel``: a matrix product over the last axis for Dense
            (`dense_map`), the layer's convolution otherwise.
        """
        if self.rank == 0:
            return dense_map(inputs, kernel)
        return ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format=self._data_format(data_format),
            dilation_rate=self.dilation_rate,
        )

    def preactivation_moments(self, mean, variance=None, posterior=None, data_format=None,
                              variance_floor=0.0):
        """Mean and variance of the pre-activations ``x (*) W + b`` for Gaussian inputs.

        `linear_moments` with the layer's own linear map: ``mean = mu (*) M +
        b``, ``var = v (*) M^2 + (v + mu^2) (*) S^2 + var(b)``. With
        ``variance=None`` (a deterministic input) this is the local
        reparameterization: the pre-activations are ``N(x (*) M + b,
        x^2 (*) S^2 + var(b))``, which is what the layer's
        ``"local_reparameterization"`` estimator and the ``"lrt"`` export
        sample, and the rule of `tfp_bcnn.moments` for a Bayesian layer.

        Args:
            mean: input means ``mu``, the layer's input shape.
            variance: input variances ``v`` (same shape) or None.
            posterior: ``(kernel_mean, kernel_variance, bias_mean or None,
                bias_variance or None)``, default `posterior_moments` (the
                exporter passes its frozen constants, the moment pass its
                BatchNorm-folded moments).
            data_format: see `linear`.
            variance_floor: added to every output variance.

        Returns:
            ``(mean, var)``, each of the layer's output shape (before the
            activation).
        """
        posterior = self.posterior_moments() if posterior is None else posterior
        data_format = self._data_format(data_format)
        return linear_moments(
            functools.partial(self.linear, data_format=data_format), mean, variance,
            *posterior, channels_first=data_format == "channels_first",
            variance_floor=variance_floor)

    # -------------------------------------------------------------------- KL
    def _kl_sum(self, loc, sigma, sample, mask=None, prior_loc=None):
        if prior_loc is not None:
            loc = loc - prior_loc
            if sample is not None:  # analytic priors (Normal) take no sample
                sample = sample - prior_loc
        kl = self.prior.kl(loc, sigma, sample)
        if mask is not None:
            kl = kl * mask
        return ops.sum(kl)

    def kl_divergence(self, kernel_sample=None, bias_sample=None):
        """KL(q || p), summed over the unpruned weights (not scaled by kl_weight).

        A pruned weight (mask 0) contributes nothing: its posterior is the point
        mass at 0 that the mask defines, which no prior with a density can be
        compared to, so it is treated as removed from the model, like a weight
        of a smaller network. Its KL term is multiplied by 0 (never
        ``log(0)``), so gradients through it are 0, not NaN.

        Args:
            kernel_sample: a kernel drawn from the posterior in the same pass
                (needed by Monte Carlo priors); drawn here when None.
        """
        return self._kl(kernel_sample, bias_sample, self.kernel_sigma)

    def _kl(self, kernel_sample, bias_sample, sigma):
        """`kl_divergence` with the kernel std ``sigma`` already computed by `call`."""
        loc = ops.convert_to_tensor(self.kernel_loc)
        if kernel_sample is None and self.prior.needs_sample:
            eps = self._normal(ops.shape(loc), loc.dtype)
            kernel_sample = loc + sigma * eps
        prior_loc = None if self.kernel_prior_loc is None else self.kernel_prior_loc
        kl = self._kl_sum(loc, sigma, kernel_sample, self.kernel_mask, prior_loc)
        if self.bias_loc is not None:
            b_loc = ops.convert_to_tensor(self.bias_loc)
            b_sigma = self.bias_sigma
            if bias_sample is None and self.prior.needs_sample:
                eps = self._normal(ops.shape(b_loc), b_loc.dtype)
                bias_sample = b_loc + b_sigma * eps
            kl = kl + self._kl_sum(b_loc, b_sigma, bias_sample)
        return kl

    # ------------------------------------------------------------------ call
    def _normal(self, shape, dtype):
        """``N(0, 1)`` draw from the layer's seed generator (see `DRAW_SCOPE`)."""
        with keras.name_scope(DRAW_SCOPE):
            return keras.random.normal(shape, dtype=dtype, seed=self.seed_generator)

    def _sign(self, shape):
        """Random signs +-1 in the compute dtype (drawn from a float32 uniform,
        so that rounding to float16 cannot bias them)."""
        dtype = self.compute_dtype
        with keras.name_scope(DRAW_SCOPE):
            u = keras.random.uniform(shape, seed=self.seed_generator)
        return ops.where(u < 0.5, ops.cast(-1.0, dtype), ops.cast(1.0, dtype))

    def _variance_dtype(self):
        """Dtype of the local-reparameterization variance map.

        float32 under float16 compute: ``sigma^2`` (1e-6 at the default
        posterior std) is subnormal in float16 and ``x^2`` overflows above 256;
        bfloat16 has float32's range and is used as it is.
        """
        return "float32" if self.compute_dtype == "float16" else self.compute_dtype

    def _sign_shape(self, x, channels):
        shape = ops.shape(x)
        ones = [1] * (len(shape) - 2)
        if self.rank > 0 and self.data_format == "channels_first":
            return (shape[0], channels, *ones)
        return (shape[0], *ones, channels)

    def _bias_shape(self):
        """Shape that broadcasts a ``(units,)`` bias over the outputs: ``(units,)``,
        or ``(units, 1, ..., 1)`` (``rank`` ones) for ``channels_first``."""
        if self.rank > 0 and self.data_format == "channels_first":
            return (self.units,) + (1,) * self.rank
        return (self.units,)

    def grouped_linear(self, inputs, kernels):
        """`linear` with one kernel per group of rows: ``G`` independent draws.

        Args:
            inputs: ``(G * b, ...)``, sample-major: rows ``g * b .. (g + 1) * b - 1``
                form group ``g``.
            kernels: ``(G, *kernel_shape)``, kernel ``g`` for group ``g``.

        Returns:
            ``(G * b, ...)``: row ``g * b + n`` is ``linear(inputs[g * b + n], kernels[g])``.
            A batched matrix product for Dense and 1x1 convolutions; otherwise ``ops.map`` of
            `linear` over the groups (``tf.map_fn`` / ``jax.lax.map``: the
            FLOPs of one map of ``G * b`` rows, and a graph of one map whatever
            ``G``; an unrolled loop took 4x longer to trace at ``G = 500``, and a
            grouped convolution, ``G * C`` channels, ran 6x slower on CPU).
        """
        groups = int(kernels.shape[0])
        pointwise = self.rank > 0 and type(self).linear is BayesianLayer.linear and (
            self.data_format == "channels_last"
            and set(self.kernel_size) == {1} and set(self.strides) == {1})
        if self.rank == 0 or pointwise:  # a 1x1 convolution is a Dense on the channels
            shape = ops.shape(inputs)
            rows = ops.reshape(inputs, (groups, -1, shape[-1]))
            kernels = ops.reshape(kernels, (groups, shape[-1], -1))
            return ops.reshape(ops.matmul(rows, kernels), (*shape[:-1], kernels.shape[-1]))
        rows = ops.reshape(inputs, (groups, -1, *inputs.shape[1:]))
        out = ops.map(lambda pair: self.linear(pair[0], pair[1]), (rows, kernels))
        return ops.reshape(out, (-1, *out.shape[2:]))

    def call(self, inputs, sample_groups=1):
        """The layer output (see the class docstring for the estimators).

        Args:
            inputs: ``(batch, ...)``.
            sample_groups: Flipout only, ``G`` >= 1: the batch holds ``G``
                sample-major groups of rows (``predict`` tiles a batch of
                ``b`` examples ``G = S`` times) and each group gets its own
                kernel noise ``eps_g``, so that the ``S`` copies of an example
                are independent posterior draws (one ``eps`` per call would
                be shared by them and only their signs would differ). Other
                estimators draw per row already and ignore it.
        """
        # Mixed precision: loc, sigma, the sampled kernels and the KL are
        # float32; noise, signs and the linear maps are in the compute dtype
        # (the float32 tensors are cast right before a linear map).
        dtype = self.compute_dtype
        inputs = ops.convert_to_tensor(inputs, dtype=dtype)
        loc = ops.convert_to_tensor(self.kernel_loc)
        mask = ops.convert_to_tensor(self.kernel_mask)
        sigma = self.kernel_sigma
        kernel_sample = None
        if self.estimator == "reparameterization":
            eps = self._normal(ops.shape(loc), dtype)
            kernel_sample = loc + sigma * ops.cast(eps, loc.dtype)
            outputs = self.linear(inputs, ops.cast(kernel_sample * mask, dtype))
        elif self.estimator == "flipout":
            groups = check.positive_int("sample_groups", sample_groups)
            shape = ops.shape(loc) if groups == 1 else (groups, *ops.shape(loc))
            eps = ops.cast(self._normal(shape, dtype), loc.dtype)
            kernel_sample = loc + sigma * (eps if groups == 1 else eps[0])
            in_channels = ops.shape(loc)[self._kernel_in_axis]
            sign_in = self._sign(self._sign_shape(inputs, in_channels))
            sign_out = self._sign(self._sign_shape(inputs, self.units))
            outputs = self.linear(inputs, ops.cast(loc * mask, dtype))
            delta = ops.cast(sigma * eps * mask, dtype)
            linear = self.linear if groups == 1 else self.grouped_linear
            outputs = outputs + linear(inputs * sign_in, delta) * sign_out
        else:  # local reparameterization: N(x (*) mu, x^2 (*) sigma^2 + var(b)), bias later
            vtype = self._variance_dtype()
            b_var = None if self.bias_loc is None else ops.square(self.bias_sigma)
            mean, var = self.preactivation_moments(inputs, posterior=(
                ops.cast(loc * mask, dtype), ops.cast(ops.square(sigma * mask), vtype),
                None, b_var))
            noise = self._normal(ops.shape(mean), dtype)
            outputs = mean + ops.cast(_safe_sqrt(var), dtype) * noise
            if self.prior.needs_sample:
                eps = self._normal(ops.shape(loc), dtype)
                kernel_sample = loc + sigma * ops.cast(eps, loc.dtype)

        bias_sample = None
        if self.bias is not None:
            bias = self.bias
        elif self.bias_loc is not None and self.estimator == "local_reparameterization":
            bias = self.bias_loc
        elif self.bias_loc is not None:
            if self.estimator == "flipout":
                # One bias draw per example, like the kernel's perturbation, so
                # the rows of a tiled batch are independent samples.
                b_eps = self._normal(self._sign_shape(inputs, self.units), dtype)
                b_sigma = ops.reshape(ops.cast(self.bias_sigma, dtype), self._bias_shape())
                outputs = outputs + b_sigma * b_eps
                bias = self.bias_loc
            else:
                b_eps = self._normal((self.units,), dtype)
                b_eps = ops.cast(b_eps, self.bias_loc.dtype)
                bias = bias_sample = self.bias_loc + self.bias_sigma * b_eps
        else:
            bias = None
        if bias is not None:
            outputs = outputs + ops.reshape(ops.cast(bias, dtype), self._bias_shape())

        kl = self._kl(kernel_sample, bias_sample, sigma)
        self.add_loss(ops.cast(self.kl_weight, kl.dtype) * kl)
        if self.kernel_regularizer is not None:
            self.add_loss(self.kernel_regularizer(loc * mask))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        self._check_input_rank(input_shape)
        if self.rank == 0:
            return tuple(input_shape[:-1]) + (self.units,)
        channels_last = self.data_format == "channels_last"
        spatial = input_shape[1:-1] if channels_last else input_shape[2:]
        out = []
        for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate):
            if n is None:
                out.append(None)
            elif self.padding == "same":
                out.append(-(-n // s))
            else:
                out.append((n - d * (k - 1) - 1) // s + 1)
        if channels_last:
            return (input_shape[0], *out, self.units)
        return (input_shape[0], self.units, *out)

    # --------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                ("units" if self.rank == 0 else "filters"): self.units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "bayesian_bias": self.bayesian_bias,
                "prior": keras.saving.serialize_keras_object(self.prior),
                "posterior_std_init": self.posterior_std_init,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "centered_prior": self.centered_prior,
                "kl_weight": self._initial_kl_weight,
                "seed": self.seed,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        if self.rank > 0:
            config.update(
                {
                    "kernel_size": self.kernel_size,
                    "strides": self.strides,
                    "padding": self.padding,
                    "data_format": self.data_format,
                    "dilation_rate": self.dilation_rate,
                }
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("prior"), dict):
            config["prior"] = keras.saving.deserialize_keras_object(config["prior"])
        if isinstance(config.get("kernel_regularizer"), dict):
            config["kernel_regularizer"] = keras.regularizers.deserialize(
                config["kernel_regularizer"])
        return cls(**config)
