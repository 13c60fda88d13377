"""Run test code under another Keras backend (JAX, PyTorch), in subprocesses started once.

The backend is chosen when Keras is first imported, so code for JAX has to run
in a fresh Python process (``KERAS_BACKEND=jax``). Starting one costs seconds
(Keras, JAX and tfp_bcnn imports), so the backend tests share a process:

* a test module registers its script at import time with
  ``SCRIPT = register("name", code)``; the code is self-contained (its own
  imports) and hands its result back with ``report(value)`` (a JSON value;
  numpy scalars are converted with ``float``);
* the test asks ``result("name")``: the first call runs every script
  registered for that backend so far (pytest imports all selected test
  modules before it runs the first test) in ONE subprocess, each in its own
  namespace, and caches the results; later calls only look them up. A
  script that raises fails its own test with its traceback, not the others.
  Between scripts the process resets the dtype policy to ``float32`` and
  clears the Keras session.
* `run_script` runs one script alone (for code that needs its own process:
  command-line arguments, another environment).

Under JAX, TensorFlow is hidden from the process (``import tensorflow``
raises ImportError): the JAX path is meant for machines without TensorFlow,
so a script that needed it would fail here rather than pass by accident, and
Keras' ``set_random_seed`` no longer imports it just to seed it (about 2 s
of CPU per process). The PyTorch scripts keep it: they check the errors of
what needs TensorFlow with TensorFlow installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

__all__ = ["register", "result", "run_script"]

MARKER = "BACKEND-RESULTS "

_RUNNER = textwrap.dedent(
    """
    import json, sys, traceback
    scripts = json.load(open(sys.argv[1]))
    results = {}
    for name, code in scripts.items():
        box = {}
        def report(value, _box=box):
            _box["value"] = json.loads(json.dumps(value, default=float))
        ns = {"__name__": "__main__", "report": report}
        try:
            exec(compile(code, "<backend script " + name + ">", "exec"), ns)
            results[name] = {"ok": True, "value": box.get("value")}
        except BaseException:
            results[name] = {"ok": False, "error": traceback.format_exc()[-4000:]}
        try:
            import keras
            keras.mixed_precision.set_global_policy("float32")
            keras.backend.clear_session()
        except Exception:
            pass
    print("\\n" + MARKER + json.dumps(results), flush=True)
    """
).replace("MARKER", repr(MARKER))

#: Run first under JAX (see the module docstring): ``tensorflow`` and its
#: submodules cannot be imported.
_HIDE_TENSORFLOW = textwrap.dedent(
    """
    import importlib.abc as _abc, sys as _sys
    class _NoTensorFlow(_abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"TensorFlow is hidden from the JAX test scripts: {name}")
            return None
    _sys.meta_path.insert(0, _NoTensorFlow())
    """
)


def _prelude(backend: str) -> str:
    return _HIDE_TENSORFLOW if backend == "jax" else ""


_registry: dict[str, dict[str, str]] = {}
_results: dict[str, dict[str, dict]] = {}


def _env(backend: str, extra: dict | None = None) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    if backend == "jax":
        env.setdefault("JAX_PLATFORMS", "cpu")
    if backend == "torch":
        # torch's OpenMP workers spin: on a loaded 2-core machine an epoch ran
        # ~30x slower with 2 threads than with 1 (tests/test_torch_backend.py).
        env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra or {})
    return env


def register(name: str, code: str, backend: str = "jax") -> str:
    """Register ``code`` (dedented) to run under ``backend``; returns ``name``.

    Raises:
        ValueError: if another script already has that name.
    """
    scripts = _registry.setdefault(backend, {})
    code = textwrap.dedent(code)
    if scripts.get(name, code) != code:
        raise ValueError(f"A backend script is already registered as {name!r}. "
                         f"Received: name={name!r}")
    scripts[name] = code
    return name


def _run_batch(backend: str, timeout_per_script: int) -> dict[str, dict]:
    """Every registered script of ``backend`` in one process; a failure of the
    process itself (crash, timeout) is recorded for each script, so the tests
    after the first fail at once instead of starting the batch again."""
    scripts = _registry.get(backend, {})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(scripts, f)
    try:
        proc = subprocess.run([sys.executable, "-c", _prelude(backend) + _RUNNER, f.name],
                              capture_output=True, text=True, env=_env(backend),
                              timeout=timeout_per_script * len(scripts))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
        if proc.returncode == 0 and lines:
            return json.loads(lines[-1][len(MARKER):])
        error = f"the subprocess failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    except subprocess.TimeoutExpired:
        error = f"the subprocess of {len(scripts)} scripts ran over {timeout_per_script} s each"
    finally:
        os.unlink(f.name)
    return {name: {"ok": False, "error": error} for name in scripts}


def result(name: str, backend: str = "jax", timeout: int = 300):
    """The value that the registered script ``name`` reported under ``backend``.

    ``timeout`` is per script (the batch gets that times the number of scripts).

    Raises:
        AssertionError: the script raised (its traceback is the message) or
            the subprocess failed.
    """
    if name not in _results.get(backend, {}):
        if name not in _registry.get(backend, {}):
            raise KeyError(f"No {backend} script registered as {name!r}. Received: name={name!r}")
        _results.setdefault(backend, {}).update(_run_batch(backend, timeout))
    out = _results[backend][name]
    if not out["ok"]:
        raise AssertionError(f"The {backend} script {name!r} failed:\n{out['error']}")
    return out["value"]


def run_script(code: str, backend: str = "jax", args=(), env: dict | None = None,
               timeout: int = 600):
    """Run one script alone in a fresh ``backend`` process; returns what it reported.

    ``report(value)`` prints the value as JSON on a marked line (the script
    gets ``report`` and ``sys.argv[1:] == args``).

    Raises:
        AssertionError: the process failed or reported nothing.
    """
    prelude = ("import json as _json\n"
               "def report(value):\n"
               f"    print('\\n' + {MARKER!r} + _json.dumps(value, default=float), flush=True)\n")
    source = _prelude(backend) + prelude + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", source, *map(str, args)],
                          capture_output=True, text=True, env=_env(backend, env),
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"The {backend} script failed (exit {proc.returncode}):\n"
                             f"{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARKER):])
