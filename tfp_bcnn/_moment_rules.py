"""Closed-form moment rules of `tfp_bcnn.moments`: normal cdf / pdf, ReLU, ReLU6, max.

Elementwise Keras ops only (TFLite builtins, no ``erf``), so the same code
runs in eager prediction, in the SavedModel and in the TFLite export. The
derivations are in `tfp_bcnn.moments`'s module docstring; every name here is
re-exported from there.
"""

from __future__ import annotations

from keras import ops

#: ``Phi(z) ~ sigmoid(z (_CDF_LINEAR + _CDF_CUBIC z^2))`` (Bowling et al. 2009,
#: "A logistic approximation to the cumulative normal distribution").
_CDF_LINEAR, _CDF_CUBIC = 1.5976, 0.07056
_LOG_SQRT_2PI = 0.9189385332046727
#: Added to the variance of every linear layer's output, so that ``sqrt(var)``
#: and ``mean / sqrt(var)`` stay finite (a pruned or zero-input unit has
#: variance 0). Folded into the bias of the variance convolution in TFLite.
VAR_FLOOR = 1e-12


def normal_cdf_pdf(z):
    """``(Phi(z), phi(z))`` with TFLite builtin ops only (no ``erf``).

    ``Phi(z) ~ sigmoid(1.5976 z + 0.07056 z^3)`` (Bowling et al. 2009, max
    abs error 1.4e-4) and the exact ``phi(z) = exp(-z^2 / 2) / sqrt(2 pi)``
    (sharing ``z^2``). The cheaper ``sigmoid(1.702 z)`` with
    ``phi ~ 1.702 Phi (1 - Phi)`` saves three ops per activation but errs by
    0.0095 in ``Phi`` and 0.027 in ``phi`` (6.7 % of ``phi(0)``): 0.027 s in
    the mean of a ReLU at ``z = 0`` (measured in ``tests/test_moments.py``).
    """
    z2 = ops.square(z)
    cdf = ops.sigmoid(z * (_CDF_LINEAR + _CDF_CUBIC * z2))
    pdf = ops.exp(-0.5 * z2 - _LOG_SQRT_2PI)
    return cdf, pdf


def relu_moments(mean, var):
    """Mean and variance of ``relu(x)``, ``x ~ N(mean, var)`` (``var > 0``).

    ``s = sqrt(var)``, ``z = mean / s``, ``Phi`` / ``phi`` from
    `normal_cdf_pdf`::

        m = mean Phi(z) + s phi(z)
        v = max(m (mean - m) + var Phi(z), 0)

    (``v = E[relu(x)^2] - m^2`` rewritten with
    ``E[relu(x)^2] = mean m + var Phi``, which has no cancellation).

    Args:
        mean, var: tensors of one shape; ``var`` must be > 0.

    Returns:
        ``(m, v)``, tensors of that shape.
    """
    s = ops.sqrt(var)
    cdf, pdf = normal_cdf_pdf(mean / s)
    m = mean * cdf + s * pdf
    v = ops.relu(m * (mean - m) + var * cdf)
    return m, v


def _tail_pdf(z):
    """``(1 - Phi(z), phi(z))``: `normal_cdf_pdf`'s logistic cdf with its sign
    folded into the constants (``sigmoid(z (-1.5976 - 0.07056 z^2))``, no
    ``1 - Phi`` pass), the exact pdf; 8 elementwise ops."""
    z2 = ops.square(z)
    tail = ops.sigmoid(z * (-_CDF_LINEAR - _CDF_CUBIC * z2))
    return tail, ops.exp(-0.5 * z2 - _LOG_SQRT_2PI)


def clipped_relu_moments(mean, var, upper):
    """Mean and variance of ``min(max(x, 0), upper)``, ``x ~ N(mean, var)`` (``var > 0``).

    In standard units (``r = 1 / sqrt(var)``) the clips sit at
    ``a = -w0`` and ``b = upper r - w0`` with ``w0 = mean r``; with the
    logistic cdf / exact pdf of `normal_cdf_pdf` evaluated once per clip
    (``Phi(a) = 1 - Phi(w0)``, the sign folded into the constants)::

        A = a Phi(a) + phi(a)          (E[(a - z)+], z ~ N(0, 1))
        B = b (1 - Phi(b)) - phi(b)    (-E[(z - b)+])
        D = A + B                      (E[y - mean] / s),   w = w0 + D = E[y] / s
        R = P + A (a - D) + B (b - D)  (Var[y] / var),  P = Phi(b) - Phi(a)
          = 1 - Phi(a) - (1 - Phi(b)) - A w + B (b - D)
        m = w / r,   v = var max(R, 0)

    (``R = E2 - D^2`` of the centred second moment
    ``E2 = P + a A + b B``, regrouped so that ``D^2`` is never formed: the
    module docstring's rule, the same values up to rounding, in 35
    elementwise ops, against 38 for the previous ``E2 - D^2`` form and 45
    for the uncentred one.) Centred: a Gaussian well inside ``(0, upper)``
    (``A, B ~ 0``, ``P ~ 1``) keeps the variance's relative accuracy.
    Errors (logistic cdf, max 1.4e-4): see
    ``tests/test_moments.py::test_clipped_relu_moments_match_numerical_integration``.

    Args:
        mean, var: tensors of one shape; ``var`` must be > 0.
        upper: the clip value (> 0), e.g. 6 for ReLU6.

    Returns:
        ``(m, v)``, tensors of that shape.
    """
    r = ops.rsqrt(var)
    w0 = mean * r
    b = upper * r - w0
    cdf_a, pdf_a = _tail_pdf(w0)  # Phi(a) = 1 - Phi(-a), phi even
    tail_b, pdf_b = _tail_pdf(b)
    big_a = pdf_a - w0 * cdf_a
    big_b = b * tail_b - pdf_b
    d = big_a + big_b
    w = w0 + d
    ratio = (big_b * (b - d) - big_a * w) - (cdf_a + tail_b) + 1.0
    return w / r, var * ops.relu(ratio)


def max_moments(mean1, var1, mean2, var2):
    """Clark's moments of ``max(x1, x2)``, independent ``x_i ~ N(mean_i, var_i)``.

    ``d = mean1 - mean2``, ``t = sqrt(var1 + var2)`` (> 0), ``a = d / t``::

        e = d Phi(a) + t phi(a),   mean = mean2 + e,
        var = max(e (d - e) + var2 + (var1 - var2) Phi(a), 0)

    (Clark 1961; ``relu`` is the case ``mean2 = var2 = 0``).

    Returns:
        ``(mean, var)`` of the max (the Gaussian matching its two moments).
    """
    d = mean1 - mean2
    t = ops.sqrt(var1 + var2)
    cdf, pdf = normal_cdf_pdf(d / t)
    e = d * cdf + t * pdf
    var = ops.relu(e * (d - e) + var2 + (var1 - var2) * cdf)
    return mean2 + e, var
