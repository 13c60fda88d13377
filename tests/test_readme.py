"""Every code block of README.md runs as written, as a new user runs it.

The tools live in the virtual environment that ``make demo`` / ``make test``
create (``.venv``); the README says to activate it. So each bash block runs as
one script in a temporary folder holding a ``.venv`` link to the environment
running this suite, with ``source .venv/bin/activate`` first (blocks that
contain that line run unchanged), and nothing of that environment on PATH
before. Python blocks run as scripts with its interpreter. The two make
commands are checked with ``make -n`` (a dry run): running them here would
install a second environment and run this suite from inside itself; CI runs
``make test`` for real and ``tests/test_cli.py`` runs the demo.

No block may print a TensorFlow / absl / CUDA / LiteRT log line: the package
and the command line silence them (``TFP_BCNN_VERBOSE`` unset here).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# every block runs in a fresh process
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
VENV = Path(sys.prefix)
ACTIVATE = "source .venv/bin/activate"
#: absl / TF C++ lines ("I0000 00:00:..."), their preamble, LiteRT's INFO line, cuInit.
LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages|INFO: Created TensorFlow|"
                      r"WARNING:(absl|tensorflow):)|cuInit|oneDNN", re.M)


def _env():
    """The environment of a new shell: no TF log settings, no venv on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFP_BCNN_VERBOSE", "VIRTUAL_ENV")}
    bin_dir = str(VENV / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != bin_dir)
    return env


def test_readme_has_the_blocks():
    kinds = [k for k, _ in BLOCKS]
    assert kinds.count("python") >= 1 and kinds.count("bash") >= 2
    assert "make demo" in BLOCKS[0][1] and "make test" in BLOCKS[0][1]
    assert any(ACTIVATE in code for _, code in BLOCKS)
    assert "DESIGN.md" not in (ROOT / "README.md").read_text()  # not in the repository


@pytest.mark.parametrize("index", [i for i, (k, _) in enumerate(BLOCKS) if k == "python"])
def test_python_block(index, tmp_path):
    code = BLOCKS[index][1]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert not LOG_LINE.search(out.stderr + out.stdout), out.stderr[-4000:]


@pytest.mark.parametrize("index", [i for i, (k, _) in enumerate(BLOCKS) if k == "bash"])
def test_bash_block(index, tmp_path):
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README's blocks run in the virtual environment of `make`")
    lines = [line for line in BLOCKS[index][1].splitlines()
             if line.split("#")[0].strip()]
    for line in (x for x in lines if x.startswith("make ")):
        target = line.split()[1]
        out = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    script = [x for x in lines if not x.startswith("make ")]
    if not script:
        return
    if not any(x.startswith(ACTIVATE) for x in script):
        script.insert(0, ACTIVATE)  # the README: "in the activated environment"
    # What `source .venv/bin/activate` does for a venv made in place by `make`; the
    # environment running this suite may be a copy whose activate script names the
    # folder it was copied from, so the line is replaced by its effect.
    assert (VENV / "bin" / "activate").is_file()
    activate = f'export VIRTUAL_ENV="{VENV}"; export PATH="{VENV}/bin:$PATH"'
    script = [activate if x.startswith(ACTIVATE) else x for x in script]
    (tmp_path / ".venv").symlink_to(VENV, target_is_directory=True)
    out = subprocess.run(["bash", "-e", "-c", "\n".join(script)], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    assert not LOG_LINE.search(out.stderr + out.stdout), out.stderr[-4000:]
