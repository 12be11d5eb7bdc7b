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
from metasolve.evaluation.records import read_records, without_timings
from metasolve.runner import reproduce
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


def test_reproduce_distributed_writes_the_records_of_an_in_process_run(tmp_path):
    """`torchrun ... -m metasolve reproduce NAME --smoke --distributed`: rank 0 writes the run
    folder and prints the tables once; its records are those of an in-process run, timings
    aside (poisson-jacobi's smoke scale trains by Gauss-Newton, its normal equations summed
    over the ranks)."""
    name = "poisson-jacobi"
    alone = reproduce(name, scale="smoke", out_dir=tmp_path / "alone", workers=1,
                      progress=False)["records"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC),
                                                       os.environ.get("PYTHONPATH", "")]))
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(variable, None)
    out = tmp_path / "ranks"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node=2", "-m", "metasolve", "reproduce", name, "--smoke",
                           "--out", str(out), "--no-progress", "--distributed", "--format",
                           "markdown"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("records: ") == 1 and "2 ranks, trained on cpu" in done.stdout
    ranks = read_records(out / name / "smoke" / f"{name}.json")
    assert (out / name / "smoke" / "models").is_dir()
    first, second = without_timings(alone), without_timings(ranks)
    assert first and len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        assert {k: v for k, v in a.items() if k != "value"} == \
            {k: v for k, v in b.items() if k != "value"}
        assert b["value"] == pytest.approx(a["value"], rel=1e-9, abs=1e-12, nan_ok=True)


# -- the device option -----------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["tpu9", "cuda:99", "meta", "gpu"])
def test_a_malformed_or_unavailable_device_is_a_value_error_naming_it(device):
    data = distributed_fit.splits()
    learned = distributed_fit.solver()
    calls = [lambda: ms.run(ms.Jacobi(), data.test.problem, device=device),
             lambda: learned.solve(data.test, device=device),
             lambda: learned.to(device),
             lambda: ms.Trainer(learned, ms.FixedIterationLoss(2), device=device)]
    for call in calls:
        with pytest.raises(ValueError, match="device"):
            call()


def test_device_cpu_runs_the_solve_and_the_fit_it_runs_by_default():
    data = distributed_fit.splits()
    problem = data.test.problem
    plain = ms.run(ms.Jacobi(), problem, rtol=1e-8, maxiter=500)
    placed = ms.run(ms.Jacobi(), problem, rtol=1e-8, maxiter=500, device="cpu")
    assert placed.x.device.type == "cpu"
    assert torch.equal(plain.x, placed.x) and torch.equal(plain.iterations, placed.iterations)

    default, cpu = distributed_fit.solver(), distributed_fit.solver()
    distributed_fit.trainer(default).fit(data.train, data.validation)
    ms.Trainer(cpu, ms.FixedIterationLoss(2), distributed_fit.trainer(cpu).config,
               progress=False, device=torch.device("cpu")).fit(data.train, data.validation)
    for name, value in default.model.state_dict().items():
        assert torch.equal(value, cpu.model.state_dict()[name]), name
    assert cpu.device == torch.device("cpu")
    first = default.solve(data.test, rtol=1e-8, maxiter=500)
    again = cpu.to("cpu").solve(data.test, rtol=1e-8, maxiter=500, device="cpu")
    assert torch.equal(first.x, again.x) and torch.equal(first.iterations, again.iterations)
    baseline = cpu.solve_baseline(data.test, rtol=1e-8, maxiter=500, device="cpu")
    classical = ms.run(ms.Jacobi(), problem, rtol=1e-8, maxiter=500, monitor="error")
    assert torch.equal(baseline.x, classical.x)


def test_moving_tasks_moves_every_tensor_of_every_kind_of_problem():
    """``TaskBatch.to`` (and ``Problem.to``) on the meta device, which every torch has: nothing
    is left behind on the CPU, dataclass or not, nested or not; to the device the data are on
    already it returns the same object."""
    families = [ms.Poisson1DFamily(n=8), ms.RobertsonFamily(steps=5), ms.SpectrumFamily(size=16),
                ms.ChandrasekharFamily(sizes=(8,)), ms.VanDerPolFamily()]
    batches = [(family.name, family.sample(3, seed=0)) for family in families]
    operator = ms.Poisson1DFamily(n=8).sample(3, seed=0).problem
    start = torch.ones(3, 8, 2, dtype=torch.float64)
    eigen = ms.EigenProblem(operator, start, torch.full((3,), 4.0, dtype=torch.float64), 1)
    cone = ms.ConeProgram(torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
                          torch.tensor([[1.0, 2.0]], dtype=torch.float64),
                          torch.tensor([[-1.0]], dtype=torch.float64), ms.ConeSpec(nonneg=2),
                          context=torch.zeros(1, 2, dtype=torch.float64))
    dense = ms.Poisson1DFamily(n=8).sample(3, seed=0).problem.matrix.expand(3, 8, 8)
    sparse = ms.LinearSystem(ms.SparseBatch.from_dense(dense.contiguous()),
                             torch.ones(3, 8, dtype=torch.float64))
    for name, problem in (("eigen", eigen), ("cone", cone), ("sparse batch", sparse)):
        batches.append((name, ms.TaskBatch(problem, torch.zeros(problem.batch_size, 2,
                                                                dtype=torch.float64))))
    for name, tasks in batches:
        assert tasks.to("cpu") is tasks
        moved = tasks.to("meta")
        assert moved.device.type == "meta" and moved.problem.device.type == "meta", name
        assert type(moved.problem) is type(tasks.problem)
        stack = [moved.problem]
        while stack:
            problem = stack.pop()
            for key, value in vars(problem).items():
                if isinstance(value, (torch.Tensor, ms.SparseBatch)):
                    assert value.device.type == "meta", (name, key)
                elif isinstance(value, ms.Problem):
                    stack.append(value)
        assert tasks.device.type == "cpu"  # the original stays where it was


def test_the_cli_refuses_an_unavailable_device_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from metasolve.cli import app

    result = CliRunner().invoke(app, ["reproduce", "poisson-jacobi", "--smoke", "--out",
                                      str(tmp_path), "--device", "tpu9"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --device must name a torch device")
    outside = CliRunner().invoke(app, ["reproduce", "poisson-jacobi", "--smoke", "--out",
                                       str(tmp_path), "--distributed"])
    assert outside.exit_code == 2 and "torchrun --nproc-per-node=N" in outside.stderr
