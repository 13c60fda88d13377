"""The TensorFlow inference form of a Bayesian Keras model (shared by all exporters).

Export never traces the training graph: Keras' stateless random ops and the
Flipout sign draws would need TFLite's Flex delegate, which the stock LiteRT
interpreter lacks. Instead every `tfp_bcnn.layers.BayesianLayer` is replaced
(by `keras.models.clone_model`, so Sequential and functional models, skip
connections and nested models included, keep their graph) with an export-only
layer whose call is written with ``tf.nn`` ops on static kernels, and the other
layers are reused as they are (called with ``training=False``: dropout is the
identity, batch normalisation uses its moving statistics), except that a
layer of a mixed-precision model is rebuilt in float32 (every exported graph
computes in float32 whatever policy the model was trained with), and
`tfp_bcnn.layers.MCDropout`, which stays on: it becomes ``_DropoutInference``,
the same mask drawn with builtin ops, ``y = x * (u < 1 - rate) / (1 - rate)``
with ``u ~ U[0, 1)`` from ``RandomUniform`` (no seed in the graph).

Sampling of a Bayesian layer with posterior ``q(W) = N(mu, sigma^2)`` and mask
``m`` (``mu_m = mu * m``, ``sigma_m = sigma * m``; a pruned weight is 0 in both):

* ``"lrt"`` (local reparameterization at inference): ``mu_m`` and
  ``sigma_m^2`` are constant kernels and the pre-activations are drawn as
  ``y = x (*) mu_m + sqrt(x^2 (*) sigma_m^2) * eps``, ``eps ~ N(0, 1)`` per
  output element. Two convolutions with static kernels, so pruned kernels are
  stored sparse. The S tiled samples share one normal per pre-activation
  with random signs per sample and position (`_random.sign_flip_normal`:
  every sample exactly N(0, I), 1/S of the normal draws that cost most of
  the file's time). Caveat: for a convolution this ignores the weight sharing
  across spatial positions -- in the posterior one kernel draw is shared by
  every position of an image, here each position gets independent noise. The
  marginal of each pre-activation is exact, their correlations across
  positions are not, so the spread of the predictive distribution (epistemic
  uncertainty) is usually smaller than with ``"weights"`` (measured in
  ``tests/test_export.py`` and ``benchmarks/export.py``).
* ``"weights"``: the kernels themselves are drawn at run time,
  ``W_s = mu_m + sigma_m * eps_s``, one draw per Monte Carlo sample ``s``
  shared by the whole batch of that sample (the exact posterior predictive).
  Dense: one batched matmul ``(S, N, in) x (S, in, out)``. Convolution: the
  tiled batch is split into its S sample groups and convolved with its own
  kernel, an unrolled loop of S convolutions in the graph (TFLite's builtin
  CONV_2D accepts a run-time filter; grouped convolution is not portable
  across LiteRT kernels). The graph grows linearly in S; S = 32 is fine.
  ``mu_m`` and ``sigma_m`` feed a multiply-add, not a convolution, so the
  TFLite converter stores them dense.

* ``"moments"``: no sampling inside the network; one pass propagates the mean
  and variance of every activation (`tfp_bcnn.moments`, diagonal Gaussian)
  with the ``"lrt"`` constant kernels, and the S samples are drawn from the
  Gaussian of the logits only (module `tfp_bcnn.export._moments`). Cost: one
  pass of about three times the deterministic arithmetic, whatever S.

Monte Carlo samples are drawn inside one call by tiling the batch S times
(sample-major: row ``s * N + n`` is sample ``s`` of example ``n``), at the
first layer that samples (`tfp_bcnn._tiling.tile_after_prefix`): the
deterministic layers before it run once on the N rows, so a Bayesian head
costs one deterministic pass plus S passes of the head; there are no
``tf.map_fn`` or while loops, which would need Flex. Random draws use
``RandomStandardNormal`` with ``seed = seed2 = 0``: no seed is traced into the
graph (not even after ``keras.utils.set_random_seed``), so TensorFlow and
LiteRT seed each kernel from the OS and two fresh interpreters draw different
samples; the op's state advances, so every invocation draws fresh samples.

Export needs the TensorFlow backend in the exporting process (a model trained
on JAX or PyTorch is saved as ``.keras`` and loaded with
``KERAS_BACKEND=tensorflow`` for export), because the non-Bayesian layers are
traced as Keras layers.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfp_bcnn import _mixture
from tfp_bcnn import _validation as check
from tfp_bcnn._compat import all_layers
from tfp_bcnn._tiling import tile_after_prefix
from tfp_bcnn.layers import (
    BayesianLayer,
    GaussianHead,
    MCDropout,
    Rank1Layer,
)
from tfp_bcnn.kl import bayesian_layers
from tfp_bcnn.moments import MAX_POOLS, _output_layer

from ._rank1 import MixtureMomentsForm, Rank1Inference
from ._random import sign_flip_normal, standard_normal, uniform

__all__ = ["SAMPLINGS", "OUTPUT_NAMES", "REGRESSION_OUTPUT_NAMES", "InferenceGraph",
           "export_info", "gaussian_summaries", "summaries"]

SAMPLINGS = ("lrt", "weights", "moments")
#: Outputs of the ``serving_default`` signature, in this order.
OUTPUT_NAMES = ("mean", "std", "predictive_entropy", "aleatoric", "epistemic")
#: ... and of a ``GaussianHead`` regressor (dense or not), in this order.
REGRESSION_OUTPUT_NAMES = ("mean", "aleatoric_variance", "epistemic_variance", "variance", "std")
#: probabilities are clipped below at this value inside the log of an entropy
#: (``0 * log(0)`` is 0; float32's smallest normal number keeps log finite).
_TINY = float(np.finfo(np.float32).tiny)


def _entropy(p):
    return -tf.reduce_sum(p * tf.math.log(tf.maximum(p, _TINY)), axis=-1)


def summaries(probs, return_samples: bool = False) -> dict:
    """Monte Carlo summaries of per-sample class probabilities.

    Args:
        probs: ``(S, N, C)`` probabilities of S Monte Carlo samples; a dense
            model's ``(S, N, *spatial, C)`` (per pixel: the reductions are
            over the samples, axis 0, and the classes, the last axis).
        return_samples: also return ``probs`` as ``"samples"``.

    Returns:
        dict with ``mean`` ``(N, C)`` (mean over samples), ``std`` ``(N, C)``
        (over samples, ddof=0), ``predictive_entropy`` ``H[mean]``, ``aleatoric``
        ``mean_s H[p_s]`` (expected entropy) and ``epistemic`` (their
        difference, the mutual information, clipped at 0), each ``(N,)`` in
        nats (dense: ``(N, *spatial, C)`` and ``(N, *spatial)``) -- the
        definitions of ``tfp_bcnn._prediction.summarize`` (what
        `tfp_bcnn.predict` and the runtime compute in NumPy), here in
        TensorFlow ops so that they run inside the exported file.
    """
    mean = tf.reduce_mean(probs, axis=0)
    std = tf.sqrt(tf.reduce_mean(tf.square(probs - mean[None]), axis=0))
    predictive_entropy = _entropy(mean)
    aleatoric = tf.reduce_mean(_entropy(probs), axis=0)
    epistemic = tf.maximum(predictive_entropy - aleatoric, 0.0)
    out = {
        "mean": mean,
        "std": std,
        "predictive_entropy": predictive_entropy,
        "aleatoric": aleatoric,
        "epistemic": epistemic,
    }
    if return_samples:
        out["samples"] = probs
    return out


def gaussian_summaries(samples, return_samples: bool = False) -> dict:
    """Monte Carlo summaries of sampled ``GaussianHead`` outputs, in TensorFlow ops.

    Args:
        samples: ``(S, N, [*spatial,] 2K)``, ``[mu_s, sigma_s]`` on the last axis.
        return_samples: also return ``samples``.

    Returns:
        dict of `REGRESSION_OUTPUT_NAMES`, each ``(N, [*spatial,] K)``: ``mean =
        mean_s mu_s``, ``aleatoric_variance = mean_s sigma_s^2``,
        ``epistemic_variance = mean_s (mu_s - mean)^2``, ``variance`` their sum
        and ``std`` its root -- ``tfp_bcnn._prediction.summarize_gaussian``'s
        definitions (what `tfp_bcnn.predict` and the runtime compute in NumPy).
    """
    k = samples.shape[-1] // 2
    mu, sigma = samples[..., :k], samples[..., k:]
    mean = tf.reduce_mean(mu, axis=0)
    aleatoric = tf.reduce_mean(tf.square(sigma), axis=0)
    epistemic = tf.reduce_mean(tf.square(mu - mean[None]), axis=0)
    variance = aleatoric + epistemic
    out = dict(zip(REGRESSION_OUTPUT_NAMES,
                   (mean, aleatoric, epistemic, variance, tf.sqrt(variance))))
    if return_samples:
        out["samples"] = samples
    return out


def _check_head(model, from_logits: bool) -> bool:
    """Whether ``model`` is a ``GaussianHead`` regressor (a head elsewhere: ValueError)."""
    regression = isinstance(_output_layer(model), GaussianHead)
    heads = [la for la in all_layers(model, include_self=True) if isinstance(la, GaussianHead)]
    if heads and not regression:
        raise ValueError(
            "Export supports a GaussianHead only as the model's output layer. "
            f"Received: layer={heads[0].name!r} inside model={model.name!r}"
        )
    if regression and from_logits:
        raise ValueError(
            "`from_logits=True` does not apply to a GaussianHead regressor. "
            f"Received: from_logits={from_logits!r}"
        )
    return regression


# ---------------------------------------------------------------- the layers
def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32)


class _PosteriorConstants(keras.layers.Layer):
    """Holds the masked posterior of one Bayesian layer as non-trainable weights.

    Weights (frozen into constants by the TFLite converter): ``kernel_mean``
    ``mu * mask``; for ``"lrt"`` ``kernel_variance`` ``(sigma * mask)^2``, for
    ``"weights"`` ``kernel_std`` ``sigma * mask`` (both from the layer's
    ``kernel_posterior``); ``bias`` or ``bias_loc`` and ``bias_std``. Masked
    entries are exactly +0.0.

    With ``sparse=True`` (``"weights"`` only, and only when it is smaller:
    fewer than 2/3 of the kernel unpruned) ``kernel_mean`` and ``kernel_std``
    hold only the unpruned entries and ``kernel_indices`` ``(nnz, 1)`` int32
    their flat positions; the kernels are rebuilt with a scatter at run time.
    """

    def __init__(self, source: BayesianLayer, sampling: str, sparse: bool = False, **kwargs):
        super().__init__(name=f"{source.name}_posterior", dtype="float32", **kwargs)
        keep = _numpy(source.kernel_mask) != 0
        mu, sigma = (np.where(keep, _numpy(t), 0.0).astype(np.float32)
                     for t in source.kernel_posterior())
        self.kernel_shape = mu.shape
        self.kernel_indices = None
        if sampling == "lrt":
            self.kernel_mean = self._constant("kernel_mean", mu)
            self.kernel_variance = self._constant("kernel_variance", np.square(sigma))
        elif sparse and 3 * int(keep.sum()) < 2 * keep.size:
            flat = np.flatnonzero(keep.reshape(-1)).astype(np.int32)
            self.kernel_indices = self._constant("kernel_indices", flat[:, None], "int32")
            self.kernel_mean = self._constant("kernel_mean", mu.reshape(-1)[flat])
            self.kernel_std = self._constant("kernel_std", sigma.reshape(-1)[flat])
        else:
            self.kernel_mean = self._constant("kernel_mean", mu)
            self.kernel_std = self._constant("kernel_std", sigma)
        self.bias = self.bias_loc = self.bias_std = None
        if source.bias is not None:
            self.bias = self._constant("bias", _numpy(source.bias))
        elif source.bias_loc is not None:
            self.bias_loc = self._constant("bias_loc", _numpy(source.bias_loc))
            self.bias_std = self._constant("bias_std", _numpy(source.bias_sigma))
        self.built = True

    def _constant(self, name, value, dtype="float32"):
        return self.add_weight(
            name=name,
            shape=value.shape,
            initializer=keras.initializers.Constant(value),
            trainable=False,
            dtype=dtype,
        )

    def moments(self):
        """``(kernel_mean, kernel_variance, bias mean or None, bias variance or None)``
        (``"lrt"`` constants): the ``posterior`` of ``BayesianLayer.preactivation_moments``."""
        if self.bias_std is not None:
            return self.kernel_mean, self.kernel_variance, self.bias_loc, tf.square(self.bias_std)
        return self.kernel_mean, self.kernel_variance, self.bias, None


class _BayesianInference(keras.layers.Layer):
    """Export-only stand-in for a `BayesianLayer`: its sampling with unseeded builtin ops.

    The maths is the source layer's: ``"lrt"`` samples the Gaussian of its
    ``preactivation_moments`` and ``"weights"`` applies its ``linear`` map
    (or, Dense, its ``grouped_linear``) to kernels drawn here, on the
    constants of `_PosteriorConstants`, always channels_last (a channels_first
    layer's input is transposed in and its output back). What is the
    exporter's own: the draws (`tfp_bcnn.export._random`, no seed in the
    graph), the sparse scatter of the kernels, the grouping of the tiled
    batch and the CONV_2D filter layout. Input and output shapes are those of
    the source layer. In ``"weights"`` mode the batch must be ``num_samples``
    tiled groups (sample-major).
    """

    def __init__(self, source, constants, sampling, num_samples, **kwargs):
        super().__init__(name=f"{source.name}_{sampling}", dtype="float32", **kwargs)
        self.constants = constants
        self.sampling = sampling
        self.num_samples = int(num_samples)
        self.rank = source.rank
        self.units = source.units
        self.activation = source.activation
        self.kernel_shape = tuple(int(d) for d in constants.kernel_shape)
        # Bound methods of the source (not the layer itself, which would be
        # tracked and bring its seed generator into the exported graph).
        self._source_output_shape = source.compute_output_shape
        self._linear = source.linear
        self._grouped_linear = source.grouped_linear
        self._preactivation_moments = source.preactivation_moments
        # TFLite's CONV_2D filter is (out, h, w, in): see `_split_kernels`.
        self._conv2d = self.rank == 2 and type(source).linear is BayesianLayer.linear
        self.channels_first = self.rank > 0 and source.data_format == "channels_first"
        self.built = True

    def compute_output_shape(self, input_shape):
        return self._source_output_shape(input_shape)

    def _group(self, x):
        """``(S * N, ...)`` -> ``(S, N, ...)``."""
        return tf.reshape(x, tf.concat([[self.num_samples, -1], tf.shape(x)[1:]], 0))

    def _ungroup(self, x):
        return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))

    def _draw_kernels(self):
        """S posterior kernel draws, sample axis last: ``(*kernel_shape, S)``."""
        c, s = self.constants, self.num_samples
        if c.kernel_indices is None:
            eps = standard_normal((*self.kernel_shape, s))
            return c.kernel_mean[..., None] + c.kernel_std[..., None] * eps
        nnz = int(c.kernel_indices.shape[0])
        eps = standard_normal((nnz, s))
        values = c.kernel_mean[:, None] + c.kernel_std[:, None] * eps
        size = int(np.prod(self.kernel_shape))
        dense = tf.scatter_nd(c.kernel_indices, values, [size, s])
        return tf.reshape(dense, [*self.kernel_shape, s])

    def _split_kernels(self, kernels):
        """``(*kernel_shape, S)`` -> S kernels of ``kernel_shape``.

        A 2-D convolution draws its kernels in TFLite's CONV_2D filter layout
        ``(out, h, w, in)`` and transposes each back, so that the converter
        cancels its filter transpose against ours (no TRANSPOSE per sample).
        """
        s = self.num_samples
        if self._conv2d:
            ks = tf.unstack(tf.transpose(kernels, [4, 3, 0, 1, 2]), num=s, axis=0)
            return [tf.transpose(k, [1, 2, 3, 0]) for k in ks]
        perm = [self.rank + 2, *range(self.rank + 2)]
        return tf.unstack(tf.transpose(kernels, perm), num=s, axis=0)

    def _sample_weights(self, x):
        """``"weights"``: kernel ``s`` applied to sample group ``s`` of the tiled batch."""
        c, s = self.constants, self.num_samples
        kernels = self._draw_kernels()  # (*kernel_shape, S)
        if self.rank == 0:  # one batched matmul (S, M, in) x (S, in, units)
            out = self._grouped_linear(x, tf.transpose(kernels, [2, 0, 1]))
        else:  # an unrolled loop of S convolutions (no map_fn: it would need Flex)
            xs = tf.unstack(self._group(x), num=s, axis=0)
            out = tf.concat([self._linear(a, k, data_format="channels_last")
                             for a, k in zip(xs, self._split_kernels(kernels))], axis=0)
        if c.bias is not None:
            out = out + c.bias
        elif c.bias_loc is not None:  # one bias draw per sample, as the kernel
            b = c.bias_loc[None] + c.bias_std[None] * standard_normal((s, self.units))
            b = tf.reshape(b, [s] + [1] * (len(out.shape) - 1) + [self.units])
            out = self._ungroup(self._group(out) + b)
        return out

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.channels_first:
            x = tf.transpose(x, [0, *range(2, self.rank + 2), 1])
        if self.sampling == "lrt":
            # biases are added to the convolutions' outputs first: the converter
            # folds them into the CONV_2D bias (no full-tensor ADD per layer)
            mean, var = self._preactivation_moments(
                x, posterior=self.constants.moments(), data_format="channels_last")
            out = mean + tf.sqrt(var) * sign_flip_normal(mean, self.num_samples)
        else:
            out = self._sample_weights(x)
        if self.activation is not None:
            out = self.activation(out)
        if self.channels_first:
            out = tf.transpose(out, [0, self.rank + 1, *range(1, self.rank + 1)])
        return out


class _DropoutInference(keras.layers.Layer):
    """Export-only stand-in for `MCDropout`: ``x * (u < keep) / keep``, builtin ops.

    ``keep = 1 - rate``; ``u ~ U[0, 1)`` has the layer's ``mask_shape`` (its
    ``noise_shape``, None entries, and all of it when None, the input's size), so every
    row of the tiled batch gets its own mask, as in Keras. TFLite ops:
    RANDOM_UNIFORM, LESS, CAST, MUL.
    """

    def __init__(self, source: MCDropout, **kwargs):
        super().__init__(name=f"{source.name}_inference", dtype="float32", **kwargs)
        self.keep = 1.0 - float(source.rate)
        self._mask_shape = source.mask_shape
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.keep == 1.0:
            return x
        shape = self._mask_shape(x)
        mask = tf.cast(uniform(tf.shape(x) if shape is None else shape) < self.keep, tf.float32)
        return x * (mask * (1.0 / self.keep))


# ------------------------------------------------------------ model rewrite
def _samples(layer) -> bool:
    """Whether ``layer`` is, or holds, an export layer that draws noise."""
    sampling = (_BayesianInference, _DropoutInference, Rank1Inference)
    return any(isinstance(sub, sampling) for sub in all_layers(layer, include_self=True))


def _has_bayesian(layer) -> bool:
    """Whether ``layer`` is or holds a layer that export replaces."""
    if any(True for _ in bayesian_layers(layer)):
        return True
    if any(isinstance(sub, Rank1Layer) for sub in all_layers(layer, include_self=True)):
        return True
    return any(isinstance(sub, MCDropout) for sub in all_layers(layer, include_self=True))


def _is_reduced_precision(layer) -> bool:
    """Any layer (``layer`` or one nested in it) computing in a 16-bit float."""
    sublayers = all_layers(layer, include_self=True)
    return any(sub.compute_dtype in ("float16", "bfloat16") for sub in sublayers)


def _float32_copy(layer):
    """A float32 twin of a layer of a mixed-precision model, sharing nothing.

    The exported graphs compute in float32 whatever the training policy was
    (TFLite has no float16 MaxPool, and SavedModel outputs stay float32): the
    layer is rebuilt from its config with ``dtype="float32"``, built from its
    build config and given the (float32) weights of the original.
    """
    config = layer.get_config()
    config["dtype"] = "float32"
    copy = type(layer).from_config(config)
    build_config = layer.get_build_config()
    if build_config is not None:
        copy.build_from_config(build_config)
    copy.set_weights(layer.get_weights())
    return copy


def _substitute(model, sampling, num_samples, store, sparse=False):
    """Clone ``model`` with every Bayesian layer replaced; other layers are shared.

    ``store`` (id of a source layer -> its export form) lets the tiled and the
    single-sample graphs share constants and float32 copies.
    """

    def clone_function(layer):
        if isinstance(layer, Rank1Layer):  # rank-1 mixture layers: export/_rank1.py
            if id(layer) not in store:
                store[id(layer)] = Rank1Inference(layer)
            return store[id(layer)]
        if isinstance(layer, BayesianLayer):
            if id(layer) not in store:
                store[id(layer)] = _PosteriorConstants(layer, sampling, sparse)
            return _BayesianInference(layer, store[id(layer)], sampling, num_samples)
        if isinstance(layer, MCDropout):
            return _DropoutInference(layer)
        if isinstance(layer, keras.Model) and (
            _has_bayesian(layer) or _is_reduced_precision(layer)
        ):
            return _substitute(layer, sampling, num_samples, store, sparse)
        if _has_bayesian(layer):
            raise ValueError(
                "Export can replace Bayesian and MCDropout layers inside Sequential and "
                "functional models only, not inside a custom layer. "
                f"Received: layer={layer.name!r} ({type(layer).__name__})"
            )
        if _is_reduced_precision(layer):
            if id(layer) not in store:
                store[id(layer)] = _float32_copy(layer)
            return store[id(layer)]
        return layer

    try:
        return keras.models.clone_model(model, clone_function=clone_function)
    except ValueError as err:
        if "subclass" in str(err).lower() or "functional" in str(err).lower():
            raise ValueError(
                "Export supports Sequential and functional Keras models (subclassed "
                f"models cannot be cloned layer by layer). Received: model={model.name!r} "
                f"({type(model).__name__})"
            ) from err
        raise


def _check_args(num_samples, sampling, max_pool="separate"):
    check.positive_int("num_samples", num_samples)
    check.choice("sampling", sampling, SAMPLINGS)
    check.choice("max_pool", max_pool, MAX_POOLS)


class InferenceGraph:
    """TensorFlow inference functions of a Bayesian Keras classifier or regressor.

    Args:
        model: built Sequential or functional Keras model, one input, one
            output ``(batch, num_classes)`` of probabilities (or logits with
            ``from_logits=True``), or a dense (segmentation) model's
            ``(batch, *spatial, num_classes)``, softmax over the last axis
            (every field is then per pixel; all dimensions known); or a
            regressor whose output layer is a ``GaussianHead`` (per pixel
            or not), summarised by `gaussian_summaries`.
            Deterministic models are accepted (their samples coincide:
            epistemic 0).
        num_samples: Monte Carlo samples S per call (the batch is tiled S times).
        sampling: ``"lrt"``, ``"weights"`` or ``"moments"`` (see the module
            docstring).
        from_logits: the model outputs logits; softmax is applied per sample.
        sparse: with ``"weights"``, store only the unpruned kernel entries
            (see `_PosteriorConstants`); ignored by ``"lrt"`` and
            ``"moments"``, whose constant kernels the TFLite converter can
            store sparse itself.
        max_pool: with ``"moments"``, the max-pooling approximation
            (``"separate"`` or ``"clark"``, see `tfp_bcnn.moments`).

    Raises:
        ValueError: a non-TensorFlow Keras backend, an unbuilt, multi-input or
            multi-output model, a ``GaussianHead`` anywhere but at the output
            (or with ``from_logits=True``), or invalid arguments.
    """

    def __init__(
        self,
        model,
        num_samples: int = 32,
        sampling: str = "lrt",
        from_logits: bool = False,
        sparse: bool = False,
        max_pool: str = "separate",
    ):
        _check_args(num_samples, sampling, max_pool)
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                "Export traces the model into TensorFlow ops and needs the TensorFlow "
                "Keras backend: save the model as .keras and load it in a process with "
                f"KERAS_BACKEND=tensorflow. Received: backend={keras.backend.backend()!r}"
            )
        if not isinstance(model, keras.Model):
            raise ValueError(f"Expected a keras.Model. Received: model={type(model).__name__}")
        if not model.built:
            raise ValueError(
                "The model must be built (call it once or give it an Input). "
                f"Received: model={model.name!r}"
            )
        self.regression = _check_head(model, bool(from_logits))
        try:
            input_shape = model.input_shape
            output_shape = model.output_shape
        except (AttributeError, ValueError) as err:
            raise ValueError(
                "Could not read the model's input and output shapes. "
                f"Received: model={model.name!r}"
            ) from err
        if isinstance(input_shape, list) or isinstance(output_shape, list):
            raise ValueError(
                "Export supports models with one input and one output. "
                f"Received: input_shape={input_shape}, output_shape={output_shape}"
            )
        if len(output_shape) < 2 or any(d is None for d in output_shape[1:]):
            raise ValueError(
                "Export expects a classifier output (batch, num_classes) or a dense one "
                "(batch, *spatial, num_classes), every dimension but the batch known. "
                f"Received: output_shape={output_shape}"
            )
        if any(d is None for d in input_shape[1:]):
            raise ValueError(
                "Every input dimension but the batch must be known. "
                f"Received: input_shape={input_shape}"
            )
        self.model = model
        self.num_samples = int(num_samples)
        self.sampling = sampling
        self.from_logits = bool(from_logits)
        self.input_shape = (None, *(int(d) for d in input_shape[1:]))
        self.num_classes = int(output_shape[-1])
        #: ``(*spatial, C)``: ``(C,)`` for a classifier, ``(H, W, C)`` for segmentation.
        self.output_shape = tuple(int(d) for d in output_shape[1:])
        self.max_pool = max_pool
        components = _mixture.check_num_samples(model, self.num_samples)
        if sampling == "moments":
            from ._moments import MomentsForm
            extra = () if components is None else (components,)
            self._moments = (MixtureMomentsForm if extra else MomentsForm)(
                model, self.input_shape, self.from_logits, max_pool,
                lambda layer: _PosteriorConstants(layer, "lrt"), *extra,
            )
            self._trackables = self._moments.trackables
            return
        store = {}
        self._moments = None
        tiled = _substitute(model, sampling, self.num_samples, store, sparse)
        # Run the deterministic prefix once, tile from the first sampling layer on.
        self._tiled = tile_after_prefix(tiled, self.num_samples, _samples)
        self._single = _substitute(model, sampling, 1, store, sparse)
        self._trackables = [self._tiled, self._single, *store.values()]

    @property
    def input_signature(self):
        return [tf.TensorSpec(self.input_shape, tf.float32, name="images")]

    @property
    def trackables(self):
        """Models and layers whose variables the functions read."""
        return list(self._trackables)

    @property
    def variables(self):
        seen, out = set(), []
        for obj in self.trackables:
            for v in obj.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    def _probabilities(self, net, x):
        out = tf.cast(net(x, training=False), tf.float32)
        return tf.nn.softmax(out, axis=-1) if self.from_logits else out

    def sample(self, images):
        """One stochastic forward pass: ``{"probabilities": (N, *spatial, C)}``
        (a regressor: ``{"outputs": (N, *spatial, 2K)}``, ``[mean, std]``)."""
        key = "outputs" if self.regression else "probabilities"
        if self._moments is not None:
            return {key: self._moments.probabilities(images, 1)[0]}
        return {key: self._probabilities(self._single, images)}

    def predict(self, images, return_samples: bool = False):
        """S samples in one call; see `summaries` (``samples``: ``(S, N, *spatial, C)``)."""
        s = self.num_samples
        summarize = gaussian_summaries if self.regression else summaries
        if self._moments is not None:
            probs = self._moments.probabilities(images, s)
            return summarize(probs, return_samples=return_samples)
        probs = self._probabilities(self._tiled, images)  # tiles after the prefix
        probs = tf.reshape(probs, [s, -1, *self.output_shape])
        return summarize(probs, return_samples=return_samples)


def export_info(graph: InferenceGraph) -> dict:
    """What an exported file holds, stored in it for `describe`.

    Returns:
        ``{"format_version": 1, "sampling": ..., "num_samples": S,
        "max_pool": ... (``"moments"`` only), "num_classes": C}``, and for
        a dense model ``"output_shape": [*spatial, C]``, for a regressor
        ``"head": "gaussian"``.
    """
    info = {
        "format_version": 1,
        "sampling": graph.sampling,
        "num_samples": graph.num_samples,
        "num_classes": graph.num_classes,
    }
    if graph.sampling == "moments":
        info["max_pool"] = graph.max_pool
    if len(graph.output_shape) > 1:
        info["output_shape"] = list(graph.output_shape)
    if graph.regression:
        info["head"] = "gaussian"
    return info
