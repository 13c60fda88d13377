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

A dense (segmentation) model, output ``(batch, H, W, C)`` softmax over the
last axis, gets the same signatures per pixel: ``mean``, ``std`` and
``probabilities`` ``(batch, H, W, C)``, the entropies ``(batch, H, W)``.

Every call draws fresh samples; no random seed is stored in the graph.

Bad inputs: both signatures refuse images holding NaN or infinity inside the
graph (an ``Assert`` op, so TF Serving and ``saved_model_cli`` refuse them
too): the call raises ``tf.errors.InvalidArgumentError`` whose message says
"images contain NaN or infinity at batch indices" and lists the first five.
An empty batch returns outputs with a batch dimension of 0. Unscaled images
cannot be detected inside the graph; the Python code that feeds a SavedModel
(`tfp_bcnn.predict` on the Keras model, the CLI) checks them with
``tfp_bcnn._validation.images``.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from tfp_bcnn._io import atomic_directory
from ._inference import InferenceGraph, export_info
from .tflite import METADATA_NAME

__all__ = ["save_saved_model"]


def _finite_only(fn):
    """``fn(images)`` behind an in-graph check that refuses NaN or infinity.

    The ``Assert`` names the first five offending images by batch index. An
    empty batch runs ``fn`` on one zero image and returns its outputs cut to
    0 rows (TensorFlow's graph optimizer breaks some convolutions on a
    zero-size batch); every output of ``fn`` is batch-first.
    """

    def checked(images):
        axes = list(range(1, images.shape.rank))
        finite = tf.reduce_all(tf.math.is_finite(images), axis=axes)
        bad = tf.where(tf.logical_not(finite))[:, 0]
        check = tf.debugging.Assert(
            tf.reduce_all(finite),
            ["images contain NaN or infinity at batch indices (first 5):", bad[:5]],
            summarize=5,
        )
        with tf.control_dependencies([check]):
            n = tf.shape(images)[0]
            one = tf.zeros([1, *images.shape[1:]], images.dtype)
            outputs = fn(tf.cond(n > 0, lambda: tf.identity(images), lambda: one))
            return {name: value[:n] for name, value in outputs.items()}

    return checked


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
    signature = graph.input_signature
    archive.add_endpoint("serving_default", _finite_only(graph.predict), input_signature=signature)
    archive.add_endpoint("sample", _finite_only(graph.sample), input_signature=signature)
    with atomic_directory(path) as tmp:
        archive.write_out(tmp, verbose=False)
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, f"{METADATA_NAME}.json"), "w") as f:
            json.dump(export_info(graph), f, sort_keys=True)
    return os.path.abspath(os.fspath(path))
