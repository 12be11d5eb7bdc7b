"""What every resumable fit of a meta-solver shares: its history, the identity a checkpoint must
agree on, the checkpoint itself (safetensors + JSON, written atomically) and the resume.

A fit is a loop of ``count`` steps (Adam epochs, Gauss-Newton iterations) that checkpoints after
every step. Resuming with the same settings continues at the next step and ends exactly where
an uninterrupted fit ends, provided the subclass saves every piece of state its loop reads. The
count asked for may differ from the checkpoint's: a checkpoint holding fewer steps is continued,
one holding exactly as many finishes at once with its stored best weights, and one holding more
is refused (its weights are not those of the shorter fit asked for).

A checkpoint also records a digest of the weights its fit started from. A fit that is one stage
of a longer run (a warm start from an earlier stage, such as the previous row of a continuation
chain) sets ``same_start``: it then refuses a checkpoint whose fit started from other weights,
since that earlier stage has changed and resuming would not end where an uninterrupted run ends.
A first stage leaves it off: everything it needs is in the checkpoint, however the model it
resumes into was initialised.
"""

from __future__ import annotations

import abc
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..artifact import ArtifactError, read_tensors, tensor_digest, write_tensors
from .distributed import DataParallel


class TrainingWarning(UserWarning):
    """A fit that did not train: every step failed, or no step improved on the starting weights
    (the meta-solver is then returned as it started; the fit's history says why)."""


def untrained_reason(steps: int, failed: int, improved: bool, unit: str) -> str:
    """Why a fit of ``steps`` optimizer steps, ``failed`` of which were skipped, did not train
    (empty if it did); the caller records it in its history and warns with it."""
    if steps and failed >= steps:
        return (f"every one of the {steps} training steps failed (a non-finite loss or "
                "gradient), so the meta-solver keeps its starting weights")
    if not improved:
        return (f"no {unit} improved the validation loss on the starting weights, so the "
                "meta-solver keeps them")
    return ""


def fit_identity(solver, loss) -> dict[str, Any]:
    """What any fit of ``solver`` on ``loss`` must share with a checkpoint it resumes, besides
    its optimizer's settings: the loss, the meta-solver, the method and the training family."""
    family = solver.family
    return {"loss": loss.config(), "metasolver": solver.metasolver.config(),
            "method": {"name": solver.method.name, "config": solver.method.config()},
            "family": None if family is None else {"name": family.name,
                                                   "config": family.config()}}


def _plain(value):
    """``value`` as JSON gives it back (tuples become lists, integer keys strings)."""
    return json.loads(json.dumps(value))


class CheckpointedFit(abc.ABC):
    """Base of a fit that checkpoints after every step and resumes from its checkpoint.

    Subclasses set the class attributes and implement :meth:`identity`; their ``fit`` calls
    :meth:`resume_checkpoint` before the loop and :meth:`save_checkpoint` after every step.

    Attributes:
        checkpoint_kind: the ``kind`` tag of the checkpoint document.
        checkpoint_label: how messages name such a checkpoint.
        history_type: the dataclass of the fit's history (saved whole in every checkpoint).
        count_unit: how messages name the steps (``"trained epochs"``).
        count_keys: ``(section, key)`` places in the identity holding a step count: they may
            differ between a checkpoint and the fit resuming it (see the module docstring).
        checkpoint: the checkpoint file, or ``None`` for a fit that neither saves nor resumes.
        same_start: refuse a checkpoint whose fit started from other weights (see above).
        parallel: the ranks of a data-parallel fit (:class:`.distributed.DataParallel`): rank
            0 reads the checkpoint and sends it to the others, and writes it alone, the others
            waiting until it is written.
        history: the fit's history so far.
    """

    checkpoint_kind: str = "checkpoint"
    checkpoint_label: str = "checkpoint"
    history_type: type = dict
    count_unit: str = "steps"
    count_keys: tuple[tuple[str, str], ...] = ()

    def __init__(self, checkpoint: str | Path | None = None, same_start: bool = False,
                 parallel: DataParallel | None = None):
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.same_start = bool(same_start)
        #: The ranks the fit trains on (:mod:`.distributed`); one by default.
        self.parallel = parallel or DataParallel(distributed=False)
        self.history = self.history_type()
        self._start: str | None = None  # digest of the weights the fit started from

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this fit (JSON-serialisable)."""

    def _comparable(self, identity: dict) -> dict:
        identity = _plain(identity)
        for section, key in self.count_keys:
            if isinstance(identity.get(section), dict):
                identity[section].pop(key, None)
        return identity

    def save_checkpoint(self, done: int, tensors: dict[str, torch.Tensor],
                        state: dict[str, Any]) -> None:
        """Write the checkpoint after ``done`` steps: ``tensors`` and ``state`` (JSON) are the
        subclass's loop state, saved with the identity and the history."""
        document = {"kind": self.checkpoint_kind, "identity": self.identity(), "done": done,
                    "start": self._start, "history": asdict(self.history), "state": state}
        if self.parallel.writer and self.checkpoint is not None:
            write_tensors(self.checkpoint, tensors, _plain(document))
        self.parallel.barrier()

    def _read_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """``(tensors, document)`` of the checkpoint file, or ``None`` if there is none; in a
        data-parallel fit, rank 0's file, sent to every rank (an unreadable file fails on all
        of them with rank 0's error)."""
        found, error = None, None
        if self.parallel.writer and self.checkpoint is not None and self.checkpoint.exists():
            try:
                found = read_tensors(self.checkpoint)
            except ArtifactError as exc:
                if not self.parallel.distributed:
                    raise
                error = str(exc)
        if self.parallel.distributed:
            found, error = self.parallel.broadcast_object((found, error))
            if error is not None:
                raise ArtifactError(error)
        return found

    def resume_checkpoint(self, asked: int, start: dict[str, torch.Tensor]
                          ) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        """Read the checkpoint, if there is one, for a fit asked to run ``asked`` steps from the
        weights ``start`` (the fit's weights before it loads anything).

        Returns ``None`` when there is nothing to resume, else ``(done, tensors, state)`` as
        :meth:`save_checkpoint` wrote them, with :attr:`history` restored. Raises
        :class:`ArtifactError` if the file is not this kind of checkpoint, was written with
        other settings or (with :attr:`same_start`) from other starting weights, or holds more
        than ``asked`` steps;
        nothing is changed then.
        """
        self._start = tensor_digest(start)
        found = self._read_checkpoint()
        if found is None:
            return None
        tensors, document = found
        if document.get("kind") != self.checkpoint_kind:
            raise ArtifactError(f"{self.checkpoint} is not a {self.checkpoint_label} (it holds "
                                f"a {document.get('kind')!r})")
        stored, ours = (self._comparable(document.get("identity", {})),
                        self._comparable(self.identity()))
        if stored != ours:
            differing = sorted(key for key in set(stored) | set(ours)
                               if stored.get(key) != ours.get(key))
            raise ArtifactError(f"{self.checkpoint} was written by a run with different "
                                f"settings ({', '.join(differing)}); remove it or choose "
                                "another checkpoint path")
        if self.same_start and document.get("start") != self._start:
            raise ArtifactError(f"{self.checkpoint} continues a fit that started from other "
                                "weights (an earlier stage of the run has changed since); "
                                "remove it or choose another checkpoint path")
        done = int(document["done"])
        if done > asked:
            raise ArtifactError(f"{self.checkpoint} holds {done} {self.count_unit}, more than "
                                f"the {asked} asked for; ask for at least {done} or use "
                                "another checkpoint path")
        self.history = self.history_type(**document["history"])
        return done, tensors, document["state"]
