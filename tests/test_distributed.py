"""Data-parallel fits under torchrun (two ranks, gloo on the CPU) against one process, the resume
of a killed multi-rank run, and the device option on the CPU.

The fits are those of tests/distributed_fit.py: Adam (batches of 10, 10 and 1 tasks: the last
leaves rank 0 an empty shard), then L-BFGS, then Gauss-Newton, all in float64.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import distributed_fit
import pytest
import torch
from safetensors.torch import load_file

import metasolve as ms
from metasolve.artifact import read_tensors
from metasolve.training.distributed import DataParallel, init_process_group, launched

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="this torch has no torch.distributed with the gloo backend")


def torchrun(out: Path, *args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node=RANKS tests/distributed_fit.py OUT ARGS``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={ranks}", str(HERE / "distributed_fit.py"), str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def alone():
    """The fits in this process, on its own."""
    return distributed_fit.fit(None, distributed=False)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """The same fits on two ranks; the folder their files went to."""
    out = tmp_path_factory.mktemp("two-ranks")
    done = torchrun(out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _weights(out: Path, stage: str, rank: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / f"{stage}-rank{rank}.safetensors"))


@pytest.mark.parametrize("stage", distributed_fit.STAGES)
def test_two_ranks_train_the_weights_one_process_trains(stage, alone, two_ranks):
    expected = alone["weights"][stage]
    start = distributed_fit.solver().model.state_dict()
    first, second = _weights(two_ranks, stage, 0), _weights(two_ranks, stage, 1)
    assert first.keys() == expected.keys()
    moved = max(float((expected[k] - start[k]).abs().max()) for k in expected)
    assert moved > 1e-2  # the stage trained: equal weights are not equal starting points
    for name in expected:
        assert expected[name].dtype == torch.float64
        assert torch.allclose(first[name], expected[name], rtol=0.0, atol=1e-10), name
        assert torch.equal(first[name], second[name]), name  # every rank holds the same model


def test_two_ranks_see_the_global_losses(alone, two_ranks):
    expected = alone["histories"]
    found = json.loads((two_ranks / "histories.json").read_text())
    adam, their = found["adam"], expected["adam"]
    assert adam["best_epoch"] == their["best_epoch"] and adam["lr"] == their["lr"]
    for key in ("train_loss", "validation_loss"):
        assert adam[key] == pytest.approx(their[key], rel=1e-10, abs=0.0)
    assert found["lbfgs"]["kept"] == expected["lbfgs"]["kept"]
    assert found["lbfgs"]["validation_after"] == pytest.approx(
        expected["lbfgs"]["validation_after"], rel=1e-10)
    gauss_newton, their = found["gauss-newton"], expected["gauss-newton"]
    assert gauss_newton["best_iteration"] == their["best_iteration"]
    assert gauss_newton["damping"] == their["damping"]  # the same steps were accepted
    assert gauss_newton["validation_loss"] == pytest.approx(their["validation_loss"],
                                                            rel=1e-10, abs=0.0)


def test_a_killed_two_rank_run_resumes_where_an_uninterrupted_one_ends(two_ranks, tmp_path):
    killed = torchrun(tmp_path, "--stages", "adam", "--stop-after", "2")
    assert killed.returncode != 0  # rank 0 was killed after the checkpoint of epoch 2
    assert "SIGKILL" in killed.stderr or "Signal 9" in killed.stderr, killed.stderr[-3000:]
    _, document = read_tensors(tmp_path / "adam.checkpoint.safetensors")
    assert document["done"] == 2 and not (tmp_path / "adam-rank0.safetensors").exists()
    resumed = torchrun(tmp_path, "--stages", "adam")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, document = read_tensors(tmp_path / "adam.checkpoint.safetensors")
    assert document["done"] == 4
    uninterrupted = _weights(two_ranks, "adam", 0)
    for rank in (0, 1):
        weights = _weights(tmp_path, "adam", rank)
        for name in uninterrupted:
            assert torch.equal(weights[name], uninterrupted[name]), (rank, name)


# -- without torchrun ----------------------------------------------------------------------------

def test_outside_torchrun_a_fit_trains_alone_and_asking_for_ranks_says_how(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not launched()
    alone = DataParallel()
    assert (alone.rank, alone.world, alone.distributed) == (0, 1, False)
    assert alone.bounds(7) == (0, 7)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node"):
        init_process_group()
    with pytest.raises(RuntimeError, match="WORLD_SIZE"):
        ms.Trainer(distributed_fit.solver(), ms.FixedIterationLoss(2), distributed=True)


def test_shards_cover_a_batch_once_however_it_splits():
    for world in (1, 2, 3):
        for count in (0, 1, 2, 7, 10):
            shards = []
            for rank in range(world):
                part = DataParallel(distributed=False)
                part.rank, part.world = rank, world
                shards.append(part.bounds(count))
            assert shards[0][0] == 0 and shards[-1][1] == count
            assert all(a[1] == b[0] for a, b in zip(shards, shards[1:], strict=False))
            assert max(hi - lo for lo, hi in shards) - min(hi - lo for lo, hi in shards) <= 1
