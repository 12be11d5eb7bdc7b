"""Second-order refinement of a meta-solver: Levenberg-Marquardt steps on a Gauss-Newton model
of the training loss, built by iteratively reweighted least squares (IRLS).

Why: some meta-solvers must be accurate far beyond what first-order training reaches. The GBMS
paper's Poisson/Jacobi guess (Appendix C.1) needs about 1e-5 relative accuracy in the slowest
Jacobi modes before it saves any iterations; Adam moves every weight by about its learning rate
whatever the gradient's size, and stalls orders of magnitude short of that (our 300-epoch Adam
rows of Table 3 match the zero guess, where these steps cut the iterations threefold or more).

The model, for one training instance ``i`` with meta-solver outputs ``z_i = Psi(tau_i; omega)``:

* Every loss is a function ``l_i(L_0, ..., L_K)`` of the monitored norms ``L_k = ||r_k||``
  (error or residual after ``k`` iterations). With ``c_k = (dl_i/dL_k) / L_k``, clamped at 0 and
  frozen at the current weights, ``q_i = 1/2 sum_k c_k ||r_k||^2`` has the same gradient as
  ``l_i``. For ``L_m`` (a squared norm) ``q_i`` is ``l_i`` itself. For the surrogate
  ``L~_eps`` of eq. (10) on the log scale, each counted term ``sigmoid(a log(L_k / eps))`` is a
  concave function of ``L_k^2`` above the tolerance, so ``q_i`` lies above it there (the
  classical IRLS majoriser of a logarithm): a step that lowers ``q_i`` lowers the loss.
* ``H_i``, the Hessian of ``q_i`` in ``z_i`` (``d`` Hessian-vector products, a double backward
  through the unrolled solve), projected onto the positive semi-definite cone. When the iterates
  are affine in ``z_i`` (an initial guess for a linear stationary method such as Jacobi or SOR),
  ``r_k = M_k z_i + const`` and ``H_i = sum_k c_k M_k^T M_k`` exactly; otherwise it is the
  curvature of ``q_i`` at the current point.
* With ``G_i = dz_i/domega``, the Gauss-Newton matrix of the mean loss is
  ``J = (1/n) sum_i G_i^T H_i G_i``, its gradient ``g = (1/n) sum_i G_i^T grad_z l_i``, and the
  Levenberg-Marquardt step solves ``(J + lambda diag(J)) delta = -g``. A step is kept only if it
  lowers the training loss (``lambda`` then shrinks by 3), else ``lambda`` grows by 4 and the
  step is recomputed. A kept step is then doubled while the loss keeps falling: the IRLS model
  of the surrogate lies above it, so its steps fall short. (Keeping instead the best of a scan
  of ``lambda`` each iteration did worse on the Poisson surrogate: the greedy steps stalled at
  133 training iterations where these reach 49.)

The meta-solver's weights are the only ones trained: ``J`` is a dense ``P x P`` matrix, so this
is for meta-solvers of up to a few thousand weights. The weights with the best validation loss
(the starting weights included) are kept. A checkpoint after every iteration lets a killed
refinement resume where it stopped, and end exactly where an uninterrupted one ends: it holds the
weights, the damping and the order the training set is chunked in (:mod:`.fit`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call, jacfwd

from ..artifact import ArtifactError
from ..tasks.base import TaskBatch
from ..validation import check_count, check_positive
from .distributed import DataParallel
from .fit import CheckpointedFit, TrainingWarning, untrained_reason
from .progress import progress_bar


@dataclass
class GaussNewtonConfig:
    """Settings of :meth:`Trainer.refine_gauss_newton`.

    ``iterations``: Levenberg-Marquardt iterations (each builds ``J`` once). ``damping``: the
    starting ``lambda``. ``max_tries``: rejected steps in a row (``lambda`` grows by 4 each
    time) before the refinement stops. ``chunk_size``: training instances per unrolled solve,
    which bounds memory. ``expansions``: how many times an accepted step may be doubled while
    the loss keeps falling.
    """

    iterations: int = 50
    damping: float = 1e-2
    max_tries: int = 12
    chunk_size: int = 250
    expansions: int = 4

    def __post_init__(self):
        check_count("iterations", self.iterations, minimum=1)
        check_positive("damping", self.damping)
        check_count("max_tries", self.max_tries, minimum=1)
        check_count("chunk_size", self.chunk_size, minimum=1)
        check_count("expansions", self.expansions)


@dataclass
class GaussNewtonHistory:
    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    damping: list[float] = field(default_factory=list)
    start_train_loss: float = float("nan")
    start_validation_loss: float = float("nan")
    best_iteration: int = -1
    best_validation_loss: float = float("inf")
    stopped: str = ""
    #: Why the refinement did not train, if it did not.
    untrained: str = ""


def _damped_step(curvature, scale, damping, gradient) -> torch.Tensor:
    """Solve ``(J + lambda diag(J)) delta = -g``; a least-squares solution if it is singular."""
    system = curvature + damping * torch.diag(scale)
    try:
        return torch.linalg.solve(system, -gradient)
    except RuntimeError:  # torch.linalg.LinAlgError: exactly singular
        return torch.linalg.lstsq(system, -gradient.unsqueeze(1), driver="gelsd").solution[:, 0]


class GaussNewtonRefiner(CheckpointedFit):
    """Levenberg-Marquardt on the IRLS Gauss-Newton model above; see the module docstring.

    Built by :meth:`metasolve.training.Trainer.refine_gauss_newton`, which passes its solver,
    loss and identity (so a checkpoint from other settings is refused). A checkpoint must agree
    on that identity and on ``config``, the iteration counts aside.
    """

    checkpoint_kind = "gauss-newton-checkpoint"
    checkpoint_label = "Gauss-Newton checkpoint"
    history_type = GaussNewtonHistory
    count_unit = "Gauss-Newton iterations"
    count_keys = (("config", "epochs"), ("gauss_newton", "iterations"))

    def __init__(self, solver, loss, config: GaussNewtonConfig, identity: dict,
                 checkpoint: Path | None = None, progress: bool = False,
                 same_start: bool = False, parallel: DataParallel | None = None):
        if solver.method_is_trainable:
            raise ValueError(f"Gauss-Newton refinement trains the meta-solver alone, but method "
                             f"{solver.method.name} has trainable weights of its own")
        if loss.needs_baseline:
            raise ValueError(f"Gauss-Newton refinement does not support loss {loss.kind!r}, "
                             f"which compares with a baseline solve")
        placed = [name for name, head in getattr(solver.metasolver, "heads", {}).items()
                  if head.needs_problem]
        if placed:
            # The refinement linearises theta = Psi(omega) as the network gives it; a head that
            # maps theta onto each problem would need that map in the linearisation too.
            raise ValueError(f"Gauss-Newton refinement does not support heads evaluated on "
                             f"each problem ({placed}); train with the first-order trainer")
        super().__init__(checkpoint, same_start, parallel)
        self.solver, self.loss, self.config = solver, loss, config
        self.metasolver = solver.metasolver
        self._identity = {**identity, "gauss_newton": asdict(config)}
        self.progress = progress
        self._ordered, self._order = None, None  # see _chunks
        self._names = [name for name, _ in self.metasolver.named_parameters()]
        self._shapes = [w.shape for w in self.metasolver.parameters()]

    def identity(self) -> dict:
        """The trainer's identity it was built with, plus this refinement's config."""
        return self._identity

    # -- weights as one flat vector ---------------------------------------------------------
    def _flat(self) -> torch.Tensor:
        return torch.cat([w.detach().reshape(-1) for w in self.metasolver.parameters()])

    def _unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self._names, self._shapes, strict=True):
            size = math.prod(shape)
            out[name] = theta[start:start + size].view(shape)
            start += size
        return out

    def _assign(self, theta: torch.Tensor) -> None:
        with torch.no_grad():
            for w, value in zip(self.metasolver.parameters(), self._unflatten(theta).values(),
                                strict=True):
                w.copy_(value)

    # -- the loss and its Gauss-Newton model ------------------------------------------------
    def _chunks(self, tasks: TaskBatch) -> list[torch.Tensor]:
        """This rank's index chunks of ``tasks``. The training set is chunked in the order of
        its instances' last iteration counts: a batched solve runs until its slowest instance
        stops, so a few slow instances spread over every chunk would make every chunk slow. In
        a data-parallel fit the ranks take the chunks in turn (rank ``r`` every ``R``-th from
        the ``r``-th), and the sums over them are summed over the ranks."""
        order = self._order if tasks is self._ordered else torch.arange(len(tasks))
        chunks = list(order.split(self.config.chunk_size))
        return chunks[self.parallel.rank::self.parallel.world]

    def mean_loss(self, tasks: TaskBatch) -> float:
        """The loss at the current weights, averaged over ``tasks`` (no autograd)."""
        total = 0.0
        with torch.no_grad():
            for idx in self._chunks(tasks):
                chunk = tasks.index(idx)
                total += float(self.loss(self.solver.solve(
                    chunk, safeguard=False, **self.loss.run_options())).sum())
        if self.parallel.distributed:
            total = float(self.parallel.sum(torch.tensor(total, dtype=torch.float64,
                                                         device=tasks.device)))
        return total / len(tasks)

    def _chunk_model(self, chunk: TaskBatch, theta: torch.Tensor):
        """``(loss sum, sum_i G_i^T H_i G_i, sum_i G_i^T grad_z l_i)`` on one chunk."""
        with torch.no_grad():
            outputs = self.solver.params(chunk.features)
        names = list(outputs)
        widths = [outputs[k][0].numel() for k in names]
        shapes = {k: outputs[k].shape[1:] for k in names}
        batch = len(chunk)

        def split(z):
            parts = z.split(widths, dim=1)
            return {k: part.reshape(batch, *shapes[k]) for k, part in zip(names, parts,
                                                                          strict=True)}

        z = torch.cat([outputs[k].reshape(batch, -1) for k in names], dim=1).requires_grad_()
        with torch.enable_grad():
            solution = self.solver.solve(chunk, params=split(z), **self.loss.run_options())
            per_instance = self.loss(solution)
            total = per_instance.sum()
            norms = solution.residual_history
            (grad_z, grad_norms) = torch.autograd.grad(total, (z, norms), retain_graph=True,
                                                       allow_unused=True)
            if grad_norms is None:
                raise ValueError(f"Gauss-Newton refinement needs a loss of the monitored norms; "
                                 f"{self.loss.label} does not depend on them")
            if grad_z is None:
                grad_z = torch.zeros_like(z)
            tiny = torch.finfo(norms.dtype).tiny
            weights = torch.where((norms > tiny) & torch.isfinite(grad_norms),
                                  (grad_norms / norms.clamp_min(tiny)).clamp_min(0.0),
                                  torch.zeros_like(norms)).detach()
            model = 0.5 * torch.where(weights > 0, weights * norms ** 2,
                                      torch.zeros_like(norms)).sum()
            (grad_model,) = torch.autograd.grad(model, z, create_graph=True)
            # Row j of every instance's Hessian is the gradient of sum_i grad_model[i, j]: all
            # rows in one batched backward pass (vmap over the unit cotangents).
            width = z.shape[1]
            units = torch.eye(width, dtype=z.dtype, device=z.device).unsqueeze(1).expand(
                width, batch, width)
            (rows,) = torch.autograd.grad(grad_model, z, grad_outputs=units,
                                          is_grads_batched=True)
        hessian = rows.transpose(0, 1).detach()
        hessian = 0.5 * (hessian + hessian.transpose(1, 2))
        hessian = torch.where(torch.isfinite(hessian), hessian, torch.zeros_like(hessian))
        values, vectors = torch.linalg.eigh(hessian)
        root = vectors * values.clamp_min(0.0).sqrt().unsqueeze(1)  # H_i = root root^T

        def outputs_of(weights_flat):
            out = functional_call(self.metasolver, self._unflatten(weights_flat),
                                  (chunk.features,))
            return torch.cat([out[k].reshape(batch, -1) for k in names], dim=1)

        # Forward mode: P tangents through the small network beat batch * width cotangents.
        jac = jacfwd(outputs_of)(theta)  # (batch, width, P)
        scaled = torch.einsum("bji,bjp->bip", root, jac).reshape(-1, theta.numel())
        grad_z = torch.where(torch.isfinite(grad_z), grad_z.detach(), torch.zeros_like(grad_z))
        return (float(total.detach()), scaled.T @ scaled,
                torch.einsum("bjp,bj->p", jac, grad_z), solution.iterations)

    def _model(self, tasks: TaskBatch, theta: torch.Tensor):
        n = len(tasks)
        total, curvature, gradient = 0.0, None, None
        counts = torch.zeros(n, dtype=torch.long)
        for idx in self._chunks(tasks):
            value, c, g, iterations = self._chunk_model(tasks.index(idx), theta)
            total += value
            curvature = c if curvature is None else curvature + c
            gradient = g if gradient is None else gradient + g
            counts[idx] = iterations.cpu()
        if self.parallel.distributed:
            # The normal equations are sums over the tasks: sum the ranks' parts (a rank
            # without a chunk adds zeros), and the iteration counts that order the chunks.
            parallel, size = self.parallel, theta.numel()
            if curvature is None:
                curvature = theta.new_zeros(size, size)
                gradient = theta.new_zeros(size)
            total = float(parallel.sum(torch.tensor(total, dtype=torch.float64,
                                                    device=theta.device)))
            curvature, gradient = parallel.sum(curvature), parallel.sum(gradient)
            counts = parallel.sum(counts.to(theta.device)).cpu()
        self._ordered, self._order = tasks, torch.argsort(counts, stable=True)
        return total / n, curvature / n, gradient / n

    # -- the iteration ----------------------------------------------------------------------
    def fit(self, train: TaskBatch, validation: TaskBatch) -> GaussNewtonHistory:
        cfg = self.config
        theta = self._flat()
        best = theta.clone()
        damping = cfg.damping
        start = 0
        self.history = GaussNewtonHistory()
        resumed = self.resume_checkpoint(cfg.iterations, {"theta": theta})
        h = self.history
        if resumed is not None:
            start, tensors, state = resumed
            theta, best, damping = self._restore(train, tensors, state)
            self._assign(theta)
        else:
            h.start_validation_loss = self.mean_loss(validation)
            h.start_train_loss = self.mean_loss(train)
            if math.isfinite(h.start_validation_loss):
                h.best_validation_loss = h.start_validation_loss
        with progress_bar(self.progress, total=cfg.iterations, completed=start,
                          description=f"Gauss-Newton {self.loss.label}") as bar:
            for it in range(start, cfg.iterations):
                if h.stopped:
                    break
                value, curvature, gradient = self._model(train, theta)
                scale = curvature.diagonal().clamp_min(
                    1e-12 * float(curvature.diagonal().max().clamp_min(1e-300)))
                for _ in range(cfg.max_tries):
                    step = _damped_step(curvature, scale, damping, gradient)
                    self._assign(theta + step)
                    trial = self.mean_loss(train)
                    if math.isfinite(trial) and trial < value:
                        theta, value = theta + step, trial
                        damping = max(damping / 3.0, 1e-12)
                        theta, value = self._expand(train, theta, step, value)
                        break
                    damping *= 4.0
                else:
                    h.stopped = f"no decrease in {cfg.max_tries} tries at iteration {it}"
                self._assign(theta)
                val = self.mean_loss(validation)
                h.iteration.append(it)
                h.train_loss.append(value)
                h.validation_loss.append(val)
                h.damping.append(damping)
                if val < h.best_validation_loss:
                    h.best_validation_loss, h.best_iteration = val, it
                    best = theta.clone()
                if self.checkpoint is not None or self.parallel.distributed:
                    self._save(it + 1, theta, best, damping)
                bar.advance(f"train {value:.4g} val {val:.4g} best {h.best_validation_loss:.4g}")
        self._assign(best)
        h.untrained = untrained_reason(0, 0, h.best_iteration >= 0, "Gauss-Newton iteration")
        if h.untrained:
            warnings.warn(f"Gauss-Newton {self.loss.label}: {h.untrained}"
                          + (f" ({h.stopped})" if h.stopped else ""), TrainingWarning,
                          stacklevel=3)
        return h

    def _expand(self, train: TaskBatch, theta, step, value):
        """Go further along an accepted step while the loss keeps falling: ``theta + step``,
        then ``+ 2 step``, ``+ 4 step``, ... (at most ``config.expansions`` doublings).

        For the surrogate the IRLS model lies above the loss (the tangent of a concave
        function), so its minimiser undershoots; for a quadratic loss the first try fails
        and costs one evaluation.
        """
        extra = step  # theta already holds one step: adding it again doubles the total
        for _ in range(self.config.expansions):
            self._assign(theta + extra)
            trial = self.mean_loss(train)
            if not (math.isfinite(trial) and trial < value):
                break
            theta, value, extra = theta + extra, trial, 2.0 * extra
        return theta, value

    def _save(self, next_iteration, theta, best, damping):
        # The chunk order is saved too: the next iteration sums its chunks in that order, and
        # floating-point sums in another order would drift from the uninterrupted run.
        self.save_checkpoint(next_iteration, {"theta": theta, "best": best, "order": self._order},
                             {"damping": damping})

    def _restore(self, train: TaskBatch, tensors, state):
        """``(theta, best, damping)`` from a checkpoint, and the training set's chunk order."""
        n = self._flat().numel()
        for name in ("theta", "best"):
            if name not in tensors or tensors[name].shape != (n,):
                raise ArtifactError(f"{self.checkpoint} does not hold this meta-solver's {n} "
                                    f"weights")
        order = tensors.get("order")
        if order is None or order.shape != (len(train),):
            raise ArtifactError(f"{self.checkpoint} was written for another training set (not "
                                f"of {len(train)} tasks)")
        self._ordered, self._order = train, order
        device = self._flat().device
        return tensors["theta"].to(device), tensors["best"].to(device), float(state["damping"])
