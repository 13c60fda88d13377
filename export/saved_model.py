"""SavedModel export with Monte Carlo serving signatures.

The SavedModel holds only TensorFlow ops and variables: load it with plain
``tf.saved_model.load`` (no tfp_bcnn, Keras or TFP import needed), serve it with
TF Serving, or run it with ``saved_model_cli run``.

Signatures (batch dimension dynamic):

* ``serving_default``: ``images`` ``(batch, *input_shape)`` float32 ->
  ``mean``, ``std`` ``(batch, C)``, ``predictive_entropy``, ``aleatoric``,
  ``epistemic`` ``(batch,)`` (nats), from ``num_samples`` Monte Carlo samples
  drawn in one call (the batch is tiled).
* ``sample``: ``images`` -> ``probabilities`` ``(batch, C)``, one stochastic
  forward pass (call it repeatedly for more samples).

Every call draws fresh samples; no random seed is stored in the graph.
"""

from __future__ import annotations

import json
import os

import keras

from tfp_bcnn._io import atomic_directory
from ._inference import InferenceGraph, export_info
from .tflite import METADATA_NAME

__all__ = ["save_saved_model"]


def save_saved_model(
    model: keras.Model,
    path,
    num_samples: int = 32,
    sampling: str = "lrt",
    *,
    from_logits: bool = False,
    max_pool: str = "separate",
) -> str:
    """Writes a SavedModel of a Bayesian Keras classifier.

    Each Bayesian layer is exported in its inference form (see
    `tfp_bcnn.export.to_tflite` and module `tfp_bcnn.export._inference`):
    ``"lrt"`` samples pre-activations from constant ``mu * mask`` and
    ``(sigma * mask)^2`` kernels (ignoring the weight sharing of a convolution
    across positions), ``"weights"`` samples one kernel per Monte Carlo sample,
    ``"moments"`` propagates means and variances in one pass and samples the
    logits only (`tfp_bcnn.moments`).

    Args:
        model: built Sequential or functional classifier, TensorFlow Keras
            backend.
        path: the SavedModel directory. Written to a temporary directory beside
            it, then renamed into place (an existing directory is swapped out
            only once the new one is complete; a failed export leaves it as it
            was).
        num_samples: Monte Carlo samples S per ``serving_default`` call.
        sampling: ``"lrt"``, ``"weights"`` or ``"moments"``.
        from_logits: the model outputs logits.
        max_pool: max-pooling approximation of ``"moments"`` (``"separate"``
            or ``"clark"``).

    The directory also holds ``assets.extra/tfp_bcnn.json`` (the sampling,
    S; read by `describe`; ignored by TensorFlow).

    Returns:
        The absolute path written.

    Raises:
        ValueError: invalid arguments, an unsupported model, or ``path`` is an
            existing file.

    Example:

    >>> save_saved_model(model, "bcnn_savedmodel")            # doctest: +SKIP
    >>> loaded = tf.saved_model.load("bcnn_savedmodel")       # doctest: +SKIP
    >>> loaded.signatures["serving_default"](images=x)["mean"]  # doctest: +SKIP
    """
    graph = InferenceGraph(
        model,
        num_samples=num_samples,
        sampling=sampling,
        from_logits=from_logits,
        max_pool=max_pool,
    )
    archive = keras.export.ExportArchive()
    for obj in graph.trackables:
        archive.track(obj)
    archive.add_endpoint("serving_default", graph.predict, input_signature=graph.input_signature)
    archive.add_endpoint("sample", graph.sample, input_signature=graph.input_signature)
    with atomic_directory(path) as tmp:
        archive.write_out(tmp, verbose=False)
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, f"{METADATA_NAME}.json"), "w") as f:
            json.dump(export_info(graph), f, sort_keys=True)
    return os.path.abspath(os.fspath(path))
