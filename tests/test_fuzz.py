"""Mutation fuzzing, fast subset: a few dozen mutated files per loader, fixed seed.

Every loader of ours must answer a damaged file with a valid load (finite
outputs) or one clear ``ValueError`` naming it; never a crash, a hang, an
undocumented exception or a silent NaN. The mutators and the isolated worker
are ``benchmarks/_fuzzing.py``; ``benchmarks/fuzz.py`` runs >= 2,000 files.
The native loaders (LiteRT, h5py, image decoders) run in a worker process,
so that a crash is recorded as a failure of this test rather than ending
the test session; the pure-Python ones (``describe``'s checks, ``.npz``) run
in this process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzzing", ROOT / "benchmarks" / "_fuzzing.py")
fuzzing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzzing)

SEED = 0


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return fuzzing.make_seeds(tmp_path_factory.mktemp("fuzz") / "seeds")


def _files(loader, seeds, work, count):
    """``(index, mutation, path)`` of ``count`` mutated files for ``loader``."""
    source = seeds["images"] / "b" / "1.png" if loader == "images" else seeds[loader]
    data = source.read_bytes()
    for i in range(count):
        kind, mutated = fuzzing.mutate(loader, data, SEED, i)
        yield i, kind, fuzzing.target(loader, seeds, work, i, mutated)


def _assert_all_good(results):
    bad = [r for r in results if r[2]["outcome"] not in ("valid", "clear")]
    assert not bad, bad[:5]


@pytest.mark.parametrize("loader, count", [("describe", 30), ("npz", 30)])
def test_fuzz_in_process(seeds, tmp_path, loader, count):
    ctx = {"runtime": None}
    results = [(i, kind, fuzzing.verdict(loader, str(path), ctx))
               for i, kind, path in _files(loader, seeds, tmp_path, count)]
    _assert_all_good(results)
    assert sum(r[2]["outcome"] == "clear" for r in results) >= count // 2  # really damaged


def test_fuzz_runtime_in_worker(seeds, tmp_path):
    """The TF-free runtime on 40 mutated .tflite files, in a worker without TensorFlow."""
    sup = fuzzing.Supervisor("runtime", timeout=30)
    try:
        results = [(i, kind, sup.call("runtime", str(path)))
                   for i, kind, path in _files("runtime", seeds, tmp_path, 40)]
    finally:
        sup.close()
    _assert_all_good(results)
    assert sup.restarts == 0


@pytest.mark.slow
def test_fuzz_native_loaders_in_worker(seeds, tmp_path):
    """``workflow.load_model`` (h5py) and ``load_image_folder`` (Pillow, TF decoders)."""
    sup = fuzzing.Supervisor("tf", timeout=60)
    try:
        results = [(i, kind, sup.call(loader, str(path))) for loader in ("keras", "images")
                   for i, kind, path in _files(loader, seeds, tmp_path, 15)]
    finally:
        sup.close()
    _assert_all_good(results)


@pytest.mark.slow
def test_supervisor_records_crashes_and_hangs():
    """A worker killed by SIGSEGV is a crash and a silent one a hang; the next call works."""
    sup = fuzzing.Supervisor("runtime", timeout=2)
    try:
        assert sup.call("_selftest", "crash") == {"outcome": "crash", "detail": "SIGSEGV"}
        assert sup.call("_selftest", "hang")["outcome"] == "hang"
        assert sup.call("runtime", "/nonexistent.tflite")["outcome"] == "clear"
        assert sup.restarts == 2
    finally:
        sup.close()
