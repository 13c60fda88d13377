"""Deep ensembles: train M members from different seeds, predict with all of them.

A deep ensemble (Lakshminarayanan et al. 2017, https://arxiv.org/abs/1612.01474)
is ``M`` networks of the same architecture trained on the same data from
different random initialisations (and data orders). Its predictive
distribution is the equal-weight mixture ``pbar = (1 / M) sum_m p_m``, and
the disagreement of the members is its epistemic uncertainty. Prediction is
`tfp_bcnn.predict` on the list of members (every member counts as samples of
the mixture; Bayesian members contribute ``num_samples`` each); this module
trains the members.

Example:
>>> import numpy as np
>>> from tfp_bcnn import ensemble, models, predict
>>> x = np.random.default_rng(0).uniform(size=(32, 28, 28, 1)).astype("float32")
>>> y = np.arange(32) % 10
>>> members = ensemble.train_ensemble(
...     lambda seed: models.lenet5(bayesian=False, seed=seed), x, y,
...     num_members=2, epochs=1, verbose=0)
>>> p = predict(members, x[:4])
>>> p.mean.shape, p.epistemic.shape
((4, 10), (4,))
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from . import _validation as check
from .models import RECIPE, compile_bayesian

__all__ = ["train_ensemble"]


def train_ensemble(
    build_fn: Callable[[int], keras.Model],
    x,
    y=None,
    num_members: int = 5,
    *,
    seed: int = 0,
    learning_rate: float = RECIPE["learning_rate"],
    **fit_kwargs,
) -> list[keras.Model]:
    """Trains ``num_members`` models, member ``m`` from the seed ``seed + m``.

    For each member: ``keras.utils.set_random_seed(seed + m)`` (which fixes
    the data shuffling of ``fit`` and any unseeded initializer), then
    ``model = build_fn(seed + m)`` (pass the seed on to the builder, e.g.
    ``models.lenet5(..., seed=seed)``, so the initial weights differ), then,
    if the model is not compiled yet, ``models.compile_bayesian(model,
    learning_rate)``, then ``model.fit(x, y, **fit_kwargs)``. Members are
    trained one after another; nothing is shared between them but the
    arguments (a callback object in ``fit_kwargs`` is reused by every member).

    Args:
        build_fn: ``seed -> keras.Model``, a fresh (compiled or uncompiled)
            classifier per call.
        x, y: training data, as for ``keras.Model.fit`` (``y`` None when
            ``x`` is a dataset).
        num_members: ``M``, an integer >= 1 (5 in Lakshminarayanan et al.).
        seed: seed of the first member (keyword-only).
        learning_rate: Adam's learning rate for members that ``build_fn``
            returns uncompiled (default: ``models.RECIPE["learning_rate"]``).
        **fit_kwargs: passed to every ``fit`` (``epochs``, ``batch_size``,
            ``callbacks``, ``validation_data``, ``verbose``...).

    Returns:
        The list of ``M`` trained models, ready for
        ``tfp_bcnn.predict(members, x)``.

    Raises:
        ValueError: ``num_members`` or ``seed`` not an integer (>= 1 for
            ``num_members``), or ``build_fn`` not returning a ``keras.Model``
            (the value received is quoted).
    """
    num_members = check.positive_int("num_members", num_members)
    seed = check.integer("seed", seed)
    if not callable(build_fn):
        raise ValueError(f"`build_fn` must be callable. Received: build_fn={build_fn!r}")
    members = []
    for m in range(num_members):
        member_seed = seed + m
        keras.utils.set_random_seed(member_seed)
        model = build_fn(member_seed)
        if not isinstance(model, keras.Model):
            raise ValueError(
                "`build_fn` must return a keras.Model. Received: build_fn(seed) returned "
                f"{type(model).__name__}"
            )
        if not model.compiled:
            compile_bayesian(model, learning_rate)
        model.fit(x, y, **fit_kwargs)
        members.append(model)
    return members
