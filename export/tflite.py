"""TFLite export: builtin ops only, sparse constant kernels, optional int8 weights.

The file runs in the stock LiteRT interpreter (``ai_edge_litert``), no Flex
delegate. Run it with `tfp_bcnn.export.runtime.TFLiteBayesianModel`, which
needs only numpy and LiteRT.

Signature ``serving_default``: input ``images`` ``(batch, *input_shape)``
float32 with a dynamic batch (the interpreter is resized to each batch; the
runtime does this and splits large batches into chunks, since the graph tiles
the batch S times). Outputs: ``mean``, ``std`` ``(batch, C)``,
``predictive_entropy``, ``aleatoric``, ``epistemic`` ``(batch,)`` and
``samples`` ``(S, batch, C)`` (the per-sample probabilities, so that several
invocations can be pooled into one estimate). A dense (segmentation) model
gives them per pixel: ``(batch, H, W, C)``, ``(batch, H, W)`` and
``(S, batch, H, W, C)``. Every invocation draws fresh
samples; no seed is stored in the file.
"""

from __future__ import annotations

import json
import os
import tempfile

import keras
import tensorflow as tf

from tfp_bcnn import _validation as check
from tfp_bcnn._io import refuse_directory, write_bytes_atomic
from tfp_bcnn._quiet import native_stderr_silenced
from ._inference import InferenceGraph, export_info

#: Name of the TFLite metadata entry (and SavedModel ``assets.extra`` file
#: stem) holding `export_info` as JSON.
METADATA_NAME = "tfp_bcnn"

__all__ = ["QUANTIZATIONS", "to_tflite", "convert"]

QUANTIZATIONS = (None, "dynamic")


def _write_saved_model(graph: InferenceGraph, directory: str, return_samples: bool) -> None:
    archive = keras.export.ExportArchive()
    for obj in graph.trackables:
        archive.track(obj)
    archive.add_endpoint(
        "serving_default",
        lambda images: graph.predict(images, return_samples=return_samples),
        input_signature=graph.input_signature,
    )
    archive.write_out(directory, verbose=False)


def convert(
    model: keras.Model,
    num_samples: int = 32,
    sampling: str = "lrt",
    sparse: bool = True,
    quantize: str | None = None,
    from_logits: bool = False,
    max_pool: str = "separate",
) -> bytes:
    """Converts ``model`` to TFLite flatbuffer bytes (see `to_tflite`)."""
    check.choice("quantize", quantize, QUANTIZATIONS)
    graph = InferenceGraph(
        model,
        num_samples=num_samples,
        sampling=sampling,
        from_logits=from_logits,
        sparse=sparse,
        max_pool=max_pool,
    )
    with tempfile.TemporaryDirectory(prefix="tfp_bcnn_tflite_") as tmp:
        saved = os.path.join(tmp, "saved_model")
        _write_saved_model(graph, saved, return_samples=True)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        optimizations = []
        if quantize == "dynamic":
            optimizations.append(tf.lite.Optimize.DEFAULT)
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        with native_stderr_silenced():  # the converter's C++ progress lines
            flatbuffer = converter.convert()
        return _finish(flatbuffer, export_info(graph))


#: Tensor names longer than this are cut at their first ``;``.
_MAX_NAME = 128


def _finish(data: bytes, info: dict) -> bytes:
    """Shortens tensor names and records ``info`` as metadata ``"tfp_bcnn"``.

    Unrolled sample loops make the converter name each unstacked tensor after
    all S of its siblings (``"a;b;c;..."``): kilobytes per tensor, hundreds of
    kilobytes per file. Names are not used to run the model (signatures map
    inputs and outputs by index), so the first component is kept. ``info``
    (the sampling, S; read back by `describe`) is stored as JSON in a
    metadata buffer, which interpreters ignore.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name
            if name is not None and len(name) > _MAX_NAME:
                tensor.name = name.split(b";")[0][:_MAX_NAME]
    buffer = schema.BufferT()
    buffer.data = list(json.dumps(info, sort_keys=True).encode())
    model.buffers.append(buffer)
    metadata = schema.MetadataT()
    metadata.name = METADATA_NAME
    metadata.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), metadata]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def to_tflite(
    model: keras.Model,
    path,
    num_samples: int = 32,
    sampling: str = "lrt",
    sparse: bool = True,
    quantize: str | None = None,
    *,
    from_logits: bool = False,
    max_pool: str = "separate",
) -> str:
    """Writes a Monte Carlo TFLite model of a Bayesian Keras classifier.

    Each Bayesian layer is exported in its inference form (module
    `tfp_bcnn.export._inference`): ``sampling="lrt"`` keeps ``mu * mask`` and
    ``(sigma * mask)^2`` as constant kernels and samples the pre-activations,
    ``"weights"`` samples the kernels at run time. ``lrt`` ignores the weight
    sharing of a convolution across spatial positions (independent noise per
    position), which lowers the epistemic spread; ``weights`` is the exact
    posterior predictive but stores its kernels dense and runs S convolutions
    per Bayesian conv layer. ``"moments"`` samples nothing inside the
    network: one pass propagates means and variances (same constant kernels
    as ``lrt``) and the S samples are drawn from the Gaussian of the logits
    (`tfp_bcnn.moments`): the latency of about one deterministic pass of
    three times the arithmetic, whatever S; epistemic values smaller than
    Monte Carlo's (the diagonal approximation), rankings close.

    Args:
        model: built Sequential or functional classifier (probabilities out, or
            logits with ``from_logits=True``), TensorFlow Keras backend.
        path: the ``.tflite`` file to write (written to a temporary file in
            the same directory, then renamed: a failed export leaves an
            existing file untouched).
        num_samples: Monte Carlo samples S per invocation (batch tiled S times).
        sampling: ``"lrt"``, ``"weights"`` or ``"moments"``.
        sparse: ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``: constant kernels
            with enough zeros (pruned) are stored in a sparse format.
        quantize: None (float32) or ``"dynamic"`` (dynamic-range int8 weights,
            float activations; runs in the stock interpreter).
        from_logits: the model outputs logits.
        max_pool: max-pooling approximation of ``"moments"``: ``"separate"``
            (default, two ops) or ``"clark"`` (see `tfp_bcnn.moments`).

    The file's ``serving_default`` signature takes ``images`` with a dynamic
    batch dimension (LiteRT resizes the input to each batch) and returns
    ``mean``, ``std``, ``predictive_entropy``, ``aleatoric``, ``epistemic``
    and ``samples`` ``(S, batch, C)``; see the module docstring.

    Returns:
        The absolute path written.

    Raises:
        ValueError: invalid arguments, an unsupported model (see
            `InferenceGraph`), or ``path`` is an existing directory.

    Example:

    >>> path = to_tflite(model, "bcnn.tflite", num_samples=32)  # doctest: +SKIP
    >>> TFLiteBayesianModel(path).predict(x_test).mean.shape     # doctest: +SKIP
    (1000, 10)
    """
    refuse_directory(path)  # fail before the slow conversion
    data = convert(
        model,
        num_samples=num_samples,
        sampling=sampling,
        sparse=sparse,
        quantize=quantize,
        from_logits=from_logits,
        max_pool=max_pool,
    )
    return write_bytes_atomic(path, data)
