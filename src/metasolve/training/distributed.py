"""Where a fit runs: its device and, under ``torchrun``, its ranks (data-parallel training).

Data parallelism. ``torchrun --nproc-per-node=R script.py`` starts ``R`` copies of a script with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their
environment. A fit (:class:`~metasolve.training.Trainer`, its L-BFGS and Gauss-Newton
refinements) started in such a process joins the process group those variables describe (gloo
on the CPU, nccl on CUDA; :func:`init_process_group`) and trains data-parallel:

* every rank holds the same training set and draws the same batches (the same seeded
  generator); each computes the loss on its shard of every batch, a contiguous slice, weighted
  by ``shard size / batch size``, so the shards' parts sum to the batch's mean loss however the
  batch splits (a shard may be empty);
* the gradients are summed over the ranks (one all-reduce per dtype), so every rank takes the
  optimizer step a single process takes on the whole batch, up to the order of the sums. The
  trained weights equal a single-process fit's to rounding (``tests/test_distributed.py``
  checks 1e-10 in float64). This is what ``DistributedDataParallel`` does; it is done by hand
  here because a solve calls the meta-solver and the method's own weights many times, not
  through one ``forward``;
* the loss values (training, validation) are the global ones (summed over the ranks), so every
  rank selects the same best epoch and takes the same decisions (a skipped step, a learning
  rate cut, an accepted Levenberg-Marquardt step);
* rank 0 reads the checkpoint and sends it to the others, so all resume from one file (which
  only rank 0 needs to see), and rank 0 alone writes it, the others waiting at a barrier until
  it is written. A killed multi-rank run resumes from it when relaunched with the same command.

A process that was not started by ``torchrun`` (no ``WORLD_SIZE`` in its environment) trains as
one process, exactly as before; ``distributed=False`` asks for that under ``torchrun`` too.

The device. A fit runs on the device it is given (``Trainer(device=...)``), else on the device of
the current run (:func:`fit_device`, which ``metasolve reproduce --device`` sets), else where the
solver's weights lie. Under ``torchrun``, ``"cuda"`` means each rank's own GPU,
``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist

from ..validation import check_device

__all__ = ["DataParallel", "current_fit_device", "destroy_process_group", "fit_device",
           "init_process_group", "is_main_process", "launched", "rank", "rank_device",
           "world_size"]

#: The environment variables ``torchrun`` sets for every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: How long a collective waits for the other ranks before it fails (a rank that died without
#: ``torchrun`` noticing, say): long enough for a slow epoch on one rank.
TIMEOUT = datetime.timedelta(minutes=30)


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its variables are all set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def rank() -> int:
    """This process's rank in the process group (0 outside one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks in the process group (1 outside one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes what a run writes once (rank 0, or a process on its own):
    checkpoints, saved solvers, records."""
    return rank() == 0


def rank_device(device) -> torch.device:
    """``device`` as this rank uses it: ``"cuda"`` without an index is the rank's own GPU,
    ``cuda:LOCAL_RANK``, under ``torchrun``; anything else as it is (checked)."""
    device = check_device("device", device)
    if device.type == "cuda" and device.index is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = check_device("device", f"cuda:{local}")
    return device


def init_process_group(device=None) -> bool:
    """Join the process group ``torchrun`` describes, if this process is not in one yet: the
    nccl backend for a CUDA ``device`` (each rank on ``cuda:LOCAL_RANK``), gloo otherwise.
    Returns whether this call created the group (then :func:`destroy_process_group` ends it).

    Raises a ``RuntimeError`` saying how to launch when the process was not started by
    ``torchrun`` (nor joined a group some other way).
    """
    if not dist.is_available():
        raise RuntimeError("this torch was built without torch.distributed; data-parallel "
                           "training needs it")
    if dist.is_initialized():
        return False
    if not launched():
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        raise RuntimeError(f"a distributed fit needs the process group torchrun sets up, but "
                           f"{', '.join(missing)} are not set; launch with `torchrun "
                           "--nproc-per-node=N ...` (or `python -m torch.distributed.run`)")
    cuda = device is not None and check_device("device", device).type == "cuda"
    if cuda:
        torch.cuda.set_device(rank_device(device))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return True


def destroy_process_group(wait: bool = True) -> None:
    """Leave the process group (a no-op outside one); with ``wait``, once every rank has come to
    leave it: a rank that tore its gloo connections down while another still used them was seen
    to abort ("terminate called without an active exception"). A rank leaving on an error passes
    ``wait=False``: the others may never come, and torchrun ends them when this one fails."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


_fit_device: list[torch.device] = []


@contextlib.contextmanager
def fit_device(device):
    """Within the ``with`` body, fits given no device of their own run on ``device``
    (``None``: no change). ``metasolve reproduce --device`` runs each cell inside one, so the
    experiments' trainings use it while their evaluations stay where they were."""
    if device is None:
        yield
        return
    _fit_device.append(check_device("device", device))
    try:
        yield
    finally:
        _fit_device.pop()


def current_fit_device() -> torch.device | None:
    """The device :func:`fit_device` set for the current fits, if any."""
    return _fit_device[-1] if _fit_device else None


class DataParallel:
    """The ranks one fit trains on, and the collectives it needs; with one rank (a process on
    its own) every operation is the identity, so a single-process fit runs exactly as before.

    Args:
        distributed: ``None`` joins the ``torchrun`` group when the process was started by
            ``torchrun`` (or is in a group already) and trains alone otherwise; ``True``
            requires a group (a ``RuntimeError`` saying how to launch otherwise); ``False``
            trains alone.
        device: the fit's device (the backend and, for CUDA, the rank's GPU).
    """

    def __init__(self, distributed: bool | None = None, device=None):
        if distributed not in (None, True, False):
            raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
        joined = dist.is_available() and (dist.is_initialized() or launched())
        self.enabled = bool(joined if distributed is None else distributed)
        if self.enabled:
            init_process_group(device)
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1
        self.distributed = self.enabled and self.world > 1

    @property
    def writer(self) -> bool:
        """Whether this rank writes the fit's files (rank 0)."""
        return self.rank == 0

    def bounds(self, count: int) -> tuple[int, int]:
        """``(lo, hi)``: this rank's shard ``[lo, hi)`` of a batch of ``count`` instances (the
        ranks' shards are contiguous, in rank order, and differ in size by at most one)."""
        return count * self.rank // self.world, count * (self.rank + 1) // self.world

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over the ranks of ``value`` (a detached copy; ``value`` on one rank)."""
        total = value.detach().clone()
        if self.distributed:
            dist.all_reduce(total)
        return total

    def reduce_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Replace every parameter's gradient by its sum over the ranks. A parameter without a
        gradient on some rank (its shard was empty, or did not reach it) counts as zero there;
        one without a gradient on every rank keeps none, as in a single-process step."""
        if not self.distributed:
            return
        parameters = [p for p in parameters if p.requires_grad]
        if not parameters:
            return
        device = parameters[0].device
        present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float64,
                               device=device)
        dist.all_reduce(present)
        groups: dict[tuple, list[torch.Tensor]] = {}
        for p, anywhere in zip(parameters, present.tolist(), strict=True):
            if anywhere:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
            else:
                p.grad = None
        for group in groups.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            start = 0
            for p in group:
                size = p.grad.numel()
                p.grad.copy_(flat[start:start + size].view_as(p.grad))
                start += size

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's weights and buffers (the fit starts from one model)."""
        if not self.distributed:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                if tensor.dtype == torch.bool:  # not every backend sends booleans
                    data = tensor.to(torch.uint8)
                    dist.broadcast(data, src=0)
                    tensor.copy_(data.bool())
                else:
                    dist.broadcast(tensor, src=0)

    def broadcast_object(self, value):
        """Rank 0's ``value`` on every rank (any picklable object; sent within the job)."""
        if not self.distributed:
            return value
        box = [value if self.writer else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.distributed:
            dist.barrier()
