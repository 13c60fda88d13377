"""The linear maps of the layers and the Gaussian moments of their outputs.

`dense_map` is the Dense layers' matrix product (one 2-D product on a feature
map); `linear_moments` is the one rule for the mean and variance of
``x (*) W + b`` with Gaussian inputs and weights, used by the
local-reparameterization estimator (``BayesianLayer.preactivation_moments``),
the ``"lrt"`` export and the moment pass of `tfp_bcnn.moments` (Bayesian
layers and plain Keras Dense / Conv alike).
"""

from __future__ import annotations

from keras import ops

__all__ = ["dense_map", "linear_moments", "linear_variance"]


def dense_map(inputs, kernel):
    """``inputs @ kernel`` over the last axis: ``(b, ..., in) x (in, out) -> (b, ..., out)``.

    A feature map ``(b, *spatial, in)`` whose dimensions but the batch are
    known is one 2-D matrix product between static reshapes (TFLite's
    FULLY_CONNECTED, no dynamic-shape tensordot); otherwise ``ops.matmul``.
    """
    if len(inputs.shape) > 2 and None not in inputs.shape[1:]:
        out = ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), kernel)
        return ops.reshape(out, (-1, *inputs.shape[1:-1], kernel.shape[-1]))
    return ops.matmul(inputs, kernel)


def linear_variance(linear, mean, variance, kernel_mean, kernel_variance=None):
    """Variance of ``x (*) W`` (no bias) for independent ``x ~ N(mu, v)``, ``W ~ N(M, S^2)``::

        v (*) M^2 + (v + mu^2) (*) S^2  =  v (*) (M^2 + S^2) + mu^2 (*) S^2

    The right-hand form is computed: ``M^2 + S^2`` is a constant of the
    kernel (folded by the TFLite converter), so there is no ``v + mu^2``
    pass over the activations. Merging the two maps into one on
    concatenated channels (``[v, mu^2] (*) [M^2 + S^2 ; S^2]``) was measured
    in ``benchmarks/mobilenet.py`` and gave no consistent gain (BENCHMARKS.md).

    Args:
        linear: ``(inputs, kernel) -> outputs``, the layer's linear map.
        mean, variance: the input moments; ``variance`` None for a
            deterministic input.
        kernel_mean: ``M``; kernel_variance: ``S^2``, or None for a
            deterministic kernel. ``mu^2`` is formed in ``S^2``'s dtype.

    Returns:
        The output variance, or None when ``variance`` and ``S^2`` are None.
    """
    if kernel_variance is None:
        return None if variance is None else linear(variance, ops.square(kernel_mean))
    second = ops.square(ops.cast(mean, kernel_variance.dtype))
    if variance is None:
        return linear(second, kernel_variance)
    total = ops.cast(ops.square(kernel_mean), kernel_variance.dtype) + kernel_variance
    return linear(variance, total) + linear(second, kernel_variance)


def linear_moments(linear, mean, variance, kernel_mean, kernel_variance=None, bias=None,
                   bias_variance=None, *, channels_first=False, variance_floor=0.0):
    """Mean and variance of ``y = x (*) W + b`` for independent Gaussian ``x``, ``W``, ``b``.

    With ``x ~ N(mu, v)``, ``W ~ N(M, S^2)`` and ``b ~ N(b0, var(b))``, all
    entries independent and ``(*)`` any linear map whose outputs are sums of
    ``x_i w_i`` terms (matrix product, convolution, depthwise or transposed
    convolution)::

        mean = mu (*) M + b0
        var  = v (*) M^2 + (v + mu^2) (*) S^2 + var(b) + floor

    exact per output element. ``v`` None (a deterministic input) gives the
    local-reparameterization form ``var = mu^2 (*) S^2 + var(b)``; ``S^2``
    None (a deterministic kernel) ``var = v (*) M^2``.

    Args:
        linear: ``(inputs, kernel) -> outputs``, the layer's linear map.
        mean: ``mu``, the input means; variance: ``v`` (same shape) or None.
        kernel_mean: ``M``; kernel_variance: ``S^2`` or None. The second
            moment ``mu^2`` is formed in ``S^2``'s dtype (float32 variances
            under a float16 policy).
        bias: ``b0`` ``(units,)`` or None; bias_variance: ``var(b)`` or None.
        channels_first: the outputs have their units on axis 1 (the
            ``(units,)`` vectors are reshaped to ``(units, 1, ..., 1)``).
        variance_floor: added to every variance (with ``var(b)``: one add).

    Returns:
        ``(mean, var)`` of the outputs; ``var`` None when ``v`` and ``S^2``
        are None (a deterministic output).
    """
    def per_unit(vector, like):
        if channels_first:
            return ops.reshape(vector, (-1,) + (1,) * (len(like.shape) - 2))
        return vector

    out_mean = linear(mean, kernel_mean)
    if bias is not None:
        out_mean = out_mean + per_unit(ops.cast(bias, out_mean.dtype), out_mean)
    var = linear_variance(linear, mean, variance, kernel_mean, kernel_variance)
    if var is None:
        return out_mean, None
    floor = None
    if variance_floor:
        units = int(out_mean.shape[1 if channels_first else -1])
        floor = ops.full((units,), variance_floor, dtype=var.dtype)
    if bias_variance is not None:
        bias_variance = ops.cast(bias_variance, var.dtype)
        floor = bias_variance if floor is None else floor + bias_variance
    if floor is not None:
        var = var + per_unit(floor, var)
    return out_mean, var
