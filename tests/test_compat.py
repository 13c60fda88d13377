"""The private Keras APIs of ``tfp_bcnn._compat`` still behave as the package needs.

One test per private API. Each fails with a message that names the API and
says what a Keras upgrade changed, so that an upgrade breaks here, loudly,
before it breaks ``to_bayesian``, ``bayesian_layers`` or export in a
confusing way.
"""

import inspect

import keras
import pytest

from tfp_bcnn import _compat


def _nested_model():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="inner_dense")],
                             name="inner")
    x = keras.Input((4,), name="pixels")
    out = keras.layers.Dense(2, name="head")(inner(x))
    return keras.Model(x, out, name="outer")


def _fail(api, what):
    pytest.fail(f"Keras {keras.__version__} broke the private API {api}: {what}. "
                "Update tfp_bcnn/_compat.py.")


def test_all_layers_uses_flatten_layers():
    api = "keras.layers.Layer._flatten_layers(include_self, recursive)"
    if not hasattr(keras.layers.Layer, "_flatten_layers"):
        _fail(api, "the method is gone")
    try:
        names = [layer.name for layer in _compat.all_layers(_nested_model())]
        with_self = [layer.name for layer in _compat.all_layers(_nested_model(),
                                                                include_self=True)]
    except Exception as err:  # noqa: BLE001 - any failure is the API's
        _fail(api, f"calling it raised {type(err).__name__}: {err}")
    order = [names.index(n) if n in names else -1 for n in ("pixels", "inner", "inner_dense",
                                                            "head")]
    if with_self[0] != "outer" or "outer" in names or -1 in order or order != sorted(order):
        _fail(api, f"it no longer lists nested layers in model order (got {with_self})")


def test_is_graph_model_uses_functional_class():
    api = "keras.src.models.functional.Functional"
    try:
        from keras.src.models.functional import Functional
    except ImportError as err:
        _fail(api, f"the import failed ({err})")

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    model = _nested_model()
    if not isinstance(model, Functional):
        _fail(api, "keras.Model(inputs, outputs) is no longer an instance of it")
    if not (_compat.is_graph_model(model) and _compat.is_graph_model(model.layers[1])
            and not _compat.is_graph_model(Subclassed())):
        _fail(api, "is_graph_model no longer tells graph models from subclassed ones")


def test_functional_class_is_what_keras_model_returns():
    api = "keras.src.models.functional.Functional (functional_class)"
    model = _nested_model()
    if type(model) is not _compat.functional_class():
        _fail(api, f"keras.Model(inputs, outputs) is a {type(model).__name__}, not it")


def test_calls_in_model_uses_function_nodes():
    api = "Function._nodes / Operation._inbound_nodes"
    dense = keras.layers.Dense(2, name="shared_dense")
    x = keras.Input((2,))
    twice = keras.Model(x, dense(dense(x)))
    y = keras.Input((2,))
    once = keras.Model(y, dense(y))  # a third call, in another graph
    try:
        counts = (_compat.calls_in_model(twice, dense), _compat.calls_in_model(once, dense))
    except AttributeError as err:
        _fail(api, f"the attribute is gone ({err})")
    if counts != (2, 1):
        _fail(api, f"it no longer counts the calls of a layer in one graph (got {counts})")


def test_input_layer_name_uses_keras_history():
    api = "KerasTensor._keras_history.operation.name"
    x = keras.Input((4,), name="pixels")
    try:
        name = _compat.input_layer_name(x)
    except AttributeError as err:
        _fail(api, f"the attribute is gone ({err})")
    if name != "pixels":
        _fail(api, f"it no longer names the input layer (got {name!r})")


def test_clone_model_accepts_a_shared_cache():
    api = "keras.models.clone_model(..., cache=dict)"
    shared = keras.layers.Dense(2, name="shared")
    x = keras.Input((2,), name="x")
    inner = keras.Model(x, shared(x), name="inner")
    y = keras.Input((2,), name="y")
    outer = keras.Model(y, shared(inner(y)), name="outer")
    cache = {}
    clones = []

    def clone_function(layer):
        if isinstance(layer, keras.Model):
            return _compat.clone_model(layer, input_tensors=None,
                                       clone_function=clone_function, cache=cache)
        clones.append(layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        _compat.clone_model(outer, input_tensors=None, clone_function=clone_function,
                            cache=cache)
    except TypeError as err:
        _fail(api, f"the argument is refused ({err})")
    if "cache" not in inspect.signature(keras.models.clone_model).parameters and not cache:
        _fail(api, "the cache is no longer filled")
    if clones.count("shared") != 1:
        _fail(api, f"a layer shared by nested models was cloned {clones.count('shared')} "
                   "times (the cache is not shared across nested calls)")


def test_layer_test_harness_is_importable():
    # tests/test_keras_native.py runs Keras' own layer tests from keras.src.
    try:
        from keras.src.testing import TestCase
    except ImportError as err:
        _fail("keras.src.testing.TestCase", f"the import failed ({err})")
    if "run_mixed_precision_check" not in inspect.signature(TestCase.run_layer_test).parameters:
        _fail("keras.src.testing.TestCase.run_layer_test", "its mixed-precision check is gone")


def test_torch_compiled_optimizer_configs_load_without_the_torch_backend(tmp_path):
    # A .keras file compiled on the torch backend names the torch module of
    # its optimizer; with tfp_bcnn imported, the registered plain name wins
    # and Keras' torch backend is never imported (it crashed TensorFlow).
    import json
    import sys
    import zipfile

    import numpy as np

    import tfp_bcnn  # noqa: F401  (registers the optimizers)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json.loads(files["config.json"])
    config["compile_config"]["optimizer"].update(   # as in a file saved on torch
        module="keras.src.backend.torch.optimizers.torch_adam", registered_name="Adam")
    files["config.json"] = json.dumps(config).encode()
    torch_path = tmp_path / "torch.keras"
    with zipfile.ZipFile(torch_path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    # Checked first: without the registration the load below imports Keras'
    # torch backend, which crashed this process (TensorFlow loaded) when
    # torch is installed.
    assert keras.saving.get_registered_object("Adam") is keras.optimizers.Adam
    before = "keras.src.backend.torch" in sys.modules
    loaded = keras.saving.load_model(torch_path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.learning_rate.numpy() == pytest.approx(0.01)
    if not before:
        assert "keras.src.backend.torch" not in sys.modules
    for name in _compat.TORCH_SWAPPED_OPTIMIZERS:   # the names Keras' torch backend swaps
        if not hasattr(keras.optimizers, name):
            _fail(f"keras.optimizers.{name}", "the optimizer is gone")
