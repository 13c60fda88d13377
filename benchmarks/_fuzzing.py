"""Mutation fuzzing of the package's file loaders, each call isolated in a worker process.

Shared by ``benchmarks/fuzz.py`` (the long run) and ``tests/test_fuzz.py``
(a fast subset). `make_seeds` writes the real files the mutations start
from; then three parts:

* **mutators**: ``(bytes, rng) -> bytes`` functions that damage a real file
  of ours the way storage, transfers and attackers do (truncation, byte flips,
  duplicated chunks, huge integers; for zip archives member renames and size
  lies; for ``.tflite`` huge shape fields; for ``.npz`` lying ``.npy``
  headers; for images huge declared sizes);
* **loaders** (`LOADERS`): the public calls under test, each followed by a
  use of what it returned, and the verdict on the outcome: ``valid`` (loaded,
  finite outputs), ``clear`` (a ``ValueError``/``FileNotFoundError`` of one
  line naming the file), ``unclear`` (any other exception, or a message not
  naming the file), ``wrong`` (loaded and returned NaN or infinity without a
  word);
* `Supervisor`: feeds paths to a long-lived worker process (``python
  _fuzzing.py --worker GROUP``) one at a time; a worker that dies is a
  ``crash`` (its signal recorded) and one silent for more than ``timeout``
  seconds a ``hang``; either way it is restarted and the run goes on.

Importing this module does not import TensorFlow; the ``runtime`` worker
never does (it loads ``export/runtime.py`` by path, as a device would).
"""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Which worker process runs each loader (the runtime's never imports TensorFlow).
GROUPS = {"runtime": "runtime", "describe": "tf", "keras": "tf", "npz": "tf", "images": "tf"}
OUTCOMES = ("valid", "clear", "unclear", "wrong", "crash", "hang")


# ------------------------------------------------------------------ mutators
def truncate(data: bytes, rng) -> bytes:
    """The first ``k`` bytes, ``k`` uniform in ``[0, len)``."""
    return data[: int(rng.integers(0, len(data)))]


def flip(data: bytes, rng) -> bytes:
    """1-8 bytes XOR-ed with a random non-zero value (half in the first 10 %)."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        hi = len(out) if rng.random() < 0.5 else max(1, len(out) // 10)
        out[int(rng.integers(0, hi))] ^= int(rng.integers(1, 256))
    return bytes(out)


def duplicate(data: bytes, rng) -> bytes:
    """A chunk of 1-256 bytes copied to another position (inserted)."""
    start = int(rng.integers(0, len(data)))
    chunk = data[start : start + int(rng.integers(1, 257))]
    at = int(rng.integers(0, len(data)))
    return data[:at] + chunk + data[at:]


def huge_int(data: bytes, rng) -> bytes:
    """A 4-aligned 32-bit word overwritten by a huge or negative integer."""
    out = bytearray(data)
    at = 4 * int(rng.integers(0, max(1, len(out) // 4 - 1)))
    value = int(rng.choice([2**31 - 1, 2**32 - 1, 2**31, 2**30, 0x7FFFFFF0, 1 << 24]))
    out[at : at + 4] = value.to_bytes(4, "little")
    return bytes(out)


def tflite_huge_shape(data: bytes, rng) -> bytes:
    """One dimension of one tensor's declared shape set huge, zero or negative."""
    from tensorflow.lite.python import schema_py_generated as schema

    out = bytearray(data)
    graph = schema.Model.GetRootAsModel(out, 0).Subgraphs(0)
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    shapes = [t.ShapeAsNumpy() for t in tensors if t.ShapeLength()]
    shape = shapes[int(rng.integers(0, len(shapes)))]  # a view into ``out``
    shape[int(rng.integers(0, len(shape)))] = int(rng.choice([2**31 - 1, 2**20, 0, -1, 65536]))
    return bytes(out)


def _central_entries(data: bytes) -> list[int]:
    """Offsets of the zip central-directory headers (signature ``PK\\1\\2``)."""
    out, at = [], data.find(b"PK\x01\x02")
    while at >= 0:
        out.append(at)
        at = data.find(b"PK\x01\x02", at + 4)
    return out


def _zip_entry(data: bytes, rng):
    """``(copy of data, offset of a random central header, of its local header)``, or None."""
    entries = _central_entries(data)
    if not entries:
        return None
    at = entries[int(rng.integers(0, len(entries)))]
    return bytearray(data), at, int.from_bytes(data[at + 42 : at + 46], "little")


def zip_rename(data: bytes, rng) -> bytes:
    """A member renamed in the central directory and its local header (same length)."""
    entry = _zip_entry(data, rng)
    if entry is None:
        return flip(data, rng)
    out, at, local = entry
    n = int.from_bytes(out[at + 28 : at + 30], "little")
    name = bytes(out[at + 46 : at + 46 + n])
    new = rng.choice([b"../" + name[3:], b"/" + name[1:], name[::-1], b"x" * n, name.upper()])
    new = bytes(new[:n]).ljust(n, b"_")
    out[at + 46 : at + 46 + n] = new
    if out[local : local + 4] == b"PK\x03\x04":
        out[local + 30 : local + 30 + n] = new
    return bytes(out)


def zip_size_lie(data: bytes, rng) -> bytes:
    """A member's compressed or uncompressed size rewritten (central and/or local header)."""
    entry = _zip_entry(data, rng)
    if entry is None:
        return huge_int(data, rng)
    out, at, local = entry
    value = int(rng.choice([0, 1, 7, 2**31 - 1, 2**32 - 1, int(rng.integers(0, 2**20))]))
    field = int(rng.choice([20, 24]))  # compressed, uncompressed size in the central header
    out[at + field : at + field + 4] = value.to_bytes(4, "little")
    if rng.random() < 0.5 and out[local : local + 4] == b"PK\x03\x04":
        out[local + field - 2 : local + field + 2] = value.to_bytes(4, "little")
    return bytes(out)


def npz_header_lie(data: bytes, rng) -> bytes:
    """An ``.npz`` rebuilt with one member's ``.npy`` header declaring another shape/dtype."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = {name: z.read(name) for name in z.namelist()}
    name = sorted(members)[int(rng.integers(0, len(members)))]
    raw = members[name]
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    reader = {(1, 0): np.lib.format.read_array_header_1_0,
              (2, 0): np.lib.format.read_array_header_2_0}[version]
    shape, fortran, dtype = reader(f)
    body = raw[f.tell():]
    kind = int(rng.integers(0, 3))
    if kind == 0:
        shape = tuple(int(rng.choice([2**40, 2**31, 0, 10**6])) if i == 0 else d
                      for i, d in enumerate(shape))
    elif kind == 1:
        dtype = np.dtype(rng.choice(["<f8", "<i2", "|O", "<c16", "|u1"]))
    else:
        shape = (*shape, int(rng.integers(2, 1000)))
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
              "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members[name] = buf.getvalue() + body
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for key, value in members.items():
            z.writestr(key, value)
    return out.getvalue()


def png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG declaring ``width x height`` (valid CRCs), with ``rows`` rows of data."""
    def chunk(kind, body):
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = height if rows is None else rows
    pixels = b"".join(b"\0" + bytes((7 * r + c) % 256 for c in range(width)) for r in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                                0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def image_huge(data: bytes, rng) -> bytes:
    """A PNG header declaring a huge image (a decompression bomb's first bytes)."""
    side = int(rng.choice([9000, 50_000, 2**31 - 1]))
    return png(side, int(rng.choice([side, 1])), rows=0)  # no pixel data at all


BYTE_MUTATORS = {"truncate": truncate, "flip": flip, "duplicate": duplicate,
                 "huge_int": huge_int}
#: Mutators of each loader's files: the byte-level ones plus those of its format.
MUTATORS = {
    "runtime": {**BYTE_MUTATORS, "huge_shape": tflite_huge_shape},
    "describe": {**BYTE_MUTATORS, "huge_shape": tflite_huge_shape},
    "keras": {**BYTE_MUTATORS, "zip_rename": zip_rename, "zip_size_lie": zip_size_lie},
    "npz": {**BYTE_MUTATORS, "zip_rename": zip_rename, "zip_size_lie": zip_size_lie,
            "npy_header_lie": npz_header_lie},
    "images": {**BYTE_MUTATORS, "huge_header": image_huge},
}


def mutate(loader: str, data: bytes, seed: int, index: int) -> tuple[str, bytes]:
    """The ``index``-th mutation of ``data`` for ``loader`` (deterministic in both)."""
    rng = np.random.default_rng([seed, index])
    names = sorted(MUTATORS[loader])
    name = names[int(rng.integers(0, len(names)))]
    return name, MUTATORS[loader][name](data, rng)


# ---------------------------------------------------------------- seed files
def make_seeds(directory: Path) -> dict[str, Path]:
    """The real files the mutations start from, written by the package itself."""
    import keras

    from tfp_bcnn import export, layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2DFlipout(4, 3, activation="relu", seed=1),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        layers.DenseFlipout(3, activation="softmax", seed=1),
    ])
    seeds = {"runtime": directory / "m.tflite", "keras": directory / "m.keras",
             "npz": directory / "d.npz", "images": directory / "images"}
    export.to_tflite(model, seeds["runtime"], num_samples=4)
    seeds["describe"] = seeds["runtime"]
    model.save(seeds["keras"])
    rng = np.random.default_rng(0)
    np.savez(seeds["npz"], x=rng.integers(0, 256, (6, 8, 8), np.uint8), y=np.arange(6) % 3)
    for label in ("a", "b"):
        (seeds["images"] / label).mkdir(parents=True)
        for i in range(2):
            (seeds["images"] / label / f"{i}.png").write_bytes(png(6 + i, 5))
    return seeds


def target(loader: str, seeds: dict, work: Path, index: int, data: bytes) -> Path:
    """Writes mutated ``data`` where ``loader`` reads it (an image: into a folder copy)."""
    if loader != "images":
        path = work / f"{loader}_{index}{seeds[loader].suffix}"
        path.write_bytes(data)
        return path
    root = work / f"images_{index}"
    shutil.copytree(seeds["images"], root)
    path = root / "b" / "1.png"
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------- loaders
def _runtime_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_runtime", ROOT / "export" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _probe(shape) -> np.ndarray | None:
    """Two random images of ``(None, *shape)``; None when absurdly large (not probed)."""
    size = int(np.prod([max(int(d or 1), 1) for d in shape[1:]], dtype=np.float64))
    if size > 10**7:
        return None
    return np.random.default_rng(0).random((2, *[int(d or 1) for d in shape[1:]]),
                                           dtype=np.float32)


def _load(loader: str, path: str, ctx: dict):
    """Runs the loader on ``path`` and uses its result; returns arrays to check finite."""
    if loader == "runtime":
        model = ctx["runtime"].TFLiteBayesianModel(path)
        x = _probe(model.input_shape)
        return [] if x is None else [model.predict(x, return_samples=True).samples]
    if loader == "describe":
        from tfp_bcnn import export

        info = export.describe(path)
        return [np.asarray([info["weights"], info["zero_fraction"]], np.float64)]
    if loader == "keras":
        from tfp_bcnn import workflow

        model = workflow.load_model(path)
        x = _probe(model.input_shape)
        return [] if x is None else [np.asarray(model(x))]
    if loader == "npz":
        from tfp_bcnn import datasets

        return list(datasets.load_npz(path))
    if loader == "images":
        from tfp_bcnn import datasets

        return list(datasets.load_image_folder(os.path.dirname(os.path.dirname(path)),
                                               image_size=(8, 8)))
    if loader == "_selftest":  # proves that a crash or a hang is caught (tests/test_fuzz.py)
        if path == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(3600)
    raise ValueError(f"Unknown loader. Received: loader={loader!r}")


def verdict(loader: str, path: str, ctx: dict) -> dict:
    """``{"outcome", "detail"}`` of one loader call (see the module docstring)."""
    import warnings

    named = os.path.dirname(os.path.dirname(path)) if loader == "images" else path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arrays = _load(loader, path, ctx)
    except (ValueError, FileNotFoundError) as err:
        message = str(err)
        clear = named in message and "\n" not in message.strip()
        return {"outcome": "clear" if clear else "unclear",
                "detail": f"{type(err).__name__}: {message[:300]}"}
    except Exception as err:  # noqa: BLE001 (an undocumented exception is the finding)
        return {"outcome": "unclear", "detail": f"{type(err).__name__}: {str(err)[:300]}"}
    finite = all(np.isfinite(np.asarray(a, np.float64)).all() for a in arrays
                 if np.issubdtype(np.asarray(a).dtype, np.number))
    return {"outcome": "valid" if finite else "wrong", "detail": ""}


def _worker(group: str) -> None:
    """Reads ``loader<TAB>path`` lines on stdin, answers one JSON line each."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    ctx = {"runtime": _runtime_module()}
    if group == "tf":
        import tfp_bcnn  # noqa: F401  (TensorFlow loaded once, before the first file)
    print("ready", flush=True)
    for line in sys.stdin:
        loader, path = line.rstrip("\n").split("\t", 1)
        print(json.dumps(verdict(loader, path, ctx)), flush=True)


# ---------------------------------------------------------------- supervisor
class Supervisor:
    """Runs loader calls in a worker process; survives its crashes and hangs.

    Args:
        group: ``"runtime"`` (no TensorFlow) or ``"tf"``.
        timeout: seconds one call may take before it counts as a hang.
        log: file the workers' stderr goes to.
    """

    def __init__(self, group: str, timeout: float = 30.0, log=None):
        self.group, self.timeout, self.log = group, timeout, log
        self.proc = None
        self.restarts = 0

    def _start(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", self.group], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log or subprocess.DEVNULL, text=True, env=env)
        line = self._readline(300.0)
        if line != "ready\n":
            raise RuntimeError(f"fuzz worker {self.group!r} did not start: {line!r}")

    def _readline(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else None

    def call(self, loader: str, path: str) -> dict:
        """The verdict of ``loader`` on ``path``, or a crash / hang record."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            self.proc.stdin.write(f"{loader}\t{path}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._readline(self.timeout)
        if line:
            return json.loads(line)
        if line is None:  # silent past the timeout
            self.proc.kill()
            self.proc.wait()
            result = {"outcome": "hang", "detail": f"no answer in {self.timeout:g} s"}
        else:  # end of stdout: the worker died
            code = self.proc.wait()
            what = signal.Signals(-code).name if code < 0 else f"exit status {code}"
            result = {"outcome": "crash", "detail": what}
        self.proc = None
        self.restarts += 1
        return result

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
            self.proc = None


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(sys.argv[2])
