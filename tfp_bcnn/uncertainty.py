"""Monte Carlo prediction and its uncertainty decomposition.

``predict`` runs a model ``S`` times on every input (each forward pass draws
new weights, or new per-example perturbations, from the variational
posterior) and summarises the ``S`` predictive distributions ``p_s``:

* information-theoretic split of the predictive entropy (Depeweg et al. 2018,
  https://arxiv.org/abs/1710.07283; Gal 2016, "Uncertainty in Deep Learning")::

      H[pbar]           = aleatoric                + epistemic
      predictive entropy = E_s H[p_s] (expected entropy) + mutual information

* variance split of Kwon et al. 2018 (https://arxiv.org/abs/1806.05978), used
  by Shridhar et al. 2019 (https://arxiv.org/abs/1901.02731)::

      diag Cov[y] = mean_s p_s (1 - p_s)  +  mean_s (p_s - pbar)^2
                  = aleatoric_variance    +  epistemic_variance
                  = pbar (1 - pbar)

``decompose`` is the same computation on an array of samples, in NumPy only:
both call ``tfp_bcnn._prediction`` (the result types and summaries, shared
with the TF-free runtime of exported files).

How the ``S`` samples are drawn depends on the Bayesian layers of the model:

* Flipout / local reparameterization (and plain Keras layers): every example
  of a batch gets its own noise, so each batch of ``b`` inputs is tiled
  ``S`` times and run as ONE compiled forward call of ``S * b`` rows. A
  Flipout layer draws one kernel noise per call, so the runner calls it with
  ``sample_groups=S`` (one kernel noise per tiled copy: the S samples of an
  example are independent posterior draws, not S sign patterns of one draw);
  where it cannot (a subclassed model, a Flipout layer inside a nested
  model, the torch backend) the batch is run ``S`` times instead.
  On TensorFlow, a graph model whose first layers are deterministic is
  tiled only where it first samples (`tfp_bcnn._tiling`): a Bayesian head
  on a deterministic body costs one body pass.
* any ``"reparameterization"`` layer (one kernel per call, shared by the
  batch): tiling would repeat one kernel draw, so the batch is run ``S``
  times, one compiled forward call per kernel draw.

The compiled forward call is a ``tf.function`` on TensorFlow and a
``jax.jit`` of ``model.stateless_call`` on JAX (the random-seed state is
threaded through the calls and written back to the model at the end, so two
``predict`` calls draw different samples); other backends call the model
eagerly.

``method="moments"`` replaces the S forward passes by one pass of
propagated means and variances (`tfp_bcnn.moments.MomentsSampler`) and S
draws of the logits; the summaries are the same.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence

import keras
import numpy as np

from . import _mixture
from . import _validation as check
from ._compat import all_layers
from ._forward_runners import (  # noqa: F401 (the cache and the tiling check: used by tests)
    _FORWARD_CACHE,
    _forward,
    _is_stochastic,
    _tiled_after_prefix,
    groups_flipout,
)
from ._prediction import (
    Prediction,
    RegressionPrediction,
    concatenate,
    summarize,
    summarize_gaussian,
)
from .kl import bayesian_layers
from .layers import GaussianHead, MCDropout

__all__ = ["METHODS", "Prediction", "RegressionPrediction", "decompose", "predict"]

#: ``predict(method=...)``: Monte Carlo, or one pass of propagated moments.
METHODS = ("mc", "moments")


# ------------------------------------------------------- results and the maths
# `Prediction`, `RegressionPrediction` and the summaries live in `_prediction`
# (NumPy only), shared with the TF-free runtime of exported files.


def _probability_problem(samples: np.ndarray) -> str | None:
    """Why ``samples`` are not probability vectors (None when they are)."""
    dtype = samples.dtype if np.issubdtype(samples.dtype, np.floating) else np.float64
    tol = max(1e-3, 10 * float(np.finfo(dtype).eps))
    if not np.all(np.isfinite(samples)):
        return "they contain NaN or inf"
    lo, hi = float(samples.min()), float(samples.max())
    sums = samples.sum(axis=-1, dtype=np.float64)
    if lo < -tol or hi > 1 + tol or np.any(np.abs(sums - 1) > tol):
        return (
            f"they are not probabilities in [0, 1] summing to 1 over the last "
            f"axis (min={lo:.4g}, max={hi:.4g}, sums in "
            f"[{sums.min():.4g}, {sums.max():.4g}])"
        )
    return None


def decompose(samples, *, return_samples: bool = False) -> Prediction:
    """Uncertainty decomposition of Monte Carlo class probabilities (NumPy only).

    Args:
        samples: array ``(S, N, C)``: ``S`` samples of the class probabilities
            of ``N`` examples over ``C`` classes (rows sum to 1); or
            ``(S, N, *spatial, C)`` for a dense model (e.g. per-pixel
            probabilities ``(S, N, H, W, C)``, summed to 1 over the last axis).
        return_samples: keep ``samples`` in the result.

    Returns:
        A ``Prediction``; see its docstring for the formula of every field
        (per pixel for dense samples: ``mean (N, H, W, C)``, entropies
        ``(N, H, W)``).

    Raises:
        ValueError: ``samples`` of rank below 3, empty, or not probabilities
            (negative, above 1, rows not summing to 1 within
            ``max(1e-3, 10 eps)``, NaN).

    Example:

    >>> p = decompose(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
    >>> p.mean, p.aleatoric, p.epistemic          # two confident, opposite draws
    (array([[0.5, 0.5]]), array([0.]), array([0.69314718]))
    """
    samples = np.asarray(samples)
    if samples.ndim < 3 or 0 in samples.shape:
        raise ValueError(
            "`samples` must be a non-empty array of shape (num_samples, "
            "num_examples, num_classes) or, dense, (num_samples, num_examples, "
            f"*spatial, num_classes). Received: samples.shape={samples.shape}"
        )
    problem = _probability_problem(samples)
    if problem is not None:
        raise ValueError(f"`samples` must be class probabilities, but {problem}.")
    return summarize(samples, return_samples)


# ---------------------------------------------------------------- the model
def _can_tile(model) -> bool:
    """True when tiling a batch gives independent samples.

    That is when no Bayesian layer uses the ``"reparameterization"``
    estimator (one kernel per call, shared by the whole batch) and the
    Flipout layers, if any, can be told that the batch holds ``S`` tiled
    copies (`_forward_runners.groups_flipout`: one kernel noise per copy;
    else the copies would share one). Other layers are assumed to draw their
    noise per example (local reparameterization, an ``MCDropout`` with a mask
    per example) or to be deterministic.
    """
    if any(
        isinstance(layer, MCDropout) and layer.shares_mask_across_batch
        for layer in all_layers(model)
    ):
        return False
    if any(layer.estimator == "reparameterization" for layer in bayesian_layers(model)):
        return False
    return groups_flipout(model)


def _output_layer(model):
    layer = model
    while getattr(layer, "layers", None):
        layer = layer.layers[-1]
    return layer


def _is_regression(model) -> bool:
    return isinstance(_output_layer(model), GaussianHead)


def _scales_inputs(model) -> bool:
    """True when the model rescales its own inputs (no unscaled-input warning)."""
    scalers = (keras.layers.Rescaling, keras.layers.Normalization)
    return any(isinstance(layer, scalers) for layer in getattr(model, "layers", ()))


def _empty_result(model, num_samples, regression, return_samples):
    """The result of ``predict`` on no examples: every field with N = 0."""
    try:
        out_shape = tuple(model.outputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        out_shape = (None,)
    if not out_shape or any(d is None for d in out_shape):
        raise ValueError(
            "`x` is empty and the model's output shape is unknown (give the model an "
            "Input), so no empty result of the right shape can be made. Received: x with 0 "
            "examples"
        )
    samples = np.zeros((num_samples, 0, *out_shape), np.float32)
    if regression:
        return summarize_gaussian(samples, return_samples)
    return summarize(samples, return_samples)


def _input_spec(model):
    """``(shape, dtype)`` of the model's single input, or ``(None, None)``."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None, None
    if not inputs:
        return None, None
    if len(inputs) != 1:
        raise ValueError(
            f"predict() supports models with one input. Received: a model with {len(inputs)} inputs"
        )
    return tuple(inputs[0].shape), inputs[0].dtype


def _check_batch(x: np.ndarray, shape) -> None:
    if x.ndim == 0:
        raise ValueError(f"`x` must be a batch (N, ...). Received: x.shape={x.shape}")
    if shape is None:
        return
    if x.ndim != len(shape):
        hint = " (one example? add a batch axis: x[None])" if x.ndim == len(shape) - 1 else ""
        raise ValueError(
            f"`x` must have rank {len(shape)}, shape (batch, "
            f"{', '.join(str(d) for d in shape[1:])}), to match the model input{hint}. "
            f"Received: x.shape={x.shape}"
        )
    if any(d is not None and d != xd for d, xd in zip(shape[1:], x.shape[1:])):
        raise ValueError(
            f"`x` must have shape (batch, {', '.join(str(d) for d in shape[1:])}) to "
            f"match the model input. Received: x.shape={x.shape}"
        )


# ---------------------------------------------------------------- the inputs
def _is_dataset(x) -> bool:
    if "tensorflow" not in sys.modules:  # no tf.data.Dataset can exist
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def _dataset_arrays(ds, shape, batch_size) -> Iterator[np.ndarray]:
    """The ``x`` of every element of a ``tf.data.Dataset``, as NumPy batches."""
    spec = ds.element_spec
    if isinstance(spec, (tuple, list)):
        if not 1 <= len(spec) <= 3:
            raise ValueError(
                "Dataset elements must be x, (x,), (x, y) or (x, y, sample_weight). "
                f"Received: a tuple of {len(spec)} components"
            )
        ds = ds.map(lambda *element: element[0])
        spec = spec[0]
    if isinstance(spec, dict) or not hasattr(spec, "shape"):
        raise ValueError(
            "Dataset elements must be x, (x, y) or (x, y, sample_weight) with x a "
            f"single tensor. Received: element_spec={spec}"
        )
    if shape is not None and spec.shape.rank == len(shape) - 1:
        ds = ds.batch(batch_size)  # an unbatched dataset of single examples
    for batch in ds.as_numpy_iterator():
        yield np.asarray(batch)


def _chunks(arrays: Iterable[np.ndarray], batch_size: int, shape, dtype, warn_unscaled=True):
    """Re-batch a stream of arrays into ``(chunk, num_valid)`` of one shape.

    Chunks hold ``batch_size`` rows; the last one is padded by repeating its
    last row (so the compiled call sees one shape and does not retrace),
    except when all the data fit in one chunk, which is then left unpadded.
    Every array is checked by `_validation.images` (NaN/inf refused, named by their
    index in the whole stream) before any of it is run. Yields nothing for
    empty data.
    """
    buffer, count, emitted, seen = [], 0, False, 0
    for array in arrays:
        array = np.asarray(array)
        _check_batch(array, shape)
        check.images(array, offset=seen, warn_unscaled=warn_unscaled, stacklevel=5)
        seen += len(array)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        buffer.append(array)
        count += len(array)
        while count >= batch_size:
            joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
            yield joined[:batch_size], batch_size
            buffer, count, emitted = [joined[batch_size:]], count - batch_size, True
    if count:
        joined = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
        if emitted:
            pad = np.repeat(joined[-1:], batch_size - count, axis=0)
            joined = np.concatenate([joined, pad])
        yield joined, count


# ------------------------------------------------------------------ predict
def _monte_carlo(model, x, num_samples, batch_size, return_samples, from_logits, tile, verbose,
                 method="mc"):
    regression = _is_regression(model)
    if regression and from_logits:
        raise ValueError(
            "`from_logits=True` does not apply to a GaussianHead regressor. "
            f"Received: from_logits={from_logits!r}"
        )
    shape, dtype = _input_spec(model)
    if _is_dataset(x):
        arrays, steps = _dataset_arrays(x, shape, batch_size), None
    else:
        x = np.asarray(x)
        _check_batch(x, shape)
        arrays, steps = [x], math.ceil(len(x) / batch_size)
    chunks = _chunks(arrays, batch_size, shape, dtype, warn_unscaled=not _scales_inputs(model))
    components = _mixture.check_num_samples(model, num_samples)
    if components and not tile:
        raise ValueError(
            "A rank-1 mixture model needs tiled sampling (its rows map to components), but a "
            "layer of it draws one kernel per call (estimator='reparameterization'). "
            f"Received: model={model.name!r}")
    calls_per_chunk = 1 if tile else num_samples
    progbar = None
    if verbose:
        # verbose=2: one plain line at the end (no \r, \b or colour codes), for logs
        progbar = keras.utils.Progbar(None if steps is None else steps * calls_per_chunk,
                                      verbose=2 if verbose == 2 else 1)

    parts, done = [], 0
    forward = None
    for chunk, valid in chunks:
        if forward is None:
            if not model.built:  # build eagerly, outside any compiled function
                model(chunk[:1], training=False)
            if method == "moments" and components:  # K moment passes, mixed draws
                forward = _mixture.MixtureMomentsSampler(
                    model, chunk, num_samples, from_logits, components).start()
            elif method == "moments":  # one moment pass per chunk; S logit draws
                from .moments import MomentsSampler

                forward = MomentsSampler(model, chunk, num_samples, from_logits).start()
            else:
                forward = _forward(model, num_samples if tile else 1, from_logits).start()
        draws = []
        for _ in range(calls_per_chunk):
            draws.append(forward(chunk))
            done += 1
            if progbar is not None:
                progbar.update(done)
        samples = draws[0] if tile else np.concatenate(draws, axis=0)
        samples = samples[:, :valid]
        if regression:
            parts.append(summarize_gaussian(samples, return_samples))
            continue
        if samples.ndim < 3:
            raise ValueError(
                "predict() needs a classifier with outputs of shape (batch, classes) or "
                "(batch, *spatial, classes), or a GaussianHead regressor. Received: outputs "
                f"of shape {(None,) + samples.shape[2:]}"
            )
        problem = _probability_problem(samples)
        if problem is not None:
            hint = "" if from_logits else "; if the model outputs logits, pass from_logits=True"
            raise ValueError(
                f"The model outputs must be class probabilities, but {problem}{hint}. "
                f"Received: from_logits={from_logits!r}"
            )
        parts.append(summarize(samples, return_samples))
    if forward is not None:
        forward.finish()
    if progbar is not None and steps is None:
        progbar.update(done, finalize=True)
    if not parts:
        return _empty_result(model, num_samples, regression, return_samples)
    return concatenate(parts)


# ------------------------------------------------------------------ ensembles
def _known_output_shape(model):
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        return None
    return tuple(shape) if isinstance(shape, (tuple, list)) else None


def _check_members(members) -> list:
    members = list(members)
    if not members:
        raise ValueError(
            "An ensemble needs at least one model. Received: model=[] (an empty list)"
        )
    for i, member in enumerate(members):
        if not isinstance(member, keras.Model):
            raise ValueError(
                f"Every ensemble member must be a keras.Model. Received: model[{i}] of type "
                f"{type(member).__name__}"
            )
    shapes = [_known_output_shape(m) for m in members]
    known = [(i, s) for i, s in enumerate(shapes) if s is not None]
    if any(s[1:] != known[0][1][1:] for _, s in known):
        listed = ", ".join(f"model[{i}] ({members[i].name}): {s}" for i, s in known)
        raise ValueError(
            "Every ensemble member must have the same output shape. Received: " + listed
        )
    return members


def _ensemble(members, x, num_samples, batch_size, return_samples, from_logits, verbose,
              method="mc"):
    """Pools the samples of every member: ``(M * S, N, C)``, or ``(M, N, C)``."""
    members = _check_members(members)
    stochastic = [_is_stochastic(m) for m in members]
    draws = num_samples if any(stochastic) else 1
    pooled, first = [], None
    for i, (member, random) in enumerate(zip(members, stochastic)):
        p = _monte_carlo(member, x, num_samples if random else 1, batch_size, True,
                         from_logits, tile=method == "moments" or _can_tile(member),
                         verbose=verbose, method=method)
        kind = (type(p), p.samples.shape[1:])
        if first is None:
            first = kind
        elif kind != first:
            raise ValueError(
                "Every ensemble member must have the same kind of output and output shape. "
                f"Received: model[0] gives {first[0].__name__} samples of shape "
                f"(S, {', '.join(map(str, first[1]))}), model[{i}] ({member.name}) gives "
                f"{kind[0].__name__} samples of shape (S, {', '.join(map(str, kind[1]))})"
            )
        pooled.append(np.broadcast_to(p.samples, (draws, *p.samples.shape[1:])))
    samples = np.concatenate(pooled, axis=0)
    if first[0] is RegressionPrediction:
        return summarize_gaussian(samples, return_samples)
    return summarize(samples, return_samples)


def predict(
    model: keras.Model | Sequence[keras.Model],
    x,
    num_samples: int = 32,
    batch_size: int = 256,
    return_samples: bool = False,
    from_logits: bool = False,
    *,
    method: str = "mc",
    verbose: bool | int = 0,
) -> Prediction | RegressionPrediction:
    """Monte Carlo prediction of a Bayesian (or any Keras) model, with uncertainty.

    Runs ``num_samples`` stochastic forward passes on every example (inference
    mode: ``training=False``; the Bayesian layers sample at every call) and
    decomposes the uncertainty of the ``S`` predictive distributions ``p_s``:

    * classifier (softmax outputs, or logits with ``from_logits=True``):
      returns a ``Prediction`` with, per example, ``pbar = mean_s p_s`` and::

          predictive_entropy = H[pbar] = -sum_c pbar_c log pbar_c     (N,)
          aleatoric          = mean_s H[p_s]     (expected entropy)    (N,)
          epistemic          = H[pbar] - mean_s H[p_s]  (mutual info)  (N,)
          std                = sqrt(mean_s (p_s - pbar)^2)             (N, C)
          aleatoric_variance = mean_s p_s (1 - p_s)                    (N, C)
          epistemic_variance = mean_s (p_s - pbar)^2                   (N, C)

      (nats; the two variances are Kwon et al.'s diagonals and sum to
      ``pbar (1 - pbar)``). A deterministic model gives ``epistemic = 0``.
    * regressor whose output layer is a ``tfp_bcnn.layers.GaussianHead``:
      returns a ``RegressionPrediction`` (predictive mean, aleatoric variance
      = mean of predicted variances, epistemic variance = variance of
      predicted means, their sum and its square root).
    * dense models (segmentation, super-resolution), the same per pixel: a
      segmentation model outputs ``(N, H, W, C)`` probabilities (softmax
      over the last axis), and ``mean``, ``std`` and the Kwon variances are
      ``(N, H, W, C)``, ``predictive_entropy``, ``aleatoric`` and
      ``epistemic`` ``(N, H, W)``; a dense regressor ends in a
      ``GaussianHead`` applied per pixel, output ``(N, H, W, 2K)`` =
      ``[mean, std]``, and every field is ``(N, H, W, K)``. The maths is the
      one above, reduced over the samples (axis 0) and the classes (the last
      axis) only; any number of axes between (``(N, L, C)``,
      ``(N, D, H, W, C)``) works the same way.

    Sampling: when every Bayesian layer is Flipout or local
    reparameterization (or there is none), each batch of ``b`` examples is
    tiled ``S`` times and run in one compiled call of ``S * b`` rows (the
    Flipout layers draw one kernel noise per tiled copy, ``sample_groups``);
    with any reparameterization layer (one kernel per call, shared by the
    batch), or Flipout layers the runner cannot reach (subclassed or nested
    models, the torch backend), each batch runs ``S`` times. Either way a forward call holds at most
    ``batch_size * num_samples`` rows: lower ``batch_size`` if memory is
    tight. The last batch is padded to ``batch_size`` (and the padding
    dropped) so the compiled call is traced once.

    Rank-1 mixture models (`tfp_bcnn.layers.Rank1Dense` / ``Rank1ConvND``,
    ``models.lenet5(posterior="rank1")``): the samples are spread evenly over
    the K components, sample ``s`` from component ``floor(s * K / S)`` (the
    layers map the tiled rows to components in blocks; `tfp_bcnn._mixture`),
    so ``num_samples`` must be a multiple of K (``ValueError`` otherwise) and
    the predictive is the equal-weight mixture; with ``method="moments"`` one
    moment pass per component (the batch tiled K times) and the S logit draws
    from the mixture of the K Gaussians, S / K from each.

    Deep ensembles (Lakshminarayanan et al. 2017,
    https://arxiv.org/abs/1612.01474): pass a list or tuple of ``M`` models
    (each trained from its own seed, e.g. by
    ``tfp_bcnn.ensemble.train_ensemble``) and every member counts as samples
    of one equal-weight mixture. Deterministic members give one sample each
    (``S_total = M``); if any member is stochastic (Bayesian layers or
    ``MCDropout``), every member gives ``num_samples`` samples (a deterministic
    member's one output repeated), so ``S_total = M * num_samples`` and each
    member weighs ``1 / M``. The pooled samples are decomposed as above:
    ``pbar`` is the ensemble mean, ``epistemic`` the mutual information
    between the label and the member (and its weights), the disagreement of
    the members. With ``return_samples=True``, ``samples`` is member-major:
    rows ``m * S .. (m + 1) * S - 1`` belong to ``model[m]``. An ensemble
    keeps every member's samples until the end, ``S_total * N * C`` values.

    Memory bound: besides ``x`` (and one float32 copy of it), at most one
    forward call of ``batch_size * num_samples`` rows is in flight, and the
    results grow as ``O(N * C)`` (plus ``S * N * C`` with
    ``return_samples=True``), whatever ``N``; for a dense model count the
    per-pixel elements: ``C`` is then ``H * W * C`` (results ``O(N * H * W *
    C)``, and one chunk's ``S * batch_size * H * W * C`` sampled values in
    float64 while it is summarised: 32 samples of 256 images of 64x64x11 are
    2.9 GiB, so pass a smaller ``batch_size`` for large dense outputs). 20,000
    MNIST-sized images with 64 samples through LeNet-5 Flipout peaked at 1.8
    GiB resident (0.7 GiB above the process before the call) with
    ``batch_size=256`` and 1.1 GiB (+0.04 GiB) with 64, where the 1.28 million
    tiled rows at once would need 22 GiB for the first convolution's output
    alone (BENCHMARKS.md, "Reliability"). ``predict`` may be
    called from several threads at once (on TensorFlow the compiled call is
    shared; results are as from one thread).

    Inputs: NaN or infinity is refused (``ValueError`` naming the first
    images by index); images whose ``max |x|`` exceeds 20 (raw 0-255 pixels)
    get a ``UserWarning`` unless the model has a ``Rescaling`` or
    ``Normalization`` layer; an empty ``x`` returns fields with ``N = 0``.

    Args:
        model: a Keras model with one input and one output, or a list / tuple
            of such models with the same output shape (an ensemble).
        x: inputs ``(N, *input_shape)`` (NumPy or array-like), or a
            ``tf.data.Dataset`` whose elements are ``x``, ``(x, y)`` or
            ``(x, y, sample_weight)`` (batched or not; only ``x`` is used).
        num_samples: ``S``, Monte Carlo samples per example, >= 1.
        batch_size: examples per forward call, >= 1.
        return_samples: also return the samples, ``(S, N, C)`` (classifier)
            or ``(S, N, 2K)`` (regressor, ``[mean, std]``); dense models
            ``(S, N, H, W, C)`` or ``(S, N, H, W, 2K)``.
        from_logits: the model outputs logits; a softmax is applied to each
            sample (before averaging).
        method: ``"mc"`` (Monte Carlo, above) or ``"moments"``: one
            sampling-free pass propagating the mean and variance of every
            activation (`tfp_bcnn.moments`; diagonal Gaussian approximation),
            then ``num_samples`` draws of the output pre-activations only
            (logits of a softmax classifier, or a GaussianHead's outputs),
            summarised as above. Much faster; its error against Monte Carlo
            is measured in ``benchmarks/moments.py`` (epistemic values are
            smaller, rankings close).
        verbose: show a ``keras.utils.Progbar`` over the forward calls
            (``2``: one plain line when done, for logs and pipes).

    Returns:
        A ``Prediction`` (classifier) or a ``RegressionPrediction``
        (``GaussianHead`` output layer).

    Raises:
        ValueError: ``num_samples`` or ``batch_size`` not an integer >= 1, or
            for a rank-1 mixture model not a multiple of its K;
            an empty ensemble, a member that is not a ``keras.Model``, or
            members with different output shapes (all are listed);
            ``x`` holding NaN or infinity, or of a rank or shape other than
            the model input's;
            outputs that are not probabilities (logits without
            ``from_logits=True``); ``from_logits=True`` with a regressor; a
            model with several inputs or outputs; an unknown ``method``; with
            ``method="moments"``, a layer without a moment rule (named).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((28, 28, 1)),
    ...     tfp_bcnn.layers.Conv2DFlipout(4, 3, activation="relu"),
    ...     keras.layers.Flatten(),
    ...     tfp_bcnn.layers.DenseFlipout(10, activation="softmax"),
    ... ])
    >>> p = tfp_bcnn.predict(model, np.zeros((5, 28, 28, 1)), num_samples=8)
    >>> p.mean.shape, p.epistemic.shape, p.samples
    ((5, 10), (5,), None)
    """
    num_samples = check.integer("num_samples", num_samples, minimum=1)
    batch_size = check.integer("batch_size", batch_size, minimum=1)
    check.choice("method", method, METHODS)
    if isinstance(model, (list, tuple)):
        return _ensemble(model, x, num_samples, batch_size, bool(return_samples),
                         bool(from_logits), verbose, method)
    return _monte_carlo(
        model,
        x,
        num_samples,
        batch_size,
        bool(return_samples),
        bool(from_logits),
        tile=method == "moments" or _can_tile(model),
        verbose=verbose,
        method=method,
    )
