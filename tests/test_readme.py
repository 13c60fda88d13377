"""Every code block of README.md runs.

Python blocks run as scripts in a fresh process; bash blocks run line by line
in a temporary folder with the installed ``tfp-bcnn`` on PATH. The two make
commands are checked with ``make -n`` (a dry run): running them here would
install a second environment and run this suite from inside itself; CI runs
``make test`` for real and ``tests/test_cli.py`` runs the demo.
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


def _env():
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""),
                TF_CPP_MIN_LOG_LEVEL="2")


def test_readme_has_the_blocks():
    kinds = [k for k, _ in BLOCKS]
    assert kinds.count("python") >= 1 and kinds.count("bash") >= 2
    assert "make demo" in BLOCKS[0][1] and "make test" in BLOCKS[0][1]


@pytest.mark.parametrize("index", [i for i, (k, _) in enumerate(BLOCKS) if k == "python"])
def test_python_block(index, tmp_path):
    code = BLOCKS[index][1]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


@pytest.mark.parametrize("index", [i for i, (k, _) in enumerate(BLOCKS) if k == "bash"])
def test_bash_block(index, tmp_path):
    for line in BLOCKS[index][1].splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("make "):
            target = line.split()[1]
            out = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True,
                                 text=True, timeout=60)
        else:
            out = subprocess.run(line, shell=True, cwd=tmp_path, env=_env(),
                                 capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
