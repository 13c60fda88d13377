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


def clipped_relu_moments(mean, var, upper):
    """Mean and variance of ``min(max(x, 0), upper)``, ``x ~ N(mean, var)`` (``var > 0``).

    In standard units (``r = 1 / sqrt(var)``, ``s = sqrt(var) = var r``) the
    clips sit at ``a = -mean r`` and ``b = a + upper r``; with ``Phi`` /
    ``phi`` from `normal_cdf_pdf` evaluated once per clip::

        A  = a Phi(a) + phi(a)               (E[(a - z)+], z ~ N(0, 1))
        B  = b (1 - Phi(b)) - phi(b)         (-E[(z - b)+])
        D  = A + B                           (E[y - mean] / s)
        E2 = Phi(b) - Phi(a) + a A + b B     (E[(y - mean)^2] / var)
        m  = mean + s D,   v = var max(E2 - D^2, 0)

    the module docstring's centred moments with ``-mean = s a`` and
    ``upper - mean = s b`` substituted: the same values up to rounding, in
    about 37 elementwise ops instead of 45 (one ``RSQRT`` for the
    ``SQRT`` and two divisions, no ``mean^2`` or ``(upper - mean)^2``
    terms). Centred, so a Gaussian well inside ``(0, upper)`` (``A, B ~ 0``,
    ``E2 ~ 1``) keeps the variance's relative accuracy.

    Args:
        mean, var: tensors of one shape; ``var`` must be > 0.
        upper: the clip value (> 0), e.g. 6 for ReLU6.

    Returns:
        ``(m, v)``, tensors of that shape.
    """
    r = ops.rsqrt(var)
    a = -mean * r
    b = a + upper * r
    cdf_a, pdf_a = normal_cdf_pdf(a)
    cdf_b, pdf_b = normal_cdf_pdf(b)
    big_a = a * cdf_a + pdf_a
    big_b = b * (1.0 - cdf_b) - pdf_b
    d = big_a + big_b
    e2 = (cdf_b - cdf_a) + a * big_a + b * big_b
    return mean + (var * r) * d, var * ops.relu(e2 - ops.square(d))


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
