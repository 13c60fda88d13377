"""Checks of user inputs shared by `predict`, the export helpers and the CLI.

`check_images` is the one place that decides what a batch of images must look
like before a model sees it:

* NaN or infinity anywhere is refused (``ValueError`` naming the first few
  offending images by index): a model returns finite, confident-looking
  probabilities for a NaN frame, which would be a silently wrong answer.
* images that look unscaled get a ``UserWarning`` (not an error: a model may
  scale its inputs itself, and standardised data legitimately leaves
  ``[0, 1]``). "Unscaled" means ``max |x| > UNSCALED_LIMIT`` (20): images in
  ``[0, 255]`` almost always pass 20, while data scaled to ``[0, 1]`` or
  standardised to zero mean and unit variance stays far below it (20 standard
  deviations). The models of tfp_bcnn are trained on ``[0, 1]``
  (`tfp_bcnn.datasets`).

The TF-free runtime (`tfp_bcnn.export.runtime`) repeats these two rules in its
own file, on purpose: it imports nothing from tfp_bcnn.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["UNSCALED_LIMIT", "check_images"]

#: Largest ``|x|`` that does not look like unscaled (e.g. 0-255) pixel values.
UNSCALED_LIMIT = 20.0
#: How many offending images an error message names.
_SHOWN = 5


def check_images(
    x: np.ndarray,
    *,
    name: str = "x",
    offset: int = 0,
    warn_unscaled: bool = True,
    stacklevel: int = 2,
) -> None:
    """Refuses non-finite images and warns about unscaled ones.

    Args:
        x: ``(N, ...)`` batch of images (any numeric dtype; N may be 0).
        name: the argument name used in messages.
        offset: index of ``x[0]`` in the whole input (for streamed batches),
            so that messages name images by their position in the user's data.
        warn_unscaled: warn when ``max |x| > UNSCALED_LIMIT``.
        stacklevel: as for `warnings.warn`, counted from this function (2: its
            caller).

    Raises:
        ValueError: some image holds NaN or +-inf; the message gives how many
            and the indices of the first five.

    Warns:
        UserWarning: ``max |x| > UNSCALED_LIMIT`` (images that look like raw
            0-255 pixels).
    """
    x = np.asarray(x)
    if x.size == 0 or not (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        return
    x = x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite) + offset
            shown = ", ".join(str(i) for i in bad[:_SHOWN])
            more = f", ... ({len(bad)} in all)" if len(bad) > _SHOWN else ""
            raise ValueError(
                f"`{name}` contains NaN or infinity in {len(bad)} image(s): a model would "
                f"return a confident-looking answer for them. Fix or drop these images. "
                f"Received: non-finite {name} at indices [{shown}{more}]"
            )
    if warn_unscaled:
        peak = max(abs(float(x.max())), abs(float(x.min())))
        if peak > UNSCALED_LIMIT:
            warnings.warn(
                f"`{name}` looks unscaled: max |{name}| = {peak:g} > {UNSCALED_LIMIT:g} "
                f"(dtype {x.dtype}). tfp_bcnn models are trained on images scaled to "
                f"[0, 1]; divide by 255 unless the model scales its inputs itself.",
                UserWarning,
                stacklevel=stacklevel,
            )
