"""Resumable fits (Adam and Gauss-Newton): exact resumes, refused checkpoints, atomic saves."""

from __future__ import annotations

import multiprocessing

import torch

from metasolve.artifact import read_tensors, write_tensors


def _save_repeatedly(path, barrier, worker, times):
    """Child process: save ``path`` ``times`` times (an exception makes the exit code 1)."""
    barrier.wait()
    for i in range(times):
        write_tensors(path, {"x": torch.full((64,), float(worker))},
                      {"kind": "checkpoint", "worker": worker, "save": i})


def test_two_processes_saving_the_same_checkpoint_never_collide(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_save_repeatedly, args=(path, barrier, w, 200))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0, 0]
    tensors, document = read_tensors(path)  # whole, and one of the two last saves
    assert document["save"] == 199
    assert torch.equal(tensors["x"], torch.full((64,), float(document["worker"])))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
