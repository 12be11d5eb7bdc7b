"""`metasolve reproduce` resumes: a killed run, rerun, writes the records of an uninterrupted run;
asking for fewer epochs or iterations than a finished run holds is refused with a message, for
both optimizers (Adam: robertson-newton-sor, Gauss-Newton: poisson-jacobi)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from metasolve.artifact import ArtifactError
from metasolve.cli import app
from metasolve.parallel import JobError
from metasolve.runner import reproduce
from metasolve.training.fit import CheckpointedFit

runner = CliRunner()


class _Killed(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def _untimed(records: list[dict]) -> list[dict]:
    """The records without what a clock measured (the only thing allowed to differ)."""
    out = []
    for r in records:
        if "seconds" in r["metric"] or "wall_time" in r["metric"]:
            continue
        out.append({k: v for k, v in r.items() if "seconds" not in k})
    return out


@pytest.mark.parametrize("name", ["poisson-jacobi", "robertson-newton-sor"])
def test_a_killed_run_resumes_to_the_records_of_an_uninterrupted_one(name, tmp_path,
                                                                    monkeypatch):
    whole = reproduce(name, scale="smoke", out_dir=tmp_path / "whole", progress=False)

    save = CheckpointedFit.save_checkpoint
    saves = []

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        saves.append(self.checkpoint)
        if len(saves) == 3:  # mid-way: the first row has finished, a later one has begun
            raise _Killed

    monkeypatch.setattr(CheckpointedFit, "save_checkpoint", save_then_die)
    with pytest.raises(JobError) as killed:
        reproduce(name, scale="smoke", out_dir=tmp_path / "killed", progress=False)
    assert isinstance(killed.value.error, _Killed)
    monkeypatch.setattr(CheckpointedFit, "save_checkpoint", save)
    resumed = reproduce(name, scale="smoke", out_dir=tmp_path / "killed", progress=False)
    assert len(set(saves)) >= 2  # the kill came after one checkpoint file had moved on
    assert _untimed(resumed["records"]) == _untimed(whole["records"])


@pytest.mark.parametrize("name, unit", [("poisson-jacobi", "Gauss-Newton iterations"),
                                        ("robertson-newton-sor", "trained epochs")])
def test_fewer_epochs_than_a_finished_run_holds_are_refused(name, unit, tmp_path):
    out = tmp_path / "out"
    reproduce(name, scale="smoke", out_dir=out, progress=False)
    # The failing cell is named, with the checkpoint's own error as the cause.
    with pytest.raises(JobError, match=f"holds 2 {unit}, more than the 1 asked for") as info:
        reproduce(name, scale="smoke", out_dir=out, progress=False, epochs=1)
    assert isinstance(info.value.error, ArtifactError) and "cell" in str(info.value)
    # The command says the same in one line, names the way out and exits non-zero.
    result = runner.invoke(app, ["reproduce", name, "--smoke", "--epochs", "1", "--out",
                                 str(out), "--workers", "1", "--no-progress"])
    assert result.exit_code == 1
    assert "more than the 1 asked for" in result.output and "--restart" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_chain_stage_refuses_a_checkpoint_from_an_older_warm_start(tmp_path):
    """Gauss-Newton with continuation trains each L~_eps row from the previous row's weights:
    after the first row is extended, the second row's checkpoint started from weights that no
    longer exist, and resuming it would not give the uninterrupted run's model."""
    out = tmp_path / "out"
    reproduce("poisson-jacobi", scale="smoke", out_dir=out, progress=False, epochs=1)
    with pytest.raises(JobError, match="started from other weights") as info:
        reproduce("poisson-jacobi", scale="smoke", out_dir=out, progress=False)
    assert isinstance(info.value.error, ArtifactError)
