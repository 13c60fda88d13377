import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global seed (numpy, python, backend)."""
    keras.utils.set_random_seed(1234)


@pytest.fixture
def tiny_npz(tmp_path):
    """40 images 12x12 of two classes (a bright left or right half), as a .npz:
    a data set the command line trains on in a second (``--dataset PATH``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.uniform(0.0, 0.2, (40, 12, 12)).astype("float32")
    x[y == 0, :, :6] += 0.7
    x[y == 1, :, 6:] += 0.7
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y)
    return str(path)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config, items):
    """Keep the tests of one backend subprocess on one xdist worker.

    `_backend.result` runs every registered script of a backend in one
    subprocess per pytest process (minutes for JAX); under ``pytest -n 2``
    each worker would start its own. An ``xdist_group`` per backend (honoured
    by ``--dist loadgroup``, the Makefile's) sends those tests to one worker,
    so the subprocess runs once. Serial runs ignore the mark.
    """
    import inspect

    import _backend

    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        if module.__name__ == "test_torch_backend":
            item.add_marker(pytest.mark.xdist_group("torch_subprocess"))
        elif getattr(module, "result", None) is _backend.result and \
                "result(" in inspect.getsource(item.function):
            item.add_marker(pytest.mark.xdist_group("jax_subprocess"))
