"""Gradient-based meta-solving (GBMS paper, Algorithm 1) with the training protocol of its
Appendix C.1: Adam, learning rate cut by a factor when the validation loss stalls, and the model
with the best validation loss kept. Appendix C.3 instead cuts the rate at fixed epochs
(``TrainingConfig.milestones``).

Every epoch ends with a checkpoint (safetensors + JSON, written atomically; see
:mod:`metasolve.training.fit`). A run that is killed resumes from it: ``fit()`` on a trainer with
the same settings and checkpoint path continues at the next epoch with the same model, optimizer,
scheduler and random stream, so a resumed run ends where an uninterrupted one would. A trainer
asking for more epochs than a finished checkpoint holds extends that run; one asking for fewer is
refused.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..learned.metasolver import MetaSolver
from ..learned.solver import LearnedSolver
from ..tasks.base import TaskBatch
from ..validation import check_count, check_device, check_positive
from .distributed import DataParallel, current_fit_device, rank_device
from .fit import CheckpointedFit, TrainingWarning, fit_identity, untrained_reason
from .gauss_newton import GaussNewtonConfig, GaussNewtonHistory, GaussNewtonRefiner
from .losses import Loss
from .progress import progress_bar


@dataclass
class TrainingConfig:
    """Hyper-parameters; the defaults are those of the GBMS paper's Appendix C.1, except Adam's
    ``betas``: PyTorch's ``(0.9, 0.999)``, what a user of Adam expects (Appendix C.1's
    ``(0.999, 0.999)`` is set by the experiments that follow it).

    The learning rate is multiplied by ``plateau_factor`` after ``plateau_patience`` epochs
    without a better validation loss, or, if ``milestones`` is given, at each of those epochs
    (Appendix C.3: ``(100, 150)``) and never otherwise.

    ``grad_clip``, if set, rescales each step's gradient to at most that Euclidean norm: one large
    step can push a relaxation factor into the region where iterations diverge, where the
    iteration-count loss is flat (a diverged instance is charged the cap) and gives no way back.
    """

    epochs: int = 2500
    batch_size: int = 256
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    plateau_patience: int = 100
    plateau_factor: float = 0.2
    seed: int = 0
    grad_clip: float | None = None
    milestones: tuple[int, ...] = ()

    def __post_init__(self):
        check_count("epochs", self.epochs, minimum=1)
        check_count("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_count("plateau_patience", self.plateau_patience)
        check_positive("plateau_factor", self.plateau_factor)
        check_positive("adam_eps", self.adam_eps)
        check_count("seed", self.seed)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        if not isinstance(self.milestones, (tuple, list)):
            raise TypeError(f"milestones must be a tuple of epochs, got "
                            f"{type(self.milestones).__name__}")
        self.milestones = tuple(check_count("milestones", m, minimum=1)
                                for m in self.milestones)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones must be increasing epochs, got {self.milestones}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")


@dataclass
class TrainingHistory:
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_validation_loss: float = float("inf")
    skipped_steps: int = 0
    #: Wall-clock seconds of the epochs, summed over the runs of a resumed fit.
    seconds: float = 0.0
    #: Why the fit did not train, if it did not (:class:`~metasolve.training.TrainingWarning`).
    untrained: str = ""


def _check_splits(train, validation) -> None:
    for name, tasks in (("train", train), ("validation", validation)):
        if not isinstance(tasks, TaskBatch):
            raise TypeError(f"{name} must be a TaskBatch, got {type(tasks).__name__}")


class Trainer(CheckpointedFit):
    """Train ``solver.metasolver`` on ``train`` tasks, select on ``validation`` tasks.

    Args:
        solver: the :class:`LearnedSolver` whose meta-solver is trained in place.
        loss: how the solver is run and scored while training.
        config: :class:`TrainingConfig`.
        checkpoint: file to checkpoint to after every epoch and resume from; ``None`` disables.
            It must agree with this trainer on everything in :meth:`identity` but ``epochs``.
        progress: show a progress bar.
        on_epoch: optional ``on_epoch(epoch, history)`` called after every epoch (logging).
        same_start: this fit continues an earlier stage (a warm start): refuse a checkpoint
            whose fit started from other weights (:mod:`metasolve.training.fit`). Applies to
            :meth:`refine_gauss_newton` too.
        device: where the fits run (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            :class:`torch.device`): the solver's weights and the tasks are moved there for
            each fit, and the weights go back to the device they were on when it ends (move the
            solver for good with :meth:`LearnedSolver.to`). ``None`` (default): the device of
            the current run (``metasolve reproduce --device``), else where the weights lie.
            Under ``torchrun``, ``"cuda"`` is each rank's own GPU. A malformed or unavailable
            device is a ``ValueError`` naming ``device``.
        distributed: train data-parallel over the ranks ``torchrun`` started
            (:mod:`metasolve.training.distributed`): ``None`` (default) does when the process
            was started by ``torchrun``, ``True`` requires it, ``False`` trains alone. Every
            rank must build the same trainer on the same tasks; rank 0 reads and writes the
            checkpoint. Applies to :meth:`refine_lbfgs` and :meth:`refine_gauss_newton` too.
    """

    checkpoint_kind = "checkpoint"
    checkpoint_label = "training checkpoint"
    history_type = TrainingHistory
    count_unit = "trained epochs"
    count_keys = (("config", "epochs"),)

    def __init__(self, solver: LearnedSolver, loss: Loss, config: TrainingConfig | None = None,
                 checkpoint: str | Path | None = None, progress: bool = True,
                 on_epoch=None, same_start: bool = False, device=None,
                 distributed: bool | None = None):
        if not isinstance(solver, LearnedSolver):
            raise TypeError(f"solver must be a LearnedSolver, got {type(solver).__name__}")
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be a metasolve Loss, got {type(loss).__name__}")
        if loss.needs_baseline and \
                type(solver.metasolver).baseline_params is MetaSolver.baseline_params:
            raise TypeError(f"loss {loss.kind!r} compares with a classical baseline, which a "
                            f"{type(solver.metasolver).__name__} does not define")
        if loss.needs_baseline and solver.method_is_trainable:
            raise ValueError(f"loss {loss.kind!r} compares with the classical method, but method "
                             f"{solver.method.name} has trainable weights: the baseline would "
                             f"move")
        device = current_fit_device() if device is None else check_device("device", device)
        parallel = DataParallel(distributed, device)
        super().__init__(checkpoint, same_start, parallel)
        self.solver = solver
        self.loss = loss
        self.config = config or TrainingConfig()
        self.progress = progress and parallel.writer  # one bar for a data-parallel fit
        self.on_epoch = on_epoch
        #: Where the fits run; ``None``: where the solver's weights lie.
        self.device = None if device is None else rank_device(device)

    @contextlib.contextmanager
    def _placed(self, *splits: TaskBatch):
        """The solver's weights on :attr:`device` for the ``with`` body (back where they were
        after it) and every rank on rank 0's weights; yields ``splits`` moved there."""
        model = self.solver.model
        home = self.solver.device
        device = self.device or home
        self.parallel.broadcast_module(model)
        if device == home:
            yield tuple(split.to(device) for split in splits)
            return
        model.to(device)
        try:
            yield tuple(split.to(device) for split in splits)
        finally:
            model.to(home)

    def _loss(self, tasks: TaskBatch, idx: torch.Tensor | None = None):
        """``(local, value)`` for the mean loss over ``tasks`` (or ``tasks.index(idx)``):
        ``value`` is that mean, the same on every rank; ``local`` (differentiable, ``None``
        for an empty shard) is this rank's part of it, its shard's mean loss weighted by the
        shard's share of the batch, so the ranks' gradients sum to the batch's
        (:mod:`.distributed`). On one rank both are :meth:`batch_loss` itself."""
        parallel = self.parallel
        if not parallel.distributed:
            value = self.batch_loss(tasks if idx is None else tasks.index(idx))
            return value, value
        count = len(tasks) if idx is None else len(idx)
        lo, hi = parallel.bounds(count)
        local = None
        if hi > lo:
            mine = torch.arange(lo, hi) if idx is None else idx[lo:hi]
            local = self.batch_loss(tasks.index(mine))
            if hi - lo < count:
                local = local * ((hi - lo) / count)
            part = local.detach()
        else:
            part = torch.zeros((), dtype=torch.float64, device=tasks.features.device)
        return local, parallel.sum(part.to(torch.float64))

    def identity(self) -> dict:
        """What a checkpoint must agree on to be resumed by this trainer: the training config
        (``epochs`` aside), the loss, the meta-solver, the method and the training family."""
        cfg = asdict(self.config)
        cfg["betas"] = list(cfg["betas"])
        # Unset options are left out, so the training record stored in a saved solver
        # (``settings["training"]``) reads as it did before they existed.
        if cfg["grad_clip"] is None:
            del cfg["grad_clip"]
        cfg["milestones"] = list(cfg["milestones"])
        if not cfg["milestones"]:
            del cfg["milestones"]
        return {"config": cfg, **fit_identity(self.solver, self.loss)}

    def batch_loss(self, tasks: TaskBatch) -> torch.Tensor:
        """Mean loss of the solver on ``tasks`` (differentiable if autograd is on)."""
        options = self.loss.run_options()
        solution = self.solver.solve(tasks, safeguard=False, **options)
        if self.loss.needs_baseline:
            return self.loss(solution, self.solver.solve_baseline(tasks, **options)).mean()
        return self.loss(solution).mean()

    def fit(self, train: TaskBatch, validation: TaskBatch) -> TrainingHistory:
        """Run (or resume) training; leaves the best-validation weights in ``solver.model``."""
        _check_splits(train, validation)
        with self._placed(train, validation) as (placed_train, placed_validation):
            history = self._fit(placed_train, placed_validation)
        self._finish(train, validation)
        return history

    def _fit(self, train: TaskBatch, validation: TaskBatch) -> TrainingHistory:
        cfg = self.config
        model = self.solver.model
        generator = torch.Generator().manual_seed(cfg.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas,
                                     eps=cfg.adam_eps)
        if cfg.milestones:
            scheduler = torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=list(cfg.milestones), gamma=cfg.plateau_factor)
        else:
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.plateau_factor,
                patience=cfg.plateau_patience, threshold=0.0)
        best_state = copy.deepcopy(model.state_dict())
        start_epoch = 0
        self.history = TrainingHistory()
        resumed = self.resume_checkpoint(cfg.epochs, model.state_dict())
        if resumed is not None:
            start_epoch, tensors, state = resumed
            best_state = self._restore(tensors, state, optimizer, scheduler, generator)

        if start_epoch == 0:
            # The starting point competes too: if no epoch beats it on validation, training
            # leaves the model as it found it (best_epoch -1), never worse than where it began.
            model.eval()
            with torch.no_grad():
                start_value = float(self._loss(validation)[1])
            if math.isfinite(start_value):
                self.history.best_validation_loss = start_value
        n = len(train)
        started, seconds_before = time.perf_counter(), self.history.seconds
        with progress_bar(self.progress, total=cfg.epochs, completed=start_epoch,
                          description=f"training {self.loss.label}") as bar:
            for epoch in range(start_epoch, cfg.epochs):
                model.train()
                total, count = 0.0, 0
                for idx in torch.randperm(n, generator=generator).split(cfg.batch_size):
                    local, value = self._loss(train, idx)
                    if not torch.isfinite(value):
                        self.history.skipped_steps += 1
                        continue
                    if local is not None and not local.requires_grad:
                        raise ValueError(f"loss {self.loss.label} does not depend on the "
                                         "trained weights (is autograd off, or does the loss "
                                         "read nothing the meta-solver predicts?)")
                    optimizer.zero_grad()
                    if local is not None:
                        local.backward()
                    self.parallel.reduce_gradients(model.parameters())
                    # A NaN or Inf gradient (e.g. from an instance that overflowed before it
                    # was frozen) would poison Adam's moments for good: skip the step.
                    if not all(torch.isfinite(p.grad).all() for p in model.parameters()
                               if p.grad is not None):
                        self.history.skipped_steps += 1
                        continue
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    optimizer.step()
                    total += float(value.detach()) * len(idx)
                    count += len(idx)
                model.eval()
                with torch.no_grad():
                    val = float(self._loss(validation)[1])
                if cfg.milestones:
                    scheduler.step()
                else:
                    scheduler.step(val)
                h = self.history
                h.epoch.append(epoch)
                h.train_loss.append(total / max(count, 1))
                h.validation_loss.append(val)
                h.lr.append(optimizer.param_groups[0]["lr"])
                if val < h.best_validation_loss:
                    h.best_validation_loss, h.best_epoch = val, epoch
                    best_state = copy.deepcopy(model.state_dict())
                h.seconds = seconds_before + time.perf_counter() - started
                if self.checkpoint is not None or self.parallel.distributed:
                    self._save(epoch + 1, optimizer, scheduler, generator, best_state)
                if self.on_epoch is not None:
                    self.on_epoch(epoch, h)
                bar.advance(f"val {val:.4g} best {h.best_validation_loss:.4g} "
                            f"lr {h.lr[-1]:.1e}")
        model.load_state_dict(best_state)
        model.eval()
        h = self.history
        steps = cfg.epochs * math.ceil(n / cfg.batch_size)
        h.untrained = untrained_reason(steps, h.skipped_steps, h.best_epoch >= 0, "epoch")
        return h

    def _finish(self, train: TaskBatch, validation: TaskBatch) -> None:
        """After a fit, with the weights back on the solver's device: the safeguard's record
        of the training tasks, the warning of a fit that did not train, the settings."""
        self.solver.record_training(train)
        h = self.history
        if h.untrained:
            warnings.warn(f"training {self.loss.label}: {h.untrained}", TrainingWarning,
                          stacklevel=3)
        # The family is stored beside the settings in a saved solver; not repeated here.
        record = {k: v for k, v in self.identity().items() if k != "family"}
        self.solver.settings["training"] = {
            **record, "best_epoch": self.history.best_epoch,
            "best_validation_loss": self.history.best_validation_loss,
            "train_size": len(train), "validation_size": len(validation),
            # What `metasolve bench` divides by the time a solve saves (break-even solves).
            "train_seconds": self.history.seconds}

    def refine_lbfgs(self, train: TaskBatch, validation: TaskBatch, iterations: int = 200,
                     lr: float = 1.0) -> bool:
        """Fine-tune with full-batch L-BFGS after Adam (R2N2 paper, sec. 3.4), keeping the result
        only if it lowers the validation loss. Returns whether it was kept.

        Meant for meta-solvers with few parameters (an R2N2's weights): every L-BFGS iteration
        evaluates the loss on the whole training set, with a strong-Wolfe line search.
        """
        _check_splits(train, validation)
        check_count("iterations", iterations, minimum=1)
        check_positive("lr", lr)
        with self._placed(train, validation) as (placed_train, placed_validation):
            before, after = self._lbfgs(placed_train, placed_validation, iterations, lr)
        kept = math.isfinite(after) and after < before
        if kept:
            self.history.best_validation_loss = after
        self.solver.settings.setdefault("training", {})["lbfgs"] = {
            "iterations": iterations, "lr": lr, "validation_before": before,
            "validation_after": after, "kept": kept}
        return kept

    def _lbfgs(self, train: TaskBatch, validation: TaskBatch, iterations: int, lr: float):
        """The L-BFGS refinement on the fit's device; ``(before, after)`` validation losses,
        the weights left as they were unless ``after < before``. Every evaluation of the
        closure is the global loss and gradient (summed over the ranks), so every rank takes
        the same line search and the same steps."""
        model = self.solver.model
        model.eval()
        with torch.no_grad():
            before = float(self._loss(validation)[1])
        saved = copy.deepcopy(model.state_dict())
        optimizer = torch.optim.LBFGS(model.parameters(), lr=lr, max_iter=iterations,
                                      history_size=20, line_search_fn="strong_wolfe",
                                      tolerance_grad=1e-12, tolerance_change=1e-14)

        def closure():
            optimizer.zero_grad()
            local, value = self._loss(train)
            if torch.isfinite(value):
                if local is not None:
                    local.backward()
                self.parallel.reduce_gradients(model.parameters())
            return value

        optimizer.step(closure)
        with torch.no_grad():
            after = float(self._loss(validation)[1])
        # (The calibration is taken before a refinement that is not kept is undone, as it
        # always was.)
        self.solver.record_training(train)
        if not (math.isfinite(after) and after < before):
            model.load_state_dict(saved)
        return before, after

    def refine_gauss_newton(self, train: TaskBatch, validation: TaskBatch,
                            config: GaussNewtonConfig | None = None,
                            checkpoint: str | Path | None = None) -> GaussNewtonHistory:
        """Refine the meta-solver with Levenberg-Marquardt steps on an IRLS Gauss-Newton model
        of this trainer's loss (:mod:`metasolve.training.gauss_newton`), after :meth:`fit` or
        instead of it. Keeps the weights with the best validation loss, the starting ones
        included; ``checkpoint`` makes a killed refinement resume. For meta-solvers of up to a
        few thousand weights (the Gauss-Newton matrix is dense).
        """
        _check_splits(train, validation)
        config = config or GaussNewtonConfig()
        if not isinstance(config, GaussNewtonConfig):
            raise TypeError(f"config must be a GaussNewtonConfig, got {type(config).__name__}")
        refiner = GaussNewtonRefiner(self.solver, self.loss, config, self.identity(),
                                     checkpoint=None if checkpoint is None else Path(checkpoint),
                                     progress=self.progress,
                                     # After fit() the refinement is a later stage: its
                                     # checkpoint must have started from these weights.
                                     same_start=self.same_start or bool(self.history.epoch),
                                     parallel=self.parallel)
        with self._placed(train, validation) as (placed_train, placed_validation):
            history = refiner.fit(placed_train, placed_validation)
        self.solver.model.eval()
        self.solver.record_training(train)
        if history.best_validation_loss < self.history.best_validation_loss:
            self.history.best_validation_loss = history.best_validation_loss
        self.solver.settings.setdefault("training", {})["gauss_newton"] = {
            **asdict(config), "start_validation_loss": history.start_validation_loss,
            "best_validation_loss": history.best_validation_loss,
            "best_iteration": history.best_iteration, "stopped": history.stopped}
        return history

    def _save(self, next_epoch, optimizer, scheduler, generator, best_state):
        tensors = {f"model.{k}": v for k, v in self.solver.model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
        state = optimizer.state_dict()
        for pid, pstate in state["state"].items():
            for key, value in pstate.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
        tensors["rng"] = generator.get_state()
        self.save_checkpoint(next_epoch, tensors, {"param_groups": state["param_groups"],
                                                   "scheduler": scheduler.state_dict()})

    def _restore(self, tensors, state, optimizer, scheduler, generator):
        """Load a checkpoint's model, optimizer, scheduler and random stream; returns the best
        weights so far."""
        model = self.solver.model
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        optim_state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                optim_state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": optim_state,
                                   "param_groups": state["param_groups"]})
        scheduler.load_state_dict(state["scheduler"])
        if self.config.milestones:  # JSON turned the milestone counter's int keys into str
            scheduler.milestones = collections.Counter(self.config.milestones)
        generator.set_state(tensors["rng"])
        return best_state
