"""`reproduce` and `results` fail early and in one line: output paths are checked before any
work, a failing cell stops the run at once, bad record files are named, and a run folder is
locked against a second run on it."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time

import pytest
from typer.testing import CliRunner

import metasolve.experiments.poisson_jacobi as poisson_jacobi
from metasolve import outputs
from metasolve.cli import app
from metasolve.evaluation.records import read_records
from metasolve.outputs import LOCK_NAME, OutputBusyError, OutputPathError, RunLock
from metasolve.runner import reproduce

runner = CliRunner()
NAME = "poisson-jacobi"


def _smoke(out, *extra):
    start = time.monotonic()
    result = runner.invoke(app, ["reproduce", NAME, "--smoke", "--workers", "1", "--no-progress",
                                 "--out", str(out), *map(str, extra)])
    return result, time.monotonic() - start


def _assert_usage_error(result, seconds, *words):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("error: ")
    assert seconds < 10
    for word in words:
        assert word in result.output


def _no_training(root):
    return not [p for p in root.rglob("*.safetensors")]


@pytest.fixture
def no_cells(monkeypatch):
    """Any cell that starts fails the test: every refusal must come before the work."""
    def run_cell(job):
        raise AssertionError("a cell ran although the run should have been refused")

    monkeypatch.setattr(poisson_jacobi, "run_cell", run_cell)


def test_out_is_an_existing_file(tmp_path, no_cells):
    out = tmp_path / "out"
    out.write_text("not a folder")
    result, seconds = _smoke(out)
    _assert_usage_error(result, seconds, str(out), "not a directory")


def test_out_below_a_file_cannot_be_created(tmp_path, no_cells):
    (tmp_path / "file").write_text("")
    result, seconds = _smoke(tmp_path / "file" / "out")
    _assert_usage_error(result, seconds, "cannot be created", str(tmp_path / "file"))


def _unwritable(tmp_path):
    """A directory this process cannot write in (root ignores mode bits; /sys refuses even
    root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if sys.platform.startswith("linux") and os.path.isdir("/sys"):
        return "/sys"
    pytest.skip("no unwritable directory available to this user")


def test_out_is_not_writable(tmp_path, no_cells):
    folder = _unwritable(tmp_path)
    result, seconds = _smoke(folder)
    _assert_usage_error(result, seconds, str(folder))


def test_json_is_a_directory_fails_before_training(tmp_path):
    # No monkeypatching here: the real cells would train and checkpoint if the check came late.
    out = tmp_path / "out"
    folder = tmp_path / "records"
    folder.mkdir()
    result, seconds = _smoke(out, "--json", folder)
    _assert_usage_error(result, seconds, str(folder), "is a directory")
    assert _no_training(tmp_path)


def test_json_in_an_unwritable_folder(tmp_path, no_cells):
    target = os.path.join(_unwritable(tmp_path), "records.json")
    result, seconds = _smoke(tmp_path / "out", "--json", target)
    _assert_usage_error(result, seconds, target)
    assert _no_training(tmp_path)


def test_plot_path_is_a_directory(tmp_path, no_cells):
    out = tmp_path / "out"
    (out / NAME / "smoke" / f"{NAME}.png").mkdir(parents=True)
    result, seconds = _smoke(out)
    _assert_usage_error(result, seconds, f"{NAME}.png", "is a directory")


def test_the_api_raises_output_path_errors(tmp_path, no_cells):
    (tmp_path / "out").write_text("")
    with pytest.raises(OutputPathError, match="not a directory") as info:
        reproduce(NAME, scale="smoke", out_dir=tmp_path / "out", progress=False)
    assert info.value.path == tmp_path / "out" and isinstance(info.value, ValueError)
    with pytest.raises(OutputPathError, match="is a directory"):
        reproduce(NAME, scale="smoke", out_dir=tmp_path / "ok", json_path=tmp_path,
                  progress=False)


def _fail_at_once(job):
    raise RuntimeError("singular\nsystem")


def test_a_failing_cell_is_reported_in_one_line_with_the_resume_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(poisson_jacobi, "run_cell", _fail_at_once)
    result, _ = _smoke(tmp_path / "out")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "cell p=0.01" in result.output and "RuntimeError: singular system" in result.output
    assert "resumes" in result.output


# --- metasolve results -------------------------------------------------------------------------

def _results(path):
    result = runner.invoke(app, ["results", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert str(path) in result.output
    return result.output


GOOD = {"experiment": NAME, "method": "baseline", "metric": "mean_iterations", "value": 30.0,
        "paper": 30.15}


@pytest.mark.parametrize("key", ["experiment", "method", "metric", "value"])
def test_results_names_a_missing_key(tmp_path, key):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != key}]))
    assert f"record 1 lacks the key(s) ['{key}']" in _results(path)


def test_results_refuses_wrong_types_invalid_json_and_unknown_experiments(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{**GOOD, "value": "30"}]))
    assert "value='30'" in _results(path)
    path.write_text('[{"experiment": ')
    assert "not valid JSON" in _results(path)
    path.write_text(json.dumps([{**GOOD, "experiment": "no-such-experiment"}]))
    assert "unknown experiment" in _results(path)
    assert "No such file" in _results(tmp_path / "missing.json")


def test_read_records_accepts_what_record_writes(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "value": None}, {**GOOD, "value": 3}]))
    assert len(read_records(path)) == 3
    path.write_text(json.dumps([{**GOOD, "value": True}]))
    with pytest.raises(ValueError, match="value=True"):
        read_records(path)


# --- the run-folder lock ------------------------------------------------------------------------

def _hold_lock(folder, ready, release):
    with RunLock(folder):
        ready.set()
        release.wait(60)


needs_flock = pytest.mark.skipif(outputs.fcntl is None, reason="no fcntl: runs are not locked")


@needs_flock
def test_a_second_run_on_a_locked_folder_is_refused_until_the_first_ends(tmp_path):
    out = tmp_path / "out"
    folder = out / NAME / "smoke"
    folder.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(folder, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(OutputBusyError) as info:
            reproduce(NAME, scale="smoke", out_dir=out, progress=False)
        assert info.value.pid == holder.pid
        result, seconds = _smoke(out)
        _assert_usage_error(result, seconds, str(folder), f"process {holder.pid}")
        assert _no_training(tmp_path)
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0
    # The holder has ended, and with it the lock: the run goes ahead (and records no stale PID).
    result, _ = _smoke(out)
    assert result.exit_code == 0, result.output
    assert (folder / LOCK_NAME).read_text() == ""


@needs_flock
def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(OutputBusyError):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.join(60)
    with RunLock(tmp_path):  # the kernel dropped the killed holder's lock
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("args, words", [
    (["no-such-experiment", "--smoke"], ["unknown experiment", "poisson-jacobi"]),
    ([NAME, "--scale", "huge"], ["'huge'", "quick"]),
    ([NAME, "--smoke", "--quick"], ["choose one"]),
])
def test_bad_arguments_are_one_line_usage_errors(tmp_path, no_cells, args, words):
    start = time.monotonic()
    result = runner.invoke(app, ["reproduce", *args, "--out", str(tmp_path), "--no-progress"])
    _assert_usage_error(result, time.monotonic() - start, *words)
    assert not list(tmp_path.iterdir())  # refused before the output folder was made
