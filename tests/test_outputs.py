"""Outputs of the commands: checked before the work, plain in logs, help for every option.

Fast tests call ``_io.check_output_path``, ``_console.progress_verbosity`` and
the parser in process; the slow ones run ``python -m tfp_bcnn.cli`` in a
subprocess, as a user does, with stdout and stderr captured (a pipe, not a
terminal).
"""

import argparse
import io
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tfp_bcnn import _console, _io, cli

#: What a progress bar leaves in a log: carriage returns, backspaces, ANSI escapes.
CONTROL = re.compile(r"[\r\b\x1b]")


# ------------------------------------------------------- check_output_path
def test_missing_folder_is_an_error_and_nothing_is_created(tmp_path):
    target = tmp_path / "typo" / "deeper" / "x.tflite"
    message = r"does not exist.*--mkdir.*Received: tflite='.*x\.tflite'"
    with pytest.raises(ValueError, match=message):
        _io.check_output_path(target, name="tflite")
    assert list(tmp_path.iterdir()) == []
    assert _io.check_output_path(target, name="tflite", mkdir=True) == str(target)
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []  # no probe left


def test_kinds_of_output(tmp_path):
    folder, file = tmp_path / "sm", tmp_path / "m.keras"
    folder.mkdir()
    file.write_bytes(b"x")
    with pytest.raises(ValueError, match="existing folder, not a file.*output="):
        _io.check_output_path(folder, name="output")
    with pytest.raises(ValueError, match="not a folder.*saved_model="):
        _io.check_output_path(file, name="saved_model", kind="folder")
    with pytest.raises(ValueError, match="is a file"):
        _io.check_output_path(file / "x.keras", name="output")
    with pytest.raises(ValueError, match="kind must be one of"):
        _io.check_output_path(file, kind="dir")
    with pytest.raises(ValueError, match="must name a file or folder"):
        _io.check_output_path("", name="output")
    # a report folder that exists is written into; a new one needs only its parent
    assert _io.check_output_path(folder, name="out_dir", kind="files_in") == str(folder)
    assert _io.check_output_path(tmp_path / "new", kind="files_in")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "sm"]
    assert file.read_bytes() == b"x"  # an existing target is left as it was


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux' /proc")
def test_unwritable_special_folder_names_the_target_not_a_temporary():
    # /proc exists but refuses new files, even for root, with ENOENT (not EACCES)
    with pytest.raises(OSError, match=r"Could not write '/proc/x\.tflite'") as err:
        _io.check_output_path("/proc/x.tflite", name="tflite")
    assert ".tmp" not in str(err.value) and "tflite='/proc/x.tflite'" in str(err.value)
    with pytest.raises(OSError) as err:  # the atomic writers themselves too
        with _io.atomic_file("/proc/x.keras"):
            pass
    assert "'/proc/x.keras'" in str(err.value) and ".tmp" not in str(err.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permissions do not bind root (the /proc test covers that case)")
def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable.*output="):
            _io.check_output_path(folder / "a.keras", name="output")
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------- progress lines
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_verbosity_follows_the_stream():
    assert _console.progress_verbosity(None, _Terminal()) == 1  # bars on a terminal
    assert _console.progress_verbosity(None, io.StringIO()) == 2  # a line an epoch in a file
    closed = io.StringIO()
    closed.close()
    assert not _console.interactive(closed) and not _console.interactive(object())
    for asked in (0, 1, 2):  # what the user asks for wins
        assert _console.progress_verbosity(asked, io.StringIO()) == asked
    with pytest.raises(ValueError, match="Received: verbose=3"):
        _console.progress_verbosity(3)
    with pytest.raises(ValueError, match="Received: verbose=True"):
        _console.progress_verbosity(True)


# ------------------------------------------------------------------- help
def _actions(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a}", act) for a, act in _actions(sub))
        else:
            yield "/".join(action.option_strings) or action.dest, action


def test_every_option_has_help_with_its_default():
    parser = cli.build_parser()
    names = set()
    for name, action in _actions(parser):
        assert action.help and action.help.strip(), f"{name} has no help text"
        default = action.default
        if default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert "default" in action.help, f"{name}: its default {default!r} is not shown"
        if action.option_strings and default is None and action.nargs != 0:
            assert "default" in action.help, f"{name}: what happens when it is left out?"
        names.add(name)
    assert len(names) > 50
    text = parser.format_help()
    assert "``" not in text and ":func:" not in text  # plain text, no reST markup
    for command in ("train", "evaluate", "prune", "export", "demo"):
        assert f"{command} --mkdir" in names  # every command that writes can create folders


# ------------------------------------------------------------- subprocess
def _cli(*args, cwd):
    """``python -m tfp_bcnn.cli ARGS`` with stdout and stderr captured (pipes)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFP_BCNN_VERBOSE")}
    return subprocess.run([sys.executable, "-m", "tfp_bcnn.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _tiny_npz(path):
    """40 images 12x12 of two classes (a bright left or right half), as a .npz."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.uniform(0.0, 0.2, (40, 12, 12)).astype("float32")
    x[y == 0, :, :6] += 0.7
    x[y == 1, :, 6:] += 0.7
    np.savez(path, x=x, y=y)
    return str(path)


#: A fresh interpreter that times the import (TensorFlow, Keras, the package) and then
#: each command (argv lists, JSON in ``sys.argv[1]``) up to its exit status, in one
#: process: the two are compared on the same process's clock, so the load of the
#: machine cannot tip the comparison. Prints one JSON line per command, after a
#: ``--- <i>`` line on stdout and stderr.
TIMED_MAIN = """
import json, sys, time
start = time.perf_counter()
import tfp_bcnn.cli as cli
imported = time.perf_counter()
for i, argv in enumerate(json.loads(sys.argv[1])):
    print(f"--- {i}", flush=True); print(f"--- {i}", file=sys.stderr, flush=True)
    begin = time.perf_counter()
    code = cli.main(argv)
    print(json.dumps({"import": imported - start, "command": time.perf_counter() - begin,
                      "code": code}), flush=True)
"""


def _fake_model(folder):
    """A zip that passes the parser's .keras check (never loaded: the checks come first)."""
    model = folder / "m.keras"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("config.json", "{}")
    return model


def test_every_command_checks_its_outputs_first(tmp_path, capsys):
    """In process: exit 2, the argument and the target named, nothing written."""
    model = _fake_model(tmp_path)
    missing = tmp_path / "no"
    cases = [
        (["train", "--epochs", "1", "--output", str(missing / "a.keras")], "output="),
        (["train", "--members", "2", "--output", "/proc/a.keras"], "'/proc/a_0.keras'"),
        (["export", str(model), "--tflite", str(missing / "dir" / "x.tflite")], "tflite="),
        (["export", str(model), "--tflite", str(tmp_path / "x.tflite"),
          "--saved-model", str(missing / "sm")], "saved_model="),
        (["evaluate", str(model), "--out-dir", str(missing / "eval")], "out_dir="),
        (["prune", str(model), "--output", str(missing / "p.keras")], "output="),
        (["demo", "--out-dir", str(missing / "run")], "out_dir="),
    ]
    for argv, named in cases:
        assert cli.main(argv) == 2, argv
        captured = capsys.readouterr()
        assert named in captured.err and ".tmp" not in captured.err, captured.err
        assert "Epoch" not in captured.out and "training" not in captured.out, captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # nothing written


@pytest.mark.slow  # trains one epoch (a few seconds with the model build)
def test_mkdir_creates_the_folder_then_the_command_runs(tmp_path):
    target = tmp_path / "made" / "here" / "a.keras"
    assert cli.main(["train", "--frequentist", "--epochs", "1", "--verbose", "0", "--dataset",
                     _tiny_npz(tmp_path / "tiny.npz"), "--output", str(target),
                     "--mkdir"]) == 0
    assert target.is_file()


@pytest.mark.slow
def test_bad_output_folders_fail_before_any_work(tmp_path):
    """In a fresh interpreter: exit 2, the target named, nothing written, and the
    error within the import time + 1 s.

    The import (TensorFlow, about 5 s on quiet cores) and the commands are timed
    in the same process (`TIMED_MAIN`, one interpreter for both cases: one
    TensorFlow import, not two), so the bound is that a command takes under
    1 s after the import: the check itself is a mkstemp and an unlink
    (milliseconds, 0.02 s measured on loaded cores), while any work before it
    would take seconds (loading MNIST-5k, building a model, one epoch).
    """
    model = _fake_model(tmp_path)
    cases = [
        (["train", "--output", str(tmp_path / "no" / "a.keras")], "does not exist",
         "output="),
        (["export", str(model), "--tflite", "/proc/x.tflite"],
         "Could not write '/proc/x.tflite'", "tflite="),
    ]
    env = {k: v for k, v in os.environ.items() if k != "TFP_BCNN_VERBOSE"}
    out = subprocess.run([sys.executable, "-c", TIMED_MAIN, json.dumps([c[0] for c in cases])],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    stdouts = re.split(r"^--- \d+\n", out.stdout, flags=re.M)[1:]
    stderrs = re.split(r"^--- \d+\n", out.stderr, flags=re.M)[1:]
    assert len(stdouts) == len(stderrs) == len(cases), (out.stdout, out.stderr[-2000:])
    for (argv, message, name), stdout, stderr in zip(cases, stdouts, stderrs):
        timing = json.loads(stdout.splitlines()[-1])
        assert timing["code"] == 2, (argv, stderr[-2000:])
        assert message in stderr and name in stderr, stderr
        assert ".tmp" not in stderr and "Traceback" not in stderr, stderr
        assert "training" not in stdout, stdout
        assert timing["command"] < 1.0, (argv, timing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # nothing written


@pytest.mark.slow
def test_train_output_to_a_pipe_is_plain_lines(tmp_path):
    """stdout captured (a pipe): one plain line per epoch, no bar, no control codes."""
    out = _cli("train", "--epochs", "2", "--dataset", _tiny_npz(tmp_path / "tiny.npz"),
                  "--output", str(tmp_path / "a.keras"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert not CONTROL.search(text), repr(CONTROL.search(text))
    assert "Epoch 1/2" in out.stdout and "Epoch 2/2" in out.stdout
    epoch_lines = [x for x in out.stdout.splitlines() if re.match(r"\s*\d+/\d+ - ", x)]
    assert len(epoch_lines) == 2, out.stdout  # verbose=2: one summary line per epoch
    assert "━" not in text
