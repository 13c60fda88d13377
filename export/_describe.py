"""`describe`: sizes, ops and weight sparsity of an exported artifact."""

from __future__ import annotations

import collections
import gzip
import json
import os

import numpy as np

__all__ = ["describe"]

#: TFLite metadata name / SavedModel ``assets.extra`` file stem written by the
#: exporters (`tfp_bcnn.export.tflite.METADATA_NAME`; repeated here so that
#: describing a file does not import the converter).
_METADATA_NAME = "tfp_bcnn"

#: TFLite tensor types counted as weights (float and int8 kernels; not int32
#: shapes or indices).
_WEIGHT_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8}


def describe(path) -> dict:
    """Sizes, op list and weight sparsity of a ``.tflite`` file or SavedModel.

    Args:
        path: a file written by `to_tflite` or `to_onnx` (``.onnx``) or a
            directory written by `save_saved_model` (any TFLite file, ONNX
            file or SavedModel works).

    Returns:
        dict with

        * ``format``: ``"tflite"``, ``"onnx"`` or ``"saved_model"``;
        * ``size_bytes``: bytes on disk (all files of a SavedModel);
        * ``gzip_bytes``: bytes after gzip (level 9; per file, summed);
        * ``ops``: ``{op name: count}`` (TFLite builtin names, ONNX op
          types (``domain.op`` outside the default domain), or TensorFlow
          op types of every function of the SavedModel);
        * ``opset`` (ONNX only): the default-domain opset version;
        * ``op_count``: total number of ops (TFLite: over all subgraphs);
        * ``delegate_partitions`` (TFLite): partitions the XNNPack delegate
          makes of the graph when LiteRT loads the file (1 = the whole graph
          delegated; every op XNNPack lacks, e.g. ``RANDOM_STANDARD_NORMAL``,
          splits it; see `tfp_bcnn.export._delegate`), None without
          ``ai_edge_litert`` or for a SavedModel or an ONNX file;
        * ``undelegated_ops`` (TFLite): ``{op name: count}`` of the ops left
          outside every partition (None likewise);
        * ``flex_ops``: TFLite custom ops named ``Flex*`` (empty for our files);
          for ONNX, ops outside the default domain (empty for our files);
        * ``weights``: dense-equivalent element count of the stored weights
          (TFLite constant float/int8 tensors; SavedModel float variables);
        * ``weights_stored``: values actually stored (less than ``weights``
          for tensors in TFLite's sparse format);
        * ``zero_fraction``: fraction of ``weights`` that are zero (implicit
          zeros of sparse tensors included);
        * ``sparse_tensors``: tensors stored in TFLite's sparse format;
        * ``int8_tensors``: int8 weight tensors (dynamic-range quantization);
        * ``signatures``: ``{name: {"inputs": [...], "outputs": [...]}}``;
        * ``sampling``: ``"lrt"``, ``"weights"`` or ``"moments"`` as recorded
          by `to_tflite` / `save_saved_model` (None for files written
          otherwise); ``num_samples``: S per call (None likewise);
          ``max_pool``: the max-pooling approximation of ``"moments"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a corrupt or unrecognised file, naming ``path``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file or directory: {path!r}")
    if os.path.isdir(path):
        return _describe_saved_model(path)
    if path.lower().endswith(".onnx"):
        return _describe_onnx(path)
    return _describe_tflite(path)


def _gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


# ------------------------------------------------------------------- TFLite
def _describe_tflite(path):
    from tensorflow.lite.python import schema_py_generated as schema

    from .runtime import read_tflite  # structure, sizes, finite weights: checked first

    data = read_tflite(path)
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if op_names.get(builtin) == "CUSTOM":
                codes.append((code.CustomCode() or b"CUSTOM").decode())
            else:
                codes.append(op_names.get(builtin, f"BUILTIN_{builtin}"))
        ops = collections.Counter()
        weights = stored = zeros = sparse = int8 = 0
        for g in range(model.SubgraphsLength()):
            subgraph = model.Subgraphs(g)
            for i in range(subgraph.OperatorsLength()):
                ops[codes[subgraph.Operators(i).OpcodeIndex()]] += 1
            for i in range(subgraph.TensorsLength()):
                tensor = subgraph.Tensors(i)
                dtype = _WEIGHT_TYPES.get(type_names.get(tensor.Type()))
                if dtype is None or tensor.IsVariable():
                    continue
                values = _buffer(model, tensor.Buffer(), data)
                if values is None or len(values) == 0:
                    continue
                values = np.frombuffer(values, dtype=dtype)
                dense = int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
                is_sparse = tensor.Sparsity() is not None
                sparse += is_sparse
                int8 += dtype is np.int8
                weights += dense
                stored += values.size
                zeros += int(np.count_nonzero(values == 0)) + (
                    dense - values.size if is_sparse else 0
                )
        info = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == _METADATA_NAME.encode():
                raw = _buffer(model, entry.Buffer(), data)
                info = json.loads(raw.decode()) if raw else {}
        signatures = {}
        for i in range(model.SignatureDefsLength()):
            sig = model.SignatureDefs(i)
            signatures[sig.SignatureKey().decode()] = {
                "inputs": [sig.Inputs(j).Name().decode() for j in range(sig.InputsLength())],
                "outputs": [sig.Outputs(j).Name().decode() for j in range(sig.OutputsLength())],
            }
    except Exception as err:  # flatbuffers raises assorted errors on garbage
        raise ValueError(
            f"Corrupt TFLite file ({type(err).__name__}: {err}). Received: path={path!r}"
        ) from err
    return {
        "format": "tflite",
        "path": os.path.abspath(path),
        "size_bytes": len(data),
        "gzip_bytes": _gzip_size(data),
        "ops": dict(sorted(ops.items())),
        "op_count": sum(ops.values()),
        **_delegation(path),
        "flex_ops": sorted(name for name in ops if name.startswith("Flex")),
        "weights": weights,
        "weights_stored": stored,
        "zero_fraction": zeros / weights if weights else 0.0,
        "sparse_tensors": sparse,
        "int8_tensors": int8,
        "signatures": signatures,
        **_sampling(info),
    }


def _delegation(path: str) -> dict:
    """``delegate_partitions`` and ``undelegated_ops`` of a TFLite file (LiteRT's plan)."""
    from ._delegate import delegate_stats

    stats = delegate_stats(path)
    return {"delegate_partitions": stats["partitions"], "undelegated_ops": stats["undelegated"]}


def _sampling(info: dict) -> dict:
    return {
        "sampling": info.get("sampling"),
        "num_samples": info.get("num_samples"),
        "max_pool": info.get("max_pool"),
    }


def _buffer(model, index, data):
    if index <= 0 or index >= model.BuffersLength():
        return None
    buf = model.Buffers(index)
    if buf.Offset() > 1:  # buffers stored after the flatbuffer (models > 2 GB)
        return data[buf.Offset() : buf.Offset() + buf.Size()]
    if buf.DataLength() == 0:
        return None
    return buf.DataAsNumpy().tobytes()


# --------------------------------------------------------------------- ONNX
#: ONNX ``TensorProto`` data types counted as weights (FLOAT, INT8, FLOAT16).
_ONNX_WEIGHT_TYPES = {1: np.float32, 3: np.int8, 10: np.float16}


def _onnx_weights(proto, numpy_helper) -> tuple[int, int, int]:
    """``(elements, zeros, int8 tensors)`` of the float/int8 initializers and Constants."""
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value"]
    weights = zeros = int8 = 0
    for tensor in tensors:
        if tensor.data_type not in _ONNX_WEIGHT_TYPES:
            continue
        value = numpy_helper.to_array(tensor)
        weights += value.size
        zeros += int(np.count_nonzero(value == 0))
        int8 += tensor.data_type == 3
    return weights, zeros, int8


def _describe_onnx(path):
    """`describe` of an ``.onnx`` file (needs the ``onnx`` package)."""
    import onnx
    from onnx import numpy_helper

    with open(path, "rb") as f:
        data = f.read()
    try:
        proto = onnx.load_model_from_string(data)
        if not proto.graph.node:
            raise ValueError("no graph nodes")
        weights, zeros, int8 = _onnx_weights(proto, numpy_helper)
    except Exception as err:  # protobuf raises DecodeError and others on garbage
        raise ValueError(
            f"Corrupt ONNX file ({type(err).__name__}: {err}). Received: path={path!r}"
        ) from err
    ops = collections.Counter(
        f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in proto.graph.node
    )
    meta = {p.key: p.value for p in proto.metadata_props}
    info = json.loads(meta[_METADATA_NAME]) if _METADATA_NAME in meta else {}
    initializers = {t.name for t in proto.graph.initializer}
    return {
        "format": "onnx",
        "path": os.path.abspath(path),
        "size_bytes": len(data),
        "gzip_bytes": _gzip_size(data),
        "ops": dict(sorted(ops.items())),
        "op_count": sum(ops.values()),
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                      None),
        "delegate_partitions": None,
        "undelegated_ops": None,
        "flex_ops": sorted({name for name in ops if "." in name}),
        "weights": weights,
        "weights_stored": weights,
        "zero_fraction": zeros / weights if weights else 0.0,
        "sparse_tensors": len(proto.graph.sparse_initializer),
        "int8_tensors": int8,
        "signatures": {"serving_default": {
            "inputs": [i.name for i in proto.graph.input if i.name not in initializers],
            "outputs": [o.name for o in proto.graph.output],
        }},
        **_sampling(info),
    }


# --------------------------------------------------------------- SavedModel
def _describe_saved_model(path):
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        raise ValueError(f"Not a SavedModel directory (no saved_model.pb). Received: path={path!r}")
    size = gz = 0
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                content = f.read()
            size += len(content)
            gz += _gzip_size(content)
    try:
        proto = saved_model_pb2.SavedModel()
        with open(pb, "rb") as f:
            proto.ParseFromString(f.read())
        meta = proto.meta_graphs[0]
    except Exception as err:
        raise ValueError(
            f"Corrupt SavedModel ({type(err).__name__}: {err}). Received: path={path!r}"
        ) from err
    ops = collections.Counter(node.op for node in meta.graph_def.node)
    for function in meta.graph_def.library.function:
        ops.update(node.op for node in function.node_def)
    signatures = {
        key: {"inputs": sorted(sig.inputs), "outputs": sorted(sig.outputs)}
        for key, sig in meta.signature_def.items()
        if not key.startswith("__")
    }
    info = {}
    info_path = os.path.join(path, "assets.extra", f"{_METADATA_NAME}.json")
    if os.path.isfile(info_path):
        try:
            with open(info_path) as f:
                info = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"Corrupt {info_path!r} ({type(err).__name__}: {err}). Received: path={path!r}"
            ) from err
    weights = zeros = 0
    prefix = os.path.join(path, "variables", "variables")
    if os.path.exists(prefix + ".index"):
        try:
            reader = tf.train.load_checkpoint(prefix)
            dtypes = reader.get_variable_to_dtype_map()
            for name in reader.get_variable_to_shape_map():
                if not dtypes[name].is_floating:
                    continue
                value = reader.get_tensor(name)
                if not np.isfinite(value).all():  # refused below, naming the file
                    raise ValueError(f"variable {name!r} holds NaN or infinite values")
                weights += value.size
                zeros += int(np.count_nonzero(value == 0))
        except Exception as err:
            raise ValueError(
                f"Corrupt SavedModel variables ({type(err).__name__}: {err}). "
                f"Received: path={path!r}"
            ) from err
    return {
        "format": "saved_model",
        "path": os.path.abspath(path),
        "size_bytes": size,
        "gzip_bytes": gz,
        "ops": dict(sorted(ops.items())),
        "op_count": sum(ops.values()),
        "delegate_partitions": None,
        "undelegated_ops": None,
        "flex_ops": [],
        "weights": weights,
        "weights_stored": weights,
        "zero_fraction": zeros / weights if weights else 0.0,
        "sparse_tensors": 0,
        "int8_tensors": 0,
        "signatures": signatures,
        **_sampling(info),
    }
