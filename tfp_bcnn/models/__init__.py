"""Model zoo and conversion of trained Keras models (see ``_zoo``)."""

from __future__ import annotations

from .. import kl as kl_lib  # noqa: F401 (a name of the former module, used by callers)
from ._zoo import (  # noqa: F401 (the interim re-export; split next)
    DEFAULT_POSTERIOR_STD_INIT, MOBILENET_RECIPE, MOPED_SIGMA_FLOOR, RECIPE,
    __all__, alexnet, compile_bayesian, lenet5, mobilenet_v2, recipe_callbacks,
    three_conv_three_fc, to_bayesian)
