"""KL annealing: a Keras callback that rescales the KL term during training.

Re-exported as ``tfp_bcnn.KLAnnealing``.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from . import _validation as check
from .kl import variational_layers

__all__ = ["KLAnnealing", "SCHEDULES", "blundell_weight", "linear_beta"]

SCHEDULES = ("constant", "linear", "blundell")


def linear_beta(epoch: int, warmup_epochs: int, beta: float = 1.0) -> float:
    """Linear warm-up factor ``beta * min(1, (epoch + 1) / warmup_epochs)``.

    ``epoch`` is Keras' 0-based epoch index, so the first epoch already trains
    with ``beta / warmup_epochs`` (never with a zero KL) and epoch
    ``warmup_epochs - 1`` reaches ``beta`` (Sønderby et al. 2016,
    https://arxiv.org/abs/1602.02282).

    >>> [linear_beta(e, 4) for e in range(5)]
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    return float(beta) * min(1.0, (int(epoch) + 1) / int(warmup_epochs))


def blundell_weight(batch: int, steps: int) -> float:
    """Blundell's minibatch weight ``pi_i = 2^(M - i) / (2^M - 1)``.

    For minibatch ``i = batch + 1`` (``batch`` is Keras' 0-based index) of the
    ``M = steps`` minibatches of an epoch (Blundell et al. 2015, eq. 9,
    https://arxiv.org/abs/1505.05424). The weights sum to 1 over an epoch, the
    first minibatches carry most of the KL and the last ones almost none.
    Computed as ``2^-i / (1 - 2^-M)``, which does not overflow for large ``M``.

    >>> [round(blundell_weight(b, 3), 4) for b in range(3)]
    [0.5714, 0.2857, 0.1429]
    """
    i = int(batch) + 1
    m = int(steps)
    return math.ldexp(1.0, -i) / -math.expm1(-m * math.log(2.0))


@keras.saving.register_keras_serializable(package="tfp_bcnn")
class KLAnnealing(keras.callbacks.Callback):
    """Anneal the weight of the KL term: ``kl_weight = beta_t * base_weight``.

    ``base_weight`` is each Bayesian layer's ``kl_weight`` when this callback
    first sees it at the start of training (``1 / N`` when the model came from
    ``tfp_bcnn.models``), or ``1 / num_train_examples`` when that is given. It
    is recorded once per layer and reused by later ``fit`` calls with the same
    callback, so a second ``fit`` continues from the same base rather than
    from whatever the last epoch left behind.

    Schedules (``beta`` is the final multiplier, 1 for the ELBO):

    * ``"constant"``: ``beta_t = beta`` for every step.
    * ``"linear"``: linear warm-up per epoch (Sønderby et al. 2016,
      https://arxiv.org/abs/1602.02282),
      ``beta_t = beta * min(1, (epoch + 1) / warmup_epochs)`` with Keras'
      0-based ``epoch``: the first epoch uses ``beta / warmup_epochs``, epoch
      ``warmup_epochs - 1`` and later use ``beta``. ``fit(initial_epoch=k)``
      continues the ramp from epoch ``k``.
    * ``"blundell"``: Blundell et al. 2015 (eq. 9,
      https://arxiv.org/abs/1505.05424) weight minibatch ``i = 1..M`` of every
      epoch by ``pi_i = 2^(M-i) / (2^M - 1)``, with ``M = params["steps"]``
      (steps per epoch). Blundell's minibatch cost is
      ``F_i = pi_i KL - sum_{n in batch} log p(y_n | w)``; our loss is the
      batch *mean* NLL, i.e. ``F_i / B`` with ``B ~ N / M`` examples per batch,
      so the per-example KL weight is ``pi_i / B = pi_i * M / N``::

          kl_weight_i = beta * M * pi_i * base_weight

      With uniform ``pi_i = 1 / M`` this is ``beta * base_weight`` again, and
      over an epoch the KL is counted ``beta`` times in total, as in the ELBO
      (exactly so when ``B`` divides ``N``). The first minibatch of every
      epoch gets about ``M / 2`` times the ELBO weight, the last ones almost 0.

    The weights are written at ``on_epoch_begin`` ("constant", "linear") or
    ``on_train_batch_begin`` ("blundell"), into the layers' non-trainable
    ``kl_weight`` variables (no retracing). With ``steps_per_execution=k``
    Keras calls the batch hooks once per ``k`` steps, so "blundell" then
    changes the weight every ``k`` minibatches. On JAX, "blundell" calls
    ``model.jax_state_sync()`` before each write (the loop holds the live
    state inside an epoch), which costs a state round trip per step.

    At the end of training nothing is restored: the layers keep the last
    weight used (``beta * base_weight`` after a finished linear warm-up; the
    last minibatch's small weight for "blundell"), so ``evaluate`` after
    ``fit`` reports the loss that training ended with. Call
    ``tfp_bcnn.set_kl_weight(model, 1 / N)`` to reset it.

    ``tfp_bcnn.KLDivergence`` logs ``sum kl_weight * KL``, so the logged
    ``kl`` shows the annealed term.

    Args:
        schedule: ``"linear"`` (default), ``"constant"`` or ``"blundell"``.
        warmup_epochs: epochs of the linear ramp (positive int; used by
            "linear" only).
        beta: final multiplier of the KL (> 0).
        num_train_examples: if given, ``base_weight = 1 / num_train_examples``
            for every layer instead of the layers' own weight.

    Raises:
        ValueError: an unknown schedule or invalid number (quoted); at the
            start of training, a model without Bayesian layers, or
            "blundell" when the number of steps per epoch is unknown (pass
            ``steps_per_epoch`` to ``fit``).

    Example:
    >>> import tfp_bcnn
    >>> cb = tfp_bcnn.KLAnnealing("linear", warmup_epochs=5)
    >>> cb.beta_at(epoch=0)
    0.2
    """

    def __init__(
        self,
        schedule: str = "linear",
        warmup_epochs: int = 5,
        beta: float = 1.0,
        num_train_examples: int | None = None,
    ):
        super().__init__()
        self.schedule = check.choice("schedule", schedule, SCHEDULES)
        self.warmup_epochs = check.positive_int("warmup_epochs", warmup_epochs)
        self.beta = check.positive_float("beta", beta)
        self.num_train_examples = (
            None
            if num_train_examples is None
            else check.positive_int("num_train_examples", num_train_examples)
        )
        self._base = {}  # id(layer) -> base kl_weight
        self._layers = []
        self._steps = None

    # ------------------------------------------------------------ schedule
    def beta_at(self, epoch: int, batch: int | None = None, steps: int | None = None) -> float:
        """The multiplier of ``base_weight`` at ``epoch`` (and minibatch ``batch`` of ``steps``).

        For "blundell" this is ``beta * M * pi_i`` (see the class docstring);
        ``batch`` and ``steps`` are required there.
        """
        if self.schedule == "constant":
            return self.beta
        if self.schedule == "linear":
            return linear_beta(epoch, self.warmup_epochs, self.beta)
        if batch is None or steps is None:
            raise ValueError(
                "The 'blundell' schedule needs the minibatch index and the steps per "
                f"epoch. Received: batch={batch!r}, steps={steps!r}"
            )
        return self.beta * int(steps) * blundell_weight(batch, steps)

    # ------------------------------------------------------------- hooks
    def _apply(self, factor):
        if keras.backend.backend() == "jax" and self.schedule == "blundell":
            # Inside a JAX epoch the training loop holds the live state:
            # jax_state_sync() writes it back to the variables and marks it
            # synced, so the loop re-reads the variables (and our new weight)
            # before the next step.
            self.model.jax_state_sync()
        for layer in self._layers:
            layer.kl_weight.assign(factor * self._base[id(layer)])

    def on_train_begin(self, logs=None):
        self._layers = list(variational_layers(self.model))
        if not self._layers:
            raise ValueError(
                "KLAnnealing needs a model with Bayesian layers. "
                f"Received: model={self.model.name!r}"
            )
        for layer in self._layers:
            if id(layer) not in self._base:
                if self.num_train_examples is not None:
                    base = 1.0 / self.num_train_examples
                else:
                    base = float(ops.convert_to_numpy(layer.kl_weight))
                self._base[id(layer)] = base
        self._steps = self.params.get("steps") if self.params else None
        if self.schedule == "blundell" and not self._steps:
            raise ValueError(
                "The 'blundell' schedule needs the number of steps per epoch; pass "
                "`steps_per_epoch` to fit() for data of unknown length. "
                f"Received: steps={self._steps!r}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        if self.schedule != "blundell":
            self._apply(self.beta_at(epoch))

    def on_train_batch_begin(self, batch, logs=None):
        if self.schedule == "blundell":
            self._apply(self.beta_at(0, batch=batch % self._steps, steps=self._steps))

    def get_config(self):
        return {
            "schedule": self.schedule,
            "warmup_epochs": self.warmup_epochs,
            "beta": self.beta,
            "num_train_examples": self.num_train_examples,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
