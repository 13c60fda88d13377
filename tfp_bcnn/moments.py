"""Sampling-free prediction: one forward pass of means and variances.

Every activation of the network is treated as an independent Gaussian
``N(mean, var)`` (a diagonal, assumed-density-filtering approximation: Wu et
al. 2019, "Deterministic Variational Inference", https://arxiv.org/abs/1810.03958;
Gast & Roth 2018, https://arxiv.org/abs/1805.11327). One pass propagates the
pair through the layers; only the logits at the end are sampled (``C``
numbers per sample instead of one Gaussian per activation per sample).

Rules (``(*)`` a matrix product or a convolution, ``Phi`` / ``phi`` the normal
cdf / pdf):

* Bayesian Dense / Conv / DepthwiseConv / ConvTranspose (any estimator: all
  three have the same moments; ``(*)`` is the layer's own linear map),
  weights ``N(M, S^2)`` (masked: a pruned weight is 0 in ``M`` and ``S``) on
  inputs ``N(mu, v)``::

      mean = mu (*) M + b
      var  = (v + mu^2) (*) S^2 + v (*) M^2 + var(b)

  exact for independent inputs and weights; computed as
  ``v (*) (M^2 + S^2) + mu^2 (*) S^2`` (`tfp_bcnn.layers._linear`, the
  rule the layers' local reparameterization and the exports share).
  A deterministic Keras Dense /
  Conv is the case ``S = 0``: ``var = v (*) W^2``. A deterministic input
  (``v = 0``, e.g. the image) gives ``var = mu^2 (*) S^2``.
* ReLU, the rectified Gaussian, with ``s = sqrt(v)``, ``z = mu / s``::

      mean = mu Phi(z) + s phi(z)
      var  = mean (mu - mean) + v Phi(z)     (= E[relu^2] - mean^2, no cancellation)

  ``Phi(z) ~ sigmoid(1.5976 z + 0.07056 z^3)`` (max abs error 1.4e-4) and
  the exact ``phi``: TFLite has no builtin ``erf`` (it needs the Flex
  delegate); see `normal_cdf_pdf` for the cheaper form and its error.
  Checked against numerical integration in ``tests/test_moments.py``.
* Clipped ReLU ``y = min(max(x, 0), U)`` (``ReLU(max_value=U)``, ReLU6 of
  MobileNet, the ``relu6`` activation), with ``a = -mu / s``,
  ``b = (U - mu) / s``, ``P = Phi(b) - Phi(a)``, written around ``mu`` so
  that a Gaussian well inside ``(0, U)`` has no cancellation::

      d    = E[y] - mu = s (phi(a) - phi(b)) - mu Phi(a) + (U - mu) (1 - Phi(b))
      e2   = E[(y - mu)^2] = v (P + a phi(a) - b phi(b)) + mu^2 Phi(a)
                             + (U - mu)^2 (1 - Phi(b))
      mean = mu + d,   var = max(e2 - d^2, 0)

  Checked against numerical integration in ``tests/test_moments.py``.
* Max pooling: the max commutes with a monotone activation
  (``max_i relu(x_i) = relu(max_i x_i)``), so a ReLU that feeds a max pool is
  applied after it, to the max of the (Gaussian) pre-activations. Two forms:

  - ``"separate"`` (default): max-pool the means and the variances
    separately. Crude (on a 2x2 window of independent Gaussians: mean 0.4
    sd low on average, variance up to 3x too high), but two builtin ops
    instead of about 75; compared with ``"clark"`` on the whole network in
    ``benchmarks/moments.py``.
  - ``"clark"``: Clark's (1961) moments of the max of two independent
    Gaussians, ``d = mu1 - mu2``, ``t = sqrt(v1 + v2)``, ``a = d / t``::

        e    = d Phi(a) + t phi(a)            (E[max] - mu2)
        mean = mu2 + e
        var  = e (d - e) + v2 + (v1 - v2) Phi(a)

    applied pairwise over the window (exact for a window of two; the max
    is re-approximated by a Gaussian after each pair: on a 2x2 window
    0.014 sd in the mean, 13 % in the variance). ``"valid"`` padding,
    channels_last only.
* Average pooling: ``mean = avg(mu)``, ``var = avg(v) / n`` (``n`` inputs
  per window). Flatten, Reshape, Permute, padding, cropping: applied to both.
  Add / Subtract / Concatenate / Average: exact for independent inputs (a
  U-Net's skip concatenation joins the two moment pairs channel-wise).
  Upsampling: nearest (``UpSampling1D/2D/3D``) copies each input, both
  moments through the layer; bilinear ``UpSampling2D`` is linear, ``A mu
  B^T`` with per-axis interpolation matrices, so ``var = A^2 v (B^2)^T``
  (`bilinear_matrix`; other interpolations are refused).
* BatchNormalization (inference): ``y = g x + h`` so ``var = g^2 v``; one
  that alone reads a linear layer's output is folded into that layer's
  kernels and bias instead (`tfp_bcnn._bn_fold`; exact).
  Dropout and other noise layers: the identity (as at inference). MCDropout
  (always on), mask ``m ~ Bernoulli(1 - p)``:
  ``mean = mu``, ``var = (v + p mu^2) / (1 - p)``.
* The output: a final softmax is taken off (``Dense(..., activation="softmax")``
  or a ``Softmax`` / ``Activation("softmax")`` layer): the result is the
  Gaussian of the logits. A dense (segmentation) model's per-pixel softmax
  on the last axis is the same case: the logits are ``(N, H, W, C)``, and
  ``MomentsSampler`` draws them per pixel and applies the softmax over
  ``C``. A ``GaussianHead`` regressor (per pixel too) gives the Gaussian of
  its ``[mean, pre-softplus std]`` pre-activations.

What the diagonal form misses: one kernel draw is shared by every position
of a convolution and every example feature, which correlates activations;
dropping the correlations makes the logit variance, hence the mutual
information, smaller than Monte Carlo's, while its ranking of inputs holds
(measured in ``benchmarks/moments.py``).

Any other layer or activation raises a ``ValueError`` that names it and
points to ``method="mc"``.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from . import _bn_fold
from . import _validation as check
from . import layers as layers_lib
from .layers import BayesianLayer, GaussianHead
from .layers._linear import dense_map, linear_moments
from ._moment_layers import (
    _AVG_POOLS,
    _DENSE_CONV,
    _DEPTHWISE,
    _GLOBAL_AVG,
    _GLOBAL_MAX,
    _INFERENCE_IDENTITY,
    _MAX_POOLS,
    _SHAPE_LAYERS,
    _TRANSPOSE,
    _UPSAMPLING,
    PARAMETRIC_LAYERS,  # noqa: F401 (re-exported: export/_moments.py)
    _activation_name,
    _unsupported,
    _window_counts,
    bilinear_matrix,
    default_kernel_moments,
)
from ._moment_rules import (
    VAR_FLOOR,
    clipped_relu_moments,
    max_moments,
    normal_cdf_pdf,
    relu_moments,
)

__all__ = [
    "MAX_POOLS",
    "MomentsSampler",
    "OutputMoments",
    "bilinear_matrix",
    "default_kernel_moments",
    "max_moments",
    "normal_cdf_pdf",
    "propagate",
    "clipped_relu_moments",
    "relu_moments",
]

#: Max-pooling approximations; the first is the default.
MAX_POOLS = ("separate", "clark")


@dataclasses.dataclass(frozen=True)
class _Gaussian:
    """Moments of one tensor. ``var`` None: deterministic (variance exactly 0).

    ``positive``: ``var`` is known to be > 0 (so ``sqrt`` and division are
    safe without a floor). ``pending``: an activation still to apply
    (``"relu"``), kept so that a max pool can act on the pre-activations.
    """

    mean: object
    var: object = None
    positive: bool = False
    pending: str | None = None


@dataclasses.dataclass(frozen=True)
class OutputMoments:
    """Gaussian moments of a model's output pre-activations.

    Attributes:
        mean: ``(N, K)`` means (logits of a classifier); a dense model's
            ``(N, *spatial, K)`` (per-pixel logits).
        variance: same shape, variances (zeros for a deterministic model).
        output: ``"softmax"`` (a final softmax was taken off: ``mean`` are
            logits), ``"linear"`` (the model output itself) or
            ``"gaussian_head"`` (the ``2 * units`` pre-activations of a
            ``GaussianHead``: mean and pre-softplus std).
        head: the ``GaussianHead`` layer when ``output == "gaussian_head"``.
    """

    mean: object
    variance: object
    output: str
    head: object = None


# ------------------------------------------------------------------ the maths
# --------------------------------------------------------------- propagation
class _Propagator:
    """Walks a Sequential or functional model, applying the rule of each layer."""

    def __init__(self, max_pool: str, kernel_moments: Callable, fold_batch_norm: bool = True):
        self.max_pool = max_pool
        self.kernel_moments = kernel_moments
        self.fold_batch_norm = fold_batch_norm
        self._folded = set()  # ids of BatchNormalization nodes folded into their input layer

    def _fold_target(self, layer, bn, g: _Gaussian) -> bool:
        """``bn`` follows ``layer`` and folds into its kernels (`tfp_bcnn._bn_fold`)."""
        return (self.fold_batch_norm and bn is not None
                and isinstance(layer, (BayesianLayer, *_DENSE_CONV))
                and not isinstance(layer, GaussianHead)
                and _bn_fold.can_fold(layer, bn, len(g.mean.shape)))

    # ---------------------------------------------------------------- walking
    def model(self, model, inputs: list[_Gaussian], final: bool) -> _Gaussian:
        if isinstance(model, keras.Sequential):
            g = inputs[0]
            layers = [
                layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
            ]
            i = 0
            while i < len(layers):
                layer, bn = layers[i], layers[i + 1] if i + 1 < len(layers) else None
                if self._fold_target(layer, bn, g):
                    g, i = self._linear(layer, self._apply_pending(g), False, bn=bn), i + 2
                    continue
                g = self.layer(layer, [g], final and i == len(layers) - 1)
                i += 1
            return g
        try:
            nodes_by_depth = model._nodes_by_depth
            model_inputs, model_outputs = model.inputs, model.outputs
        except AttributeError:
            nodes_by_depth = None
        if nodes_by_depth is None or not model_inputs:
            raise _unsupported(model, "a subclassed model has no layer graph to walk")
        if len(model_outputs) != 1:
            raise _unsupported(model, f"it has {len(model_outputs)} outputs, not one")
        values = {id(t): g for t, g in zip(model_inputs, inputs)}
        output_id = id(model_outputs[0])
        consumers = {}
        for nodes in nodes_by_depth.values():
            for node in nodes:
                for t in node.input_tensors:
                    consumers.setdefault(id(t), []).append(node)
        for depth in sorted(nodes_by_depth, reverse=True):
            for node in nodes_by_depth[depth]:
                if node.is_input or not node.operation:
                    continue
                if any(id(t) not in values for t in node.input_tensors):
                    continue
                if len(node.outputs) != 1:
                    raise _unsupported(node.operation, "it has several outputs")
                out = id(node.outputs[0])
                ins = [values[id(t)] for t in node.input_tensors]
                values[out] = self._node(node, ins, consumers.get(out, []),
                                         final and out == output_id, out == output_id)
        return values[output_id]

    def _node(self, node, ins, consumers, is_final: bool, is_output: bool) -> _Gaussian:
        """One functional node; a linear layer feeding only a BatchNormalization folds it."""
        if id(node) in self._folded:  # the BatchNormalization already folded in
            return ins[0]
        bn = consumers[0].operation if len(consumers) == 1 and not is_output else None
        if len(ins) == 1 and self._fold_target(node.operation, bn, ins[0]):
            self._folded.add(id(consumers[0]))
            return self._linear(node.operation, self._apply_pending(ins[0]), False, bn=bn)
        return self.layer(node.operation, ins, is_final)

    # ---------------------------------------------------------------- helpers
    def _apply_pending(self, g: _Gaussian) -> _Gaussian:
        if g.pending is None:
            return g
        if g.var is None:
            return _Gaussian(ops.relu(g.mean))
        var = g.var if g.positive else ops.maximum(g.var, VAR_FLOOR)
        mean, var = relu_moments(g.mean, var)
        return _Gaussian(mean, var)

    def _activate(self, layer, g: _Gaussian, activation, final: bool) -> _Gaussian:
        name = _activation_name(layer, activation)
        if name == "linear":
            return g
        if name == "softmax":
            if not final:
                raise _unsupported(layer, "softmax is supported only as the model output")
            return dataclasses.replace(g, pending="softmax")
        if name == "relu6":
            return self._clipped_relu(self._apply_pending(g), 6.0)
        return dataclasses.replace(g, pending="relu")

    def _clipped_relu(self, g: _Gaussian, upper: float) -> _Gaussian:
        if g.var is None:
            return _Gaussian(ops.clip(g.mean, 0.0, upper))
        var = g.var if g.positive else ops.maximum(g.var, VAR_FLOOR)
        mean, var = clipped_relu_moments(g.mean, var, upper)
        return _Gaussian(mean, var)

    @staticmethod
    def _run(layer, x, **kwargs):
        """``layer.call(x)`` in the dtype of the moments (that of the model input).

        ``layer(x)`` would cast ``x`` to the layer's compute dtype, float16
        under mixed precision, where activation variances of 1e-6 are
        subnormal; a layer whose ``call`` casts by itself is cast back.
        """
        dtype = (x[0] if isinstance(x, (list, tuple)) else x).dtype
        return ops.cast(layer.call(x, **kwargs), dtype)

    @staticmethod
    def _both(fn, g: _Gaussian, positive=None, var_fn=None) -> _Gaussian:
        var = None if g.var is None else (var_fn or fn)(g.var)
        return _Gaussian(fn(g.mean), var, g.positive if positive is None else positive)

    # ------------------------------------------------------------------ rules
    def layer(self, layer, inputs: list[_Gaussian], final: bool) -> _Gaussian:
        if isinstance(layer, keras.Model):
            return self.model(layer, [self._apply_pending(g) for g in inputs], final)
        if isinstance(layer, keras.layers.InputLayer):
            return inputs[0]
        if isinstance(layer, _MAX_POOLS + _GLOBAL_MAX):
            return self._max_pool(layer, inputs[0])
        gs = [self._apply_pending(g) for g in inputs]
        g = gs[0]
        rule = getattr(layer, "propagate_moments", None)
        if rule is not None:  # a layer with its own rule (rank-1 mixture layers)
            mean, var = rule(g.mean, g.var)
            return self._activate(layer, _Gaussian(mean, var, positive=True), layer.activation,
                                  final)
        if isinstance(layer, (BayesianLayer, *_DENSE_CONV)):
            return self._linear(layer, g, final)
        if isinstance(layer, GaussianHead):
            if not final:
                raise _unsupported(layer, "a GaussianHead is supported only as the model output")
            out = self._linear(layer.dense, g, final=False)
            return dataclasses.replace(out, pending="gaussian_head")
        if isinstance(layer, keras.layers.Activation):
            return self._activate(layer, g, layer.activation, final)
        if isinstance(layer, keras.layers.ReLU):
            if layer.negative_slope or layer.threshold:
                raise _unsupported(layer, "only ReLU and clipped ReLU (no slope, threshold)")
            if layer.max_value is not None:
                return self._clipped_relu(g, float(layer.max_value))
            return dataclasses.replace(g, pending="relu")
        if isinstance(layer, keras.layers.Softmax):
            return self._activate(layer, g, keras.activations.softmax, final)
        if isinstance(layer, _SHAPE_LAYERS):
            return self._both(lambda t: self._run(layer, t), g)
        if isinstance(layer, _UPSAMPLING):
            return self._upsample(layer, g)
        if isinstance(layer, _AVG_POOLS):
            return self._avg_pool(layer, g)
        if isinstance(layer, _GLOBAL_AVG):
            n = float(np.prod(g.mean.shape[1:-1] if layer.data_format == "channels_last"
                              else g.mean.shape[2:]))
            return self._both(lambda t: self._run(layer, t), g,
                              var_fn=lambda v: self._run(layer, v) / n)
        if isinstance(layer, keras.layers.BatchNormalization):
            return self._batch_norm(layer, g)
        if isinstance(layer, keras.layers.Rescaling):
            scale = ops.convert_to_tensor(layer.scale, dtype=g.mean.dtype)
            return self._both(lambda t: self._run(layer, t), g,
                              var_fn=lambda v: v * ops.square(scale))
        mc_dropout = getattr(layers_lib, "MCDropout", None)
        if mc_dropout is not None and isinstance(layer, mc_dropout):
            p = float(layer.rate)
            var = ops.square(g.mean) * p if g.var is None else g.var + p * ops.square(g.mean)
            return _Gaussian(g.mean, var / (1.0 - p), g.positive)
        if isinstance(layer, _INFERENCE_IDENTITY):
            return g
        if isinstance(layer, (keras.layers.Add, keras.layers.Subtract, keras.layers.Average)):
            return self._sum(layer, gs)
        if isinstance(layer, keras.layers.Concatenate):
            var = None
            if any(x.var is not None for x in gs):
                var = self._run(
                    layer, [ops.zeros_like(x.mean) if x.var is None else x.var for x in gs])
            return _Gaussian(self._run(layer, [x.mean for x in gs]), var)
        raise _unsupported(layer, "no moment rule for this layer")

    def _linear(self, layer, g: _Gaussian, final: bool, bn=None) -> _Gaussian:
        """A linear layer (`linear_moments`); a Bayesian layer's own
        ``preactivation_moments``, a plain Keras layer's with its map `_keras_linear`."""
        kernel_moments = self.kernel_moments(layer)
        if bn is not None:  # an inference BatchNormalization folded into the kernels
            kernel_moments = _bn_fold.fold(layer, kernel_moments, bn)
        if isinstance(layer, BayesianLayer):
            mean, var = layer.preactivation_moments(g.mean, g.var, kernel_moments,
                                                    variance_floor=VAR_FLOOR)
        else:
            channels_first = (not isinstance(layer, keras.layers.Dense)
                              and layer.data_format == "channels_first")
            mean, var = linear_moments(_keras_linear(layer), g.mean, g.var, *kernel_moments,
                                       channels_first=channels_first, variance_floor=VAR_FLOOR)
        out = _Gaussian(mean, var, positive=var is not None)
        return self._activate(layer, out, layer.activation, final)

    def _max_pool(self, layer, g: _Gaussian) -> _Gaussian:
        # max_i f(x_i) = f(max_i x_i) for the monotone pending activation.
        pending = g.pending if g.pending == "relu" else None
        if g.pending not in (None, "relu"):
            g = self._apply_pending(g)
        if g.var is None:
            out = _Gaussian(self._run(layer, g.mean))
        elif self.max_pool == "separate" or isinstance(layer, _GLOBAL_MAX):
            out = _Gaussian(self._run(layer, g.mean), self._run(layer, g.var), g.positive)
        else:
            out = self._clark_pool(layer, g)
        return dataclasses.replace(out, pending=pending)

    def _clark_pool(self, layer, g: _Gaussian) -> _Gaussian:
        if layer.padding != "valid" or layer.data_format != "channels_last":
            raise _unsupported(
                layer, "max_pool='clark' supports padding='valid', channels_last only "
                "(use max_pool='separate')"
            )
        spatial = tuple(int(d) for d in g.mean.shape[1:-1])
        sizes, strides = layer.pool_size, layer.strides
        out = [(n - k) // s + 1 for n, k, s in zip(spatial, sizes, strides)]
        var = g.var if g.positive else ops.maximum(g.var, VAR_FLOOR)
        mean = None
        for offset in np.ndindex(*sizes):
            index = (slice(None),) + tuple(
                slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(offset, out, strides)
            ) + (slice(None),)
            m_i, v_i = g.mean[index], var[index]
            if mean is None:
                mean, var_max = m_i, v_i
            else:
                mean, var_max = max_moments(mean, var_max, m_i, v_i)
        return _Gaussian(mean, var_max, positive=False)

    def _upsample(self, layer, g: _Gaussian) -> _Gaussian:
        """Nearest: a copy of each input (both moments through the layer); bilinear:
        ``mean = A mu B^T``, ``var = A^2 v (B^2)^T`` (`bilinear_matrix`)."""
        interpolation = getattr(layer, "interpolation", "nearest")
        if interpolation == "nearest" or g.var is None:
            return self._both(lambda t: self._run(layer, t), g)
        if interpolation != "bilinear":
            raise _unsupported(layer, f"interpolation {interpolation!r} (only 'nearest' "
                               "and 'bilinear')")
        first = layer.data_format == "channels_first"
        var = ops.transpose(g.var, (0, 2, 3, 1)) if first else g.var
        h, w = (int(d) for d in var.shape[1:3])
        a2, b2 = (ops.convert_to_tensor(np.square(bilinear_matrix(n, f)), dtype=var.dtype)
                  for n, f in ((h, layer.size[0]), (w, layer.size[1])))
        var = ops.einsum("qw,npwc->npqc", b2, ops.einsum("ph,nhwc->npwc", a2, var))
        var = ops.transpose(var, (0, 3, 1, 2)) if first else var
        return _Gaussian(self._run(layer, g.mean), var, g.positive)

    def _avg_pool(self, layer, g: _Gaussian) -> _Gaussian:
        if layer.data_format != "channels_last":
            raise _unsupported(layer, "average pooling moments need channels_last")
        spatial = tuple(int(d) for d in g.mean.shape[1:-1])
        counts = _window_counts(layer, spatial)
        return self._both(lambda t: self._run(layer, t), g,
                          var_fn=lambda v: self._run(layer, v) / counts)

    def _batch_norm(self, layer, g: _Gaussian) -> _Gaussian:
        scale = ops.rsqrt(ops.convert_to_tensor(layer.moving_variance) + layer.epsilon)
        if layer.scale:
            scale = scale * ops.convert_to_tensor(layer.gamma)
        axis = layer.axis % len(g.mean.shape)
        shape = [1] * len(g.mean.shape)
        shape[axis] = -1
        factor = ops.reshape(ops.square(scale), shape[1:])
        mean = self._run(layer, g.mean, training=False)
        var = None if g.var is None else g.var * factor
        return _Gaussian(mean, var)

    def _sum(self, layer, gs) -> _Gaussian:
        mean = self._run(layer, [x.mean for x in gs])
        vars_ = [x.var for x in gs if x.var is not None]
        if not vars_:
            return _Gaussian(mean)
        var = vars_[0]
        for v in vars_[1:]:
            var = var + v
        if isinstance(layer, keras.layers.Average):
            var = var / float(len(gs) ** 2)
        return _Gaussian(mean, var, all(x.positive for x in gs if x.var is not None))


def _keras_linear(layer) -> Callable:
    """``(x, kernel) -> x (*) kernel``, the linear map of a Keras Dense / Conv /
    DepthwiseConv / ConvTranspose layer (no bias, no activation)."""
    if isinstance(layer, keras.layers.Dense):
        return dense_map
    if isinstance(layer, _DEPTHWISE):
        return lambda x, k: ops.depthwise_conv(
            x, k, strides=layer.strides, padding=layer.padding,
            data_format=layer.data_format, dilation_rate=layer.dilation_rate)
    if isinstance(layer, _TRANSPOSE):
        return lambda x, k: ops.conv_transpose(
            x, k, strides=layer.strides, padding=layer.padding,
            output_padding=layer.output_padding, data_format=layer.data_format,
            dilation_rate=layer.dilation_rate)
    return layer.convolution_op


def _check_max_pool(max_pool):
    return check.choice("max_pool", max_pool, MAX_POOLS)


def propagate(
    model: keras.Model,
    x,
    *,
    max_pool: str = "separate",
    kernel_moments: Callable | None = None,
    fold_batch_norm: bool = True,
) -> OutputMoments:
    """One forward pass of means and variances through ``model``.

    Args:
        model: a built Sequential or functional Keras model with one input and
            one output (nested models allowed); see the module docstring for
            the layers supported.
        x: a batch of inputs (deterministic: variance 0), a backend tensor or
            array; traced or eager.
        max_pool: ``"separate"`` or ``"clark"`` (module docstring).
        kernel_moments: optional ``layer -> (kernel_mean, kernel_variance or
            None, bias or None, bias_variance or None)`` (used by the export
            to read constant kernels); default: from the layer's variables
            (Bayesian: masked ``mu``, ``sigma^2``; Keras Dense/Conv:
            ``kernel``, None).
        fold_batch_norm: fold every inference BatchNormalization that alone
            reads a linear layer's output into that layer's kernels and bias
            (`tfp_bcnn._bn_fold`: exact, fewer full-tensor ops); False applies
            the separate rule (``var = a^2 v``), for comparison.

    Returns:
        `OutputMoments` of the output pre-activations (logits when the model
        ends in a softmax).

    Raises:
        ValueError: an unsupported layer or activation (named, with a pointer
            to ``method="mc"``), a softmax or GaussianHead anywhere but at the
            output, or an invalid ``max_pool``.
    """
    _check_max_pool(max_pool)
    propagator = _Propagator(max_pool, kernel_moments or default_kernel_moments,
                             bool(fold_batch_norm))
    x = ops.convert_to_tensor(x)
    inputs = getattr(model, "inputs", None)
    if inputs and len(inputs) == 1:
        x = ops.cast(x, inputs[0].dtype)
    g = propagator.model(model, [_Gaussian(x)], final=True)
    output, head = "linear", None
    if g.pending == "softmax":
        output = "softmax"
    elif g.pending == "gaussian_head":
        output, head = "gaussian_head", _output_layer(model)
    else:
        g = propagator._apply_pending(g)
    var = ops.zeros_like(g.mean) if g.var is None else g.var
    return OutputMoments(g.mean, var, output, head)


def _output_layer(model):
    layer = model
    while getattr(layer, "layers", None):
        layer = layer.layers[-1]
    return layer


def head_outputs(head, pre_activations):
    """``[mean, std]`` of a ``GaussianHead`` from samples of its ``2K`` pre-activations."""
    k = head.units
    mean = pre_activations[..., :k]
    std = np.logaddexp(0.0, pre_activations[..., k:]) + head.min_std
    return np.concatenate([mean, std], axis=-1)


# ------------------------------------------------------------------ sampling
def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


#: model -> {(backend, max_pool): compiled moment pass}; weak, holds no model.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class MomentsSampler:
    """``chunk (b, ...) -> samples (S, b, K)`` (dense: ``(S, b, *spatial, K)``) drawn
    from the output Gaussian.

    The forward call of ``tfp_bcnn.predict(..., method="moments")``: one
    compiled moment pass per chunk (``tf.function`` on TensorFlow, ``jax.jit``
    of a stateless pass on JAX, eager otherwise), then ``S`` draws of the
    output pre-activations ``z_s = mean + sqrt(var) * eps_s`` in NumPy (global
    NumPy generator, seeded by ``keras.utils.set_random_seed``), returned as
    ``softmax(z_s)`` for a classifier or ``[mean, softplus(.) + min_std]``
    for a ``GaussianHead``. Same protocol as the Monte Carlo forward calls
    of `tfp_bcnn.uncertainty` (``start``, call, ``finish``).

    Args:
        model: a built model; ``x_example`` one batch of inputs, used to check
            the model (every layer supported, a usable output) eagerly.
        num_samples: ``S``.
        from_logits: the model outputs logits (no final softmax).
        max_pool: see `propagate`.

    Raises:
        ValueError: an unsupported layer, or an output that is neither a
            softmax, a GaussianHead, nor logits with ``from_logits=True``.
    """

    def __init__(self, model, x_example, num_samples: int, from_logits: bool,
                 max_pool: str = "separate"):
        _check_max_pool(max_pool)
        probe = propagate(model, x_example[:1], max_pool=max_pool)
        if probe.output == "linear" and not from_logits:
            raise ValueError(
                "method='moments' needs a classifier whose output is a softmax (or logits, "
                "with from_logits=True) or a GaussianHead regressor; the last layer of "
                f"{model.name!r} has no softmax. Received: from_logits={from_logits!r}"
            )
        self.output = probe.output
        self.head = probe.head
        self.num_samples = int(num_samples)
        key = (keras.backend.backend(), max_pool)
        try:
            per_model = _COMPILED.setdefault(model, {})
        except TypeError:  # not weak-referenceable: no cache
            per_model = {}
        if key not in per_model:
            per_model[key] = self._compile(weakref.ref(model), max_pool)
        self._fn = per_model[key]

    @staticmethod
    def _compile(ref, max_pool):
        def moments(x):
            out = propagate(ref(), x, max_pool=max_pool)
            return out.mean, out.variance

        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            # autograph=False: the propagation is Python over layers (no tensor-dependent
            # control flow); autograph re-parsed bound methods from source and, after a
            # Monte Carlo predict on the same MobileNetV2, returned None from
            # kernel_posterior ("closure mismatch" warning).
            fn = tf.function(moments, reduce_retracing=True, autograph=False)
            return lambda x: fn(tf.convert_to_tensor(x))
        if backend == "jax":
            import jax

            def pure(values, x):
                mapping = list(zip(ref().variables, values))
                with keras.StatelessScope(state_mapping=mapping):
                    return moments(x)

            jitted = jax.jit(pure)
            return lambda x: jitted([v.value for v in ref().variables], x)
        return moments

    def start(self):
        return self

    def finish(self):
        pass

    def __call__(self, x):
        mean, var = (np.asarray(ops.convert_to_numpy(t), np.float64) for t in self._fn(x))
        eps = np.random.standard_normal((self.num_samples, *mean.shape))
        z = mean[None] + np.sqrt(np.maximum(var, 0.0))[None] * eps
        if self.output == "gaussian_head":
            return head_outputs(self.head, z).astype(np.float32)
        return _softmax(z).astype(np.float32)
