"""Every code block of README.md runs as written, as a new user runs it.

The blocks run in README order in the top folder of a fresh clone (a copy of
the working tree, committed), so the test also sees what they leave behind:
``git status`` must stay empty. The tools live in the virtual environment that
``make demo`` / ``make test`` create (``.venv``); the README says to activate
it. So each bash block runs as one script with the effect of ``source
.venv/bin/activate`` first, and nothing of that environment on PATH before.
Python blocks run with its interpreter, as a user pastes them into one
Python session: one process (`_PythonSession`) runs them in README order, each
in a fresh namespace, with its own stdout and stderr (file descriptors, so
TensorFlow's C++ log lines are caught too); the first block is that process's
first code, so "import tfp_bcnn first hides TensorFlow's start-up lines" is
checked as a new process sees it. One process instead of one per block saves
four TensorFlow imports (about 20 s of the test). The two make
commands are checked with ``make -n`` (a dry run): running them here would
install a second environment and run this suite from inside itself; CI runs
``make test`` for real and ``tests/test_cli.py`` runs the demo.

No block may print a TensorFlow / absl / CUDA / LiteRT log line: the package
and the command line silence them (``TFP_BCNN_VERBOSE`` unset here).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
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


def _clone(tmp_path) -> Path:
    """A fresh clone of the working tree: its tracked and unignored files, committed.

    Copied (not ``git clone``) so that uncommitted edits are tested too; the
    git-ignored ``tfp_bcnn/export`` link of a source checkout is copied as a
    link, as ``make`` leaves it.
    """
    import shutil

    clone = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source, target = ROOT / name, clone / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    link = ROOT / "tfp_bcnn" / "export"
    if link.is_symlink():
        (clone / "tfp_bcnn" / "export").symlink_to(os.readlink(link))
    git = ["git", "-c", "user.name=readme", "-c", "user.email=readme@test"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(git + args, cwd=clone, check=True, capture_output=True)
    return clone


def _bash_script(code: str) -> list[str] | None:
    """The lines a user types of a bash block, ``make`` dry-run checked; None if none."""
    lines = [line for line in code.splitlines() if line.split("#")[0].strip()]
    for line in (x for x in lines if x.startswith("make ")):
        target = line.split()[1]
        out = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, f"{line}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    script = [x for x in lines if not x.startswith("make ")]
    if not script:
        return None
    # What `source .venv/bin/activate` does for a venv made in place by `make`; the
    # environment running this suite may be a copy whose activate script names the
    # folder it was copied from, so the line is replaced by its effect (and added
    # first where missing: the README says "in the activated environment").
    assert (VENV / "bin" / "activate").is_file()
    activate = f'export VIRTUAL_ENV="{VENV}"; export PATH="{VENV}/bin:$PATH"'
    return [activate] + [x for x in script if not x.startswith(ACTIVATE)]


def _files(root: Path) -> dict[str, int]:
    """``{path: mtime_ns}`` of the files under ``root`` (``.git`` left out)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts}


#: Runs python blocks sent as JSON lines ``{"code", "out", "err"}`` on stdin, each in
#: a fresh namespace with fds 1 and 2 sent to the two files; answers ``{"ok": bool}``.
_SESSION = textwrap.dedent(
    """
    import json, os, sys, traceback
    control = os.fdopen(os.dup(1), "w")
    saved = os.dup(1), os.dup(2)
    for line in sys.stdin:
        request = json.loads(line)
        files = [os.open(request[k], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                 for k in ("out", "err")]
        for fd, target in zip(files, (1, 2)):
            os.dup2(fd, target)
        ok = True
        try:
            exec(compile(request["code"], "<README block>", "exec"), {"__name__": "__main__"})
        except BaseException:
            traceback.print_exc()
            ok = False
        sys.stdout.flush(); sys.stderr.flush()
        for fd, target in zip(saved, (1, 2)):
            os.dup2(fd, target)
        for fd in files:
            os.close(fd)
        control.write(json.dumps({"ok": ok}) + "\\n"); control.flush()
    """
)


class _PythonSession:
    """One interpreter of the virtual environment in the clone that runs the
    README's python blocks one at a time (`run`); closed by `close`."""

    def __init__(self, clone: Path, logs: Path, timeout: float):
        self.logs, self.count = logs, 0
        self.stderr = open(logs / "session.err", "w")
        self.proc = subprocess.Popen([sys.executable, "-c", _SESSION], cwd=clone, env=_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.watchdog = threading.Timer(timeout, self.proc.kill)
        self.watchdog.start()

    def run(self, code: str) -> tuple[bool, str, str]:
        """``(succeeded, stdout, stderr)`` of one block (a traceback in stderr)."""
        self.count += 1
        out, err = (self.logs / f"block{self.count}.{k}" for k in ("out", "err"))
        self.proc.stdin.write(json.dumps({"code": code, "out": str(out), "err": str(err)}) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:  # crashed or killed by the watchdog
            return False, "", f"the python session ended (exit {self.proc.wait()}):\n" + \
                (self.logs / "session.err").read_text()[-4000:]
        return json.loads(answer)["ok"], out.read_text(), err.read_text()

    def close(self):
        self.watchdog.cancel()
        self.proc.stdin.close()  # the loop ends, so does the process
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def test_readme_blocks_in_a_clone(tmp_path):
    """Every bash and python block, in README order, in the top folder of a fresh
    clone, as a new user runs them: each succeeds without a TensorFlow log line,
    none overwrites a file that an earlier block wrote, and afterwards
    ``git status --porcelain`` is empty (every output is in a git-ignored folder)."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README's blocks run in the virtual environment of `make`")
    clone = _clone(tmp_path)
    (tmp_path / "logs").mkdir()
    python = _PythonSession(clone, tmp_path / "logs", timeout=2400)
    try:
        written = _run_blocks(clone, python)
    finally:
        python.close()
    assert written, "the README's blocks wrote nothing"
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=clone, capture_output=True, text=True, check=True).stdout
    assert status == "", f"outputs outside git-ignored folders:\n{status}"


def _run_blocks(clone: Path, python: _PythonSession) -> dict[str, tuple[int, int]]:
    """Run the blocks in README order; ``{path: (block, mtime)}`` of what they wrote."""
    written: dict[str, tuple[int, int]] = {}  # path -> (block, mtime) of what blocks wrote
    before = _files(clone)
    for index, (kind, code) in enumerate(BLOCKS):
        if kind == "python":
            ok, stdout, stderr = python.run(code)
        elif kind == "bash" and (script := _bash_script(code)) is not None:
            out = subprocess.run(["bash", "-e", "-c", "\n".join(script)], cwd=clone, env=_env(),
                                 capture_output=True, text=True, timeout=1200)
            ok, stdout, stderr = out.returncode == 0, out.stdout, out.stderr
        else:
            continue
        assert ok, f"block {index}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
        assert not LOG_LINE.search(stderr + stdout), stderr[-4000:]
        after = _files(clone)
        for path, mtime in after.items():
            if path in written and written[path][1] != mtime:
                raise AssertionError(f"block {index} overwrote {path}, written by block "
                                     f"{written[path][0]}")
            if before.get(path) != mtime:
                written.setdefault(path, (index, mtime))
        before = after
    return written


def test_default_outputs_are_ignored():
    """What the examples, the main job and the commands write by default is git-ignored."""
    defaults = ["runs/20260101-000000/summary.json", "model.keras", "evaluation/m_report.json",
                "lenet5_pruned.keras"]
    for example in sorted((ROOT / "examples").glob("*.py")):
        text = example.read_text()
        defaults += [f"{folder}/{name}/x.png" for folder, name in re.findall(
            r'"--out-dir",\s*default=os\.path\.join\("(\w+)",\s*"(\w+)"\)', text)]
    assert sum("example_outputs" in d for d in defaults) >= 6, defaults
    out = subprocess.run(["git", "check-ignore", "--no-index", "-v", *defaults], cwd=ROOT,
                         capture_output=True, text=True)
    ignored = {line.split("\t")[-1] for line in out.stdout.splitlines()}
    assert ignored == set(defaults), set(defaults) - ignored
