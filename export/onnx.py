"""ONNX export of the inference graph, Monte Carlo sampling inside the file.

The same TensorFlow inference graph as the SavedModel and the TFLite file
(module `tfp_bcnn.export._inference`: ``"lrt"``, ``"weights"`` or
``"moments"``) is converted to ONNX with **tf2onnx** (the converter the
ONNX project maintains for TensorFlow; it reads the ``tf.function`` directly,
so the graph is the one the other exporters trace, op for op). Probed on
TensorFlow 2.21 with tf2onnx 1.17, onnx 1.23 and onnxruntime 1.32: every op of
the three forms converts to a standard ONNX op (no custom domain, no
TensorFlow fallback). The other paths were weaker: ``torch.onnx`` needs a
PyTorch model, and going through TFLite (``tflite2onnx``) is unmaintained.

Random draws: TensorFlow's ``RandomStandardNormal`` / ``RandomUniform``
become ONNX ``RandomNormal`` (static shape, ``"weights"``) or
``RandomNormalLike`` / ``RandomUniformLike`` (shapes known only at run time,
``"lrt"``, ``"moments"``, `tfp_bcnn.layers.MCDropout`). tf2onnx writes the
TensorFlow seed (0) into their ``seed`` attribute, and ONNX Runtime seeds the
op with it: every session on every device would repeat one sequence.
`to_onnx` deletes the attribute (ONNX: "if not specified, one will be auto
generated"); ONNX Runtime then seeds each op from a process-wide seed taken
from the clock plus the op's node index, and each run advances the op's
generator (fresh samples per run). Two processes draw different samples;
two sessions opened in one process would repeat each other, which
`tfp_bcnn.export.runtime.OnnxBayesianModel` prevents by setting that seed
from ``os.urandom`` before it opens its session (other ONNX Runtime callers:
``onnxruntime.set_seed(random)`` before each ``InferenceSession``).

File layout: input ``images`` ``(batch, *input_shape)`` float32 (dynamic
batch); outputs ``mean``, ``std`` ``(batch, C)``, ``predictive_entropy``,
``aleatoric``, ``epistemic`` ``(batch,)`` (nats) and ``samples``
``(S, batch, C)``, as the TFLite file; ``"moments"`` files also output the
deterministic Gaussian of the logits, ``logit_mean`` and ``logit_variance``
``(batch, C)`` (`tfp_bcnn.moments.propagate`). The metadata entry
``tfp_bcnn`` holds `export_info` as JSON (read by `describe`). The file has
no NaN check inside (ONNX has no assert op): the runtime
(`tfp_bcnn.export.runtime.OnnxBayesianModel`) refuses such images before
running it.
"""

from __future__ import annotations

import contextlib
import json
import logging

import keras
import tensorflow as tf

from tfp_bcnn import _validation as check
from tfp_bcnn._io import refuse_directory, write_bytes_atomic
from tfp_bcnn._quiet import native_stderr_silenced
from ._inference import InferenceGraph, export_info, gaussian_summaries, summaries
from .tflite import METADATA_NAME

__all__ = ["OPSETS", "RANDOM_OPS", "to_onnx", "convert"]

#: ONNX opsets `to_onnx` accepts: 13 (the first with today's Squeeze / Split
#: / ReduceSum forms) up to the newest tf2onnx 1.17 writes. None: tf2onnx's
#: default (15).
OPSETS = tuple(range(13, 19))
#: ONNX random ops whose ``seed`` attribute `to_onnx` removes.
RANDOM_OPS = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli")


def _import_converter():
    try:
        import onnx
        import tf2onnx
    except ImportError as err:
        raise ImportError(
            "ONNX export needs tf2onnx and onnx: pip install 'tfp_bcnn[export]' "
            f"(or pip install tf2onnx onnx). Missing: {err.name}"
        ) from err
    return tf2onnx, onnx


@contextlib.contextmanager
def _quiet_converter():
    """tf2onnx logs every rewrite at INFO/WARNING (keep errors only), and the
    Grappler pass it runs prints C++ lines on file descriptor 2 (hidden unless
    ``TFP_BCNN_VERBOSE=1``, as for the TFLite converter)."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with native_stderr_silenced():
            yield
    finally:
        logger.setLevel(level)


def _serving_function(graph: InferenceGraph):
    """The ``tf.function`` converted: `InferenceGraph.predict` with its samples.

    ``"moments"`` adds ``logit_mean`` and ``logit_variance``: one moment pass
    feeds both them and the sampled logits (`MomentsForm.draw`: a softmax, or
    a GaussianHead's ``[mean, std]``); a rank-1 mixture's K moment passes
    have no single logit Gaussian, so its file has the summaries only.
    """
    def serve(images):
        form = graph._moments
        if form is None or getattr(form, "num_components", None):  # MC, or a rank-1 mixture
            return graph.predict(images, return_samples=True)
        out = form.moments(tf.cast(images, tf.float32))
        probs = form.draw(out, graph.num_samples)  # softmax, or a GaussianHead's [mean, std]
        summarize = gaussian_summaries if graph.regression else summaries
        result = summarize(probs, return_samples=True)
        result["logit_mean"] = tf.cast(out.mean, tf.float32)
        result["logit_variance"] = tf.cast(out.variance, tf.float32)
        return result

    # autograph off: no tensor-dependent Python control flow here (and it
    # warns on the closure)
    return tf.function(serve, input_signature=graph.input_signature, autograph=False)


def _finish(proto, info: dict, onnx) -> None:
    """Unseeds the random ops, drops unused opset imports, records ``info``.

    Raises:
        ValueError: a node outside the default ONNX domain (a custom op no
            stock runtime has), or a model the ONNX checker refuses.
    """
    for node in proto.graph.node:
        if node.op_type in RANDOM_OPS:
            kept = [a for a in node.attribute if a.name != "seed"]
            del node.attribute[:]
            node.attribute.extend(kept)
    custom = sorted({f"{n.domain}.{n.op_type}" for n in proto.graph.node if n.domain})
    if custom:
        raise ValueError(
            "The converted graph needs ops outside the standard ONNX domain, which stock "
            f"runtimes lack. Received: ops={custom}"
        )
    used = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    del proto.opset_import[:]
    proto.opset_import.extend(used)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_NAME, json.dumps(info, sort_keys=True)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(proto)


def convert(
    model: keras.Model,
    num_samples: int = 32,
    sampling: str = "lrt",
    opset: int | None = None,
    from_logits: bool = False,
    max_pool: str = "separate",
) -> bytes:
    """Converts ``model`` to the bytes of an ONNX file (see `to_onnx`)."""
    if opset is not None and not (check.is_int(opset) and opset in OPSETS):
        raise ValueError(
            f"`opset` must be None or an integer from {OPSETS[0]} to {OPSETS[-1]}. "
            f"Received: opset={opset!r}"
        )
    tf2onnx, onnx = _import_converter()
    graph = InferenceGraph(
        model,
        num_samples=num_samples,
        sampling=sampling,
        from_logits=from_logits,
        max_pool=max_pool,
    )
    function = _serving_function(graph)
    with _quiet_converter():
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=graph.input_signature, opset=opset
        )
    _finish(proto, export_info(graph), onnx)
    return proto.SerializeToString()


def to_onnx(
    model: keras.Model,
    path,
    num_samples: int = 32,
    sampling: str = "lrt",
    opset: int | None = None,
    *,
    from_logits: bool = False,
    max_pool: str = "separate",
) -> str:
    """Writes an ONNX file of a Bayesian Keras classifier, sampling inside.

    The graph is the SavedModel's and the TFLite file's (module
    `tfp_bcnn.export._inference`): ``sampling="lrt"`` keeps ``mu * mask``
    and ``(sigma * mask)^2`` as constant kernels and draws the
    pre-activations ``y = x (*) mu + sqrt(x^2 (*) sigma^2) * eps`` (ignoring
    the weight sharing of a convolution across positions), ``"weights"``
    draws one kernel ``W_s = mu + sigma * eps_s`` per Monte Carlo sample
    (the exact posterior predictive), ``"moments"`` propagates means and
    variances in one pass and samples only the logits. The ``S`` samples are
    drawn in one run by tiling the batch ``S`` times, from ONNX
    ``RandomNormal(Like)`` / ``RandomUniform(Like)`` ops with no seed (two
    sessions draw different samples). See the module docstring for the
    inputs and outputs.

    Args:
        model: built Sequential or functional classifier (probabilities out,
            or logits with ``from_logits=True``), TensorFlow Keras backend.
        path: the ``.onnx`` file to write (written to a temporary file in the
            same directory, then renamed: a failed export leaves an existing
            file untouched).
        num_samples: Monte Carlo samples S per run.
        sampling: ``"lrt"``, ``"weights"`` or ``"moments"``.
        opset: ONNX opset version, one of `OPSETS` (13 to 18), or None for
            tf2onnx's default (15).
        from_logits: the model outputs logits.
        max_pool: max-pooling approximation of ``"moments"`` (``"separate"``
            or ``"clark"``, see `tfp_bcnn.moments`).

    Returns:
        The absolute path written.

    Raises:
        ValueError: invalid arguments (the message quotes the value), an
            unsupported model (see `InferenceGraph`), ``path`` is an existing
            directory, or a graph that would need a non-standard ONNX op.
        ImportError: tf2onnx or onnx is not installed (the ``export`` extra).

    Example:

    >>> to_onnx(model, "bcnn.onnx", sampling="moments")       # doctest: +SKIP
    >>> OnnxBayesianModel("bcnn.onnx").predict(x).epistemic   # doctest: +SKIP
    """
    refuse_directory(path)  # fail before the slow conversion
    data = convert(
        model,
        num_samples=num_samples,
        sampling=sampling,
        opset=opset,
        from_logits=from_logits,
        max_pool=max_pool,
    )
    return write_bytes_atomic(path, data)
