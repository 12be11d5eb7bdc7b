"""The safeguard measured on shifted sets (docs/architecture.md, sec. 6): a saved model solves
its own test set and sets outside its training distribution three ways (learned without the
safeguard, learned with it, the classical method through ``solve_baseline``), and the records
say how far each is from the classical method, how often the fallback fired, how many instances
were flagged out of distribution, and whether any instance ended converged with a wrong answer.

An experiment offers shifted sets with a module-level ``shifted_sets(settings, model, count)``
returning :class:`ShiftedSet` values; ``metasolve reproduce NAME --shift ood`` evaluates every
model the run saved on them (:func:`evaluate_saved_models`), and its records carry the set's name
under the key ``shift`` (:func:`split_shift_records` tells them apart).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..learned.solver import load
from ..problems import LinearSystem
from .records import record
from .render import Table

#: A converged answer further than this (relative, in the 2-norm) from the reference is wrong.
WRONG_ANSWER_RTOL = 1e-3


@dataclass(frozen=True)
class ShiftedSet:
    """Tasks to solve and the run options to solve them with (the experiment's test tolerance
    and cap). ``shift`` names the set in the records; ``"none"`` marks the model's own test
    set."""

    shift: str
    tasks: object
    options: dict = field(default_factory=dict)


def reference_answer(problem) -> torch.Tensor | None:
    """``(B, N)`` answers to check converged solves of a linear system against: its known
    solution, else a dense direct solve (a dense matrix); ``None`` otherwise (a nonlinear system
    or an integrator, whose convergence is judged on the true monitored norm already)."""
    if not isinstance(problem, LinearSystem):
        return None
    if problem.solution is not None:
        return problem.solution
    if not problem.sparse:
        matrix = problem.matrix
        if matrix.ndim == 2:
            matrix = matrix.expand(problem.batch_size, *matrix.shape)
        # NumPy's LAPACK, not torch's: with more than one thread set by torch.set_num_threads
        # (as every in-process run restores), the batched LU of the CPU build's MKL returns
        # invalid pivots for matrices that need pivoting (the elastic beams), and the solve
        # fails.
        answer = np.linalg.solve(matrix.detach().cpu().numpy(),
                                 problem.rhs.detach().cpu().numpy()[..., None])[..., 0]
        return torch.from_numpy(answer).to(problem.rhs)
    return None


def wrong_answers(x: torch.Tensor, reference: torch.Tensor,
                  converged: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: converged instances whose answer is further than ``WRONG_ANSWER_RTOL``
    from ``reference`` (a non-finite answer is always wrong)."""
    error = torch.linalg.vector_norm((x - reference).reshape(x.shape[0], -1), dim=1)
    scale = torch.linalg.vector_norm(reference.reshape(x.shape[0], -1), dim=1).clamp_min(
        torch.finfo(reference.dtype).tiny)
    return converged & ~(error <= WRONG_ANSWER_RTOL * scale)


def measure(model, shifted: ShiftedSet, chunk: int = 250,
            check_guess: str = "outside") -> dict[str, torch.Tensor]:
    """Per-instance results of the three solves of ``shifted.tasks``, in chunks of ``chunk``:
    iterations (or, for a fixed budget, the final monitored norm relative to the reference
    norm), converged flags, the safeguard's
    flags, and wrong converged answers. ``check_guess`` goes to the safeguarded solve."""
    fixed = shifted.options.get("fixed_iterations") is not None
    out: dict[str, list] = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the out-of-distribution warning is what is measured
        for start in range(0, len(shifted.tasks), chunk):
            part = shifted.tasks.index(slice(start, start + chunk))
            solutions = {"unguarded": model.solve(part, safeguard=False, **shifted.options),
                         "safeguarded": model.solve(part, check_guess=check_guess,
                                                    **shifted.options),
                         "classical": model.solve_baseline(part, **shifted.options)}
            reference = reference_answer(part.problem)
            for name, solution in solutions.items():
                cost = solution.relative_history[-1] if fixed else solution.iterations
                values = {f"{name}_cost": cost.double(),
                          f"{name}_converged": solution.converged.double()}
                # Without a reference (a nonlinear system, an integrator) convergence is judged
                # on the true monitored norm already (docs/architecture.md, convention 3).
                values[f"{name}_wrong"] = (
                    wrong_answers(solution.x, reference, solution.converged).double()
                    if reference is not None else torch.full_like(cost.double(), float("nan")))
                for key, value in values.items():
                    out.setdefault(key, []).append(value.cpu())
            guarded, classical = solutions["safeguarded"], solutions["classical"]
            for key, value in (("fallback", guarded.fallback),
                               ("out_of_distribution", guarded.out_of_distribution),
                               ("guess_replaced", guarded.info["guess_rejected"]),
                               ("lost", classical.converged & ~guarded.converged)):
                out.setdefault(key, []).append(value.double().cpu())
    return {key: torch.cat(values) for key, values in out.items()}


def shift_records(experiment: str, model_name: str, shifted: ShiftedSet,
                  measured: dict[str, torch.Tensor], **settings) -> list[dict]:
    """Records of one model on one set: per method the mean cost (``mean_iterations``, or
    ``mean_final_relative_residual`` at a fixed budget), converged and wrong-answer fractions; the
    safeguarded over classical cost ratio; the fallback, out-of-distribution and replaced-guess
    fractions; and ``classical_solved_lost``, the fraction the classical method solves and the
    safeguarded solve does not."""
    fixed = shifted.options.get("fixed_iterations") is not None
    cost = "mean_final_relative_residual" if fixed else "mean_iterations"
    where = {"model": model_name, "shift": shifted.shift, "count": len(shifted.tasks),
             **settings}
    records = []
    for method in ("unguarded", "safeguarded", "classical"):
        records += [record(experiment, method, cost, measured[f"{method}_cost"].mean(), **where),
                    record(experiment, method, "converged_fraction",
                           measured[f"{method}_converged"].mean(), **where),
                    record(experiment, method, "wrong_answer_fraction",
                           measured[f"{method}_wrong"].mean(), **where)]
    classical = measured["classical_cost"].mean()
    records.append(record(experiment, "safeguarded", f"{cost}_ratio_to_classical",
                          measured["safeguarded_cost"].mean() / classical
                          if classical > 0 else float("nan"), **where))
    for key in ("fallback", "out_of_distribution", "guess_replaced"):
        records.append(record(experiment, "safeguarded", f"{key}_fraction",
                              measured[key].mean(), **where))
    records.append(record(experiment, "safeguarded", "classical_solved_lost_fraction",
                          measured["lost"].mean(), **where))
    return records


def shift_table(records: list[dict]):
    """One row per experiment, model and set: the three solves' mean cost, the ratio to the
    classical method, converged shares and the safeguard's counts."""
    rows, seen = [], []
    for r in records:
        key = (r["experiment"], r.get("model"), r.get("shift"))
        if r["metric"] == "converged_fraction" and r.get("shift") is not None \
                and key not in seen:
            seen.append(key)

    def value(key, method, metric_end):
        for r in records:
            if ((r["experiment"], r.get("model"), r.get("shift")) == key
                    and r["method"] == method and r["metric"].endswith(metric_end)):
                return r["value"]
        return None

    def cell(v, spec):
        return "-" if v is None else format(v, spec)

    for key in seen:
        iterations = value(key, "classical", "mean_iterations") is not None
        cost, spec = (("mean_iterations", ".2f") if iterations
                      else ("mean_final_relative_residual", ".2e"))
        costs = [value(key, m, cost) for m in ("unguarded", "safeguarded", "classical")]
        converged = ", ".join(cell(value(key, m, "converged_fraction"), ".1%")
                              for m in ("unguarded", "safeguarded", "classical"))
        rows.append([key[0], str(key[1]), str(key[2]), *(cell(c, spec) for c in costs),
                     cell(value(key, "safeguarded", "_ratio_to_classical"), ".3f"), converged,
                     *(cell(value(key, "safeguarded", f"{k}_fraction"), ".1%")
                       for k in ("fallback", "out_of_distribution", "guess_replaced",
                                 "classical_solved_lost")),
                     cell(value(key, "safeguarded", "wrong_answer_fraction"), ".1%")])
    head = ["experiment", "model", "set", "unguarded", "safeguarded", "classical",
            "safeguarded / classical", "converged: unguarded, safeguarded, classical",
            "fallback", "out of distribution", "guesses replaced",
            "solved by classical, not by safeguarded", "safeguarded: converged, wrong"]
    return Table("The safeguard on shifted sets: mean iterations (mean final relative residual "
                 "at a fixed budget); lower is better", head, rows, label_columns=3)


def split_shift_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(experiment records, shifted-set records)``: the latter carry a ``shift`` key."""
    shifted = [r for r in records if "shift" in r]
    return [r for r in records if "shift" not in r], shifted


def evaluate_saved_models(module, settings, models_dir: Path, count: int | None = None,
                          chunk: int = 250, check_guess: str = "outside") -> list[dict]:
    """Every model saved under ``models_dir`` on the experiment ``module``'s shifted sets
    (``module.shifted_sets(settings, model[, count])``), as records of :func:`shift_records`
    with the model's file name as ``model``."""
    records = []
    for path in sorted(Path(models_dir).glob("*.safetensors")):
        model = load(path)
        sets = (module.shifted_sets(settings, model) if count is None
                else module.shifted_sets(settings, model, count))
        for shifted in sets:
            records += shift_records(module.NAME, path.stem, shifted,
                                     measure(model, shifted, chunk=chunk,
                                             check_guess=check_guess))
    return records
