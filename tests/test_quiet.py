"""tfp_bcnn._quiet: native stderr lines are hidden within the block, and only there."""

import os

import pytest

from tfp_bcnn import _quiet


@pytest.fixture(autouse=True)
def _seed():
    """No Keras state here (overrides conftest's seeding)."""
    yield


def test_native_writes_are_hidden_and_stderr_restored(capfd, monkeypatch):
    monkeypatch.delenv(_quiet.VERBOSE_ENV, raising=False)
    os.write(2, b"before\n")
    with _quiet.native_stderr_silenced():
        os.write(2, b"I0000 00:00:1 port.cc:153] native notice\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_restored_on_error(capfd, monkeypatch):
    monkeypatch.delenv(_quiet.VERBOSE_ENV, raising=False)
    with pytest.raises(RuntimeError), _quiet.native_stderr_silenced():
        raise RuntimeError("boom")
    os.write(2, b"still here\n")
    assert capfd.readouterr().err == "still here\n"


@pytest.mark.parametrize("value, shown", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_verbose_env_shows_everything(value, shown, capfd, monkeypatch):
    monkeypatch.setenv(_quiet.VERBOSE_ENV, value)
    assert _quiet.verbose() is shown
    with _quiet.native_stderr_silenced():
        os.write(2, b"native\n")
    assert capfd.readouterr().err == ("native\n" if shown else "")
