"""Pruning of Bayesian layers: schedules, criteria, prune / strip, sparsity.

A Bayesian layer prunes a kernel weight by setting its entry of the
non-trainable ``kernel_mask`` to 0. The mask multiplies the posterior mean
``mu`` and the posterior std ``sigma`` wherever the layer uses them, so a
pruned weight is exactly 0 in every sampled kernel (reparameterization,
Flipout) and in both moments of local reparameterization, in training and at
inference; its gradients with respect to ``kernel_loc`` and ``kernel_rho`` are
exactly 0, so training never revives it. The masks are the layers' own
variables: they are saved with ``.keras`` files and exported with the model.

Workflow (the counterpart of tfmot's ``prune_low_magnitude`` /
``UpdatePruningStep`` / ``strip_pruning``)::

    pruning.prune(model, pruning.PolynomialDecay(0.5, 0.9, 0, 1000),
                  criterion="snr")
    model.compile(...)                     # a fresh optimizer: step 0
    model.fit(x, y, callbacks=[pruning.UpdatePruning()])
    pruning.strip(model)                   # bake the masks in
    pruning.sparsity(model)                # {"conv2d": 0.9, ..., "total": 0.9}

or, in one shot, ``pruning.prune_now(model, 0.9, criterion="snr")``.

Modules (one concept each): ``_schedules`` (schedules), ``_masks`` (criteria,
scopes, structures, mask maths, `prune_now`, `sparsity`), ``_allocation``
(how many channels each layer or channel group loses: floor, normalised
global ranking, score per FLOP or weight saved), ``_groups`` (channels tied
by Add / depthwise), ``_callback`` (`PruningConfig`, `prune`, `UpdatePruning`,
`strip`), ``_shrink`` (`shrink`, `layer_costs`). This ``__init__`` re-exports
their public names.

Structured pruning (filters) and shrinking::

    model = models.lenet5(num_train_examples=n,
                          kernel_regularizer=regularizers.GroupL1(1e-3))
    ...train...
    pruning.prune(model, pruning.PolynomialDecay(0.0, 0.5, 0, 500),
                  criterion="l1", structure="filter")
    model.fit(x, y, callbacks=[pruning.UpdatePruning()])
    small = pruning.shrink(model)   # the pruned filters and their inputs removed

``structure="filter"`` prunes whole output filters / units (mean, std and
bias); the sparsity is the fraction of filters; see ``_masks``. `shrink`
rebuilds chain models without them (see ``_shrink``).

Rank-1 mixture layers (`tfp_bcnn.layers.Rank1Layer`) prune the same way:
their ``kernel_mask`` is on the shared kernel ``W``, so a pruned weight is 0
in every component; ``"magnitude"`` / ``"l1"`` rank by ``|W|`` (``"snr"`` is
refused: ``W`` is a point estimate, the noise is on the rank-1 factors), filter
pruning zeroes the filter's bias in all K components, `strip` sets ``W = 0``
and `shrink` slices ``W``, the factors and the biases.

Schedules. A schedule is a callable ``step -> (should_prune, sparsity)``; the
two here have tfmot's arguments and formulas, and any tfmot
``PruningSchedule`` object (or another callable returning that pair, as
tensors or python values) is accepted in their place. Steps count optimizer
updates (``optimizer.iterations``).

Criteria. ``"magnitude"`` ranks weights by ``|mu|``; ``"snr"`` by the
signal-to-noise ratio ``|mu| / sigma`` (Blundell et al. 2015, "Weight
Uncertainty in Neural Networks", https://arxiv.org/abs/1505.05424, section
5.1). The lowest-ranked weights are pruned. With ``scope="layer"`` each layer
gets exactly ``round(sparsity * n)`` pruned weights out of its ``n`` kernel
weights; with ``scope="global"`` one threshold is taken over the scores of all
(non-excluded) layers together, and exactly ``round(sparsity * total)``
weights are pruned over them. Ties are broken deterministically: a stable
argsort over the kernels flattened in C order (layers in model order), so of
equal scores the earlier weight is pruned first. Only kernels are pruned,
never biases.

Masks only grow. A pruned weight stays pruned: already-pruned weights rank
below every other weight, and when the requested count is smaller than the
number already pruned, nothing changes. A pruning step therefore never lowers
a layer's sparsity (so ``ConstantSparsity`` prunes once, at ``begin_step``, and
then holds the mask). The raw ``kernel_loc`` / ``kernel_rho`` under a zero mask
are never used (an optimizer's momentum may still move them); `strip` sets
them to ``0`` and `PRUNED_RHO`.

KL of a pruned weight. The layer multiplies the elementwise
``KL(q(w) || p(w))`` by the mask, so a pruned weight adds 0 to the KL term of
the loss. Its posterior is the point mass at 0 defined by the mask, and the
KL from a point mass to a prior with a density is infinite; counting the KL of
the Gaussian it had before pruning would instead charge a constant with no
gradient. Treating the weight as removed gives the ELBO of the smaller
network that remains, which is what the pruned model is, and keeps the KL
finite (no ``log(0)``, no NaN gradient).

State. The masks are the layers' own variables. The configuration that
`prune` records (a frozen `PruningConfig`) is kept in an explicit weak
registry ``model -> config`` (``pruning.REGISTRY``; read it with
`pruning_config`), never as an attribute of the model; `UpdatePruning` is
given a config or looks the model up there when training begins; `strip`
removes the entry. The config is not saved with the model, the masks are:
after ``keras.saving.load_model`` call `prune` again to continue a schedule.
"""

from __future__ import annotations

from ._callback import REGISTRY, PruningConfig, UpdatePruning, prune, pruning_config, strip
from ._masks import (
    CRITERIA,
    PRUNED_RHO,
    SCOPES,
    STRUCTURES,
    TOTAL_KEY,
    prune_now,
    sparsity,
)
from ._shrink import layer_costs, shrink
from ._schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    Schedule,
    default_schedule,
)

__all__ = [
    "CRITERIA",
    "PRUNED_RHO",
    "REGISTRY",
    "SCOPES",
    "STRUCTURES",
    "TOTAL_KEY",
    "ConstantSparsity",
    "PolynomialDecay",
    "PruningConfig",
    "PruningSchedule",
    "Schedule",
    "UpdatePruning",
    "default_schedule",
    "layer_costs",
    "prune",
    "prune_now",
    "pruning_config",
    "shrink",
    "sparsity",
    "strip",
]

