"""``metasolve bench``: a trained model against the solvers practitioners run, end to end.

For an experiment (``bench("poisson-jacobi", scale="quick")``) the model that ``metasolve
reproduce NAME`` saved under ``OUT/NAME/SCALE/models`` solves the experiment's test tasks to its
tolerance; for a user's model (``bench_model(solver, tasks, rtol=...)``, ``metasolve bench --model
FILE``) any tasks it applies to. Each batch is solved by four kinds of contenders
(:mod:`metasolve.evaluation.bench`): (1) the learned method in metasolve, safeguarded, as a user
runs it; (2) the same method with classical parameters (``solve_baseline``); (3) the strongest
classical solvers for the family; (4) the learned part deployed into them
(:mod:`metasolve.baselines.deploy`). What each family gets:

=====================  ================================================  ========================
problems (method)      strong classical solvers                          learned part deployed
=====================  ================================================  ========================
linear, learned ``x0``  ``torch.linalg.solve``, SciPy ``splu``, SciPy CG,  ``x0`` of SciPy CG and
                       pyamg smoothed-aggregation CG                     of pyamg-CG
linear, ICCG shift     batched Cholesky, ``splu``, pyamg-CG, SciPy CG     IC(0) of the learned
                       with IC(0) of the classical shift                 shift in SciPy CG
linear, AutoSpec       ``splu``, SciPy CG, pyamg-CG, SciPy CG with the    the learned ``q(A)`` as
polynomial             classical Chebyshev polynomial                    SciPy CG's preconditioner
cone programs (neural  real ``scs`` (its defaults; with ``qdldl``)      learned iterate as
SCS)                                                                     ``scs`` warm start
nonlinear (R2N2)       SciPy ``newton_krylov``, batched Newton with the   R2N2 iterate as the start
                       exact Jacobian                                    of both
``A^{-1/2} b``         Lanczos ``f(A) b`` (the same products, and the     nothing takes a learned
(AutoSpec series)      probe's too); sine transforms (grid Laplacians)   series
=====================  ================================================  ========================

Experiments without a case (:data:`UNSUPPORTED` says why) raise :class:`BenchUnsupported`; a
missing model raises :class:`MissingModel`, naming the command that trains it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .baselines import deploy, strong
from .baselines.scs_reference import solve_with_scs
from .catalog import CATALOG
from .evaluation.bench import (
    BenchCase,
    Contender,
    Outcome,
    bench_figure,
    bench_tables,
    case_records,
    check_threads,
    time_case,
)
from .evaluation.records import read_records, write_records
from .evaluation.render import save_figure
from .evaluation.spectral import exact_inverse_sqrt, grid_eigenvalues
from .experiments import get
from .experiments.r2n2_chandrasekhar import TRAIN_OUTER
from .learned import LearnedSolver
from .learned.autospec import AutoSpecEngine
from .learned.solver import load
from .outputs import check_file_target
from .probes import lanczos_function
from .problems import (
    ConeProgram,
    DiagonalSystem,
    EigenProblem,
    InitialValueProblem,
    LinearSystem,
    NonlinearSystem,
)
from .solvers import ConjugateGradient, FilteredSubspaceIteration
from .solvers.scs import primal_dual
from .tasks import TaskBatch
from .tasks.operators import sparse_system
from .tasks.van_der_pol import VanDerPolSteps
from .validation import check_count, check_positive

__all__ = ["SUPPORTED", "UNSUPPORTED", "BenchUnsupported", "MissingModel", "bench",
           "bench_model", "model_cases"]


class BenchUnsupported(ValueError):
    """The experiment or model has no bench case (yet)."""


class MissingModel(FileNotFoundError):
    """The model a bench case needs was not found; the message names the command that
    trains it."""


#: Experiments ``metasolve bench`` does not cover, and why.
UNSUPPORTED: dict[str, str] = {}


# --- contenders by kind of problem -------------------------------------------------------------


def _solution_outcome(solution, learned=None) -> Outcome:
    return Outcome(solution.x.detach().double().numpy(), solution.converged.numpy(),
                   solution.iterations.numpy(),
                   None if learned is None else learned(solution))


def _learned_used(solution) -> np.ndarray:
    """Instances where a safeguarded solve used its learned part to the end."""
    used = ~solution.fallback
    rejected = solution.info.get("guess_rejected")
    if rejected is not None:
        used = used & ~rejected
    return used.numpy()


def _metasolve(solver: LearnedSolver, tasks: TaskBatch, options: dict,
               label: str, baseline_label: str,
               outcome: Callable = _solution_outcome) -> list[Contender]:
    """(1) and (2): the learned method safeguarded, and ``solve_baseline``; ``outcome(solution,
    learned)`` makes their :class:`Outcome`."""
    return [Contender("learned", "learned", label,
                      lambda: outcome(solver.solve(tasks, **options), _learned_used)),
            Contender("classical", "classical", baseline_label,
                      lambda: outcome(solver.solve_baseline(tasks, **options)))]


def _result(result: strong.BatchResult, learned=None) -> Outcome:
    return Outcome(result.x, result.converged, result.iterations, learned)


def _rtol_of(options: dict) -> float:
    rtol = options.get("rtol")
    return 1e-6 if rtol is None else float(rtol)


def guess_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict) -> list[Contender]:
    """A method with a learned initial guess on linear systems (Jacobi on 1D Poisson)."""
    problem = tasks.problem
    matrices = strong.scipy_matrices(problem)
    rhs = problem.rhs.detach().double().numpy()
    rtol = _rtol_of(options)
    name = solver.method.name
    out = _metasolve(solver, tasks, options, f"metasolve {name} + learned x0 (safeguarded)",
                     f"metasolve {name}, zero guess")
    out += [Contender("torch-solve", "strong", "torch.linalg.solve (batched dense LU)",
                      lambda: _result(strong.dense_direct(problem))),
            Contender("splu", "strong", "scipy splu (sparse LU)",
                      lambda: _result(strong.sparse_direct(matrices, rhs))),
            Contender("scipy-cg", "strong", "scipy cg",
                      lambda: _result(strong.scipy_cg(matrices, rhs, rtol))),
            Contender("pyamg-cg", "strong", "pyamg smoothed-aggregation CG",
                      lambda: _result(strong.pyamg_cg(matrices, rhs, rtol)))]

    def cg_with_guess():
        guess = deploy.learned_guess(solver, tasks)
        return _result(strong.scipy_cg(matrices, rhs, rtol, x0=guess.value), guess.learned)

    def amg_with_guess():
        guess = deploy.learned_guess(solver, tasks)
        return _result(strong.pyamg_cg(matrices, rhs, rtol, x0=guess.value), guess.learned)

    out += [Contender("scipy-cg+learned-x0", "deployed", "scipy cg from the learned x0",
                      cg_with_guess),
            Contender("pyamg-cg+learned-x0", "deployed", "pyamg-CG from the learned x0",
                      amg_with_guess)]
    return out


def iccg_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict) -> list[Contender]:
    """ICCG with a learned shift (the elastic beam)."""
    problem = tasks.problem
    matrices = strong.scipy_matrices(problem)
    rhs = problem.rhs.detach().double().numpy()
    rtol = _rtol_of(options)
    maxiter = options.get("maxiter")
    out = _metasolve(solver, tasks, options, "metasolve ICCG, learned shift (safeguarded)",
                     "metasolve ICCG, classical shift")

    def ic_cg(classical: bool):
        def solve():
            m = deploy.ic_preconditioners(solver, tasks, classical=classical)
            return _result(strong.scipy_cg(matrices, rhs, rtol, maxiter=maxiter,
                                           preconditioners=m.value),
                           None if classical else m.learned)
        return solve

    out += [Contender("torch-cholesky", "strong", "batched dense Cholesky (torch)",
                      lambda: _result(strong.dense_cholesky(problem))),
            Contender("splu", "strong", "scipy splu per instance",
                      lambda: _result(strong.sparse_direct(matrices, rhs))),
            Contender("pyamg-cg", "strong", "pyamg smoothed-aggregation CG per instance",
                      lambda: _result(strong.pyamg_cg(matrices, rhs, rtol))),
            Contender("scipy-iccg", "strong", "scipy cg + IC(0), classical shift",
                      ic_cg(True)),
            Contender("scipy-iccg+learned-shift", "deployed",
                      "scipy cg + IC(0), learned shift", ic_cg(False))]
    return out


def polynomial_contenders(solver: LearnedSolver, problem: LinearSystem,
                          features: Callable[[], torch.Tensor],
                          options: dict) -> list[Contender]:
    """An AutoSpec polynomial preconditioner in CG on a sparse linear system shared by the
    batch; ``features()`` computes the probe (its cost is part of every column that uses it)."""
    matrices = strong.scipy_matrices(problem)
    if len(matrices) != 1:
        raise BenchUnsupported("a polynomial preconditioner case needs one matrix shared by "
                               "the batch")
    rhs = problem.rhs.detach().double().numpy()
    rtol = _rtol_of(options)
    maxiter = options.get("maxiter")
    pcg = solver.deployed(ConjugateGradient())

    def tasks():
        return TaskBatch(problem, features())

    def scipy_poly(classical: bool):
        def solve():
            m = deploy.polynomial_preconditioners(pcg, tasks(), matrices[0],
                                                  classical=classical)
            return _result(strong.scipy_cg(matrices, rhs, rtol, maxiter=maxiter,
                                           preconditioners=m.value),
                           None if classical else m.learned)
        return solve

    return [Contender("learned", "learned", "metasolve CG + learned polynomial (safeguarded)",
                      lambda: _solution_outcome(pcg.solve(tasks(), **options), _learned_used)),
            Contender("classical", "classical", "metasolve CG + Chebyshev polynomial (probe)",
                      lambda: _solution_outcome(pcg.solve_baseline(tasks(), **options))),
            Contender("splu", "strong", "scipy splu (one factorisation)",
                      lambda: _result(strong.sparse_direct(matrices, rhs))),
            Contender("scipy-cg", "strong", "scipy cg",
                      lambda: _result(strong.scipy_cg(matrices, rhs, rtol, maxiter=maxiter))),
            Contender("pyamg-cg", "strong", "pyamg smoothed-aggregation CG",
                      lambda: _result(strong.pyamg_cg(matrices, rhs, rtol))),
            Contender("scipy-cg+chebyshev", "strong",
                      "scipy cg + Chebyshev polynomial (probe)", scipy_poly(True)),
            Contender("scipy-cg+learned-poly", "deployed",
                      "scipy cg + learned polynomial", scipy_poly(False))]


def invsqrt_contenders(solver: LearnedSolver, problem: LinearSystem, operator,
                       features: Callable[[], torch.Tensor], options: dict,
                       probe_matvecs: int) -> list[Contender]:
    """A learned series for ``A^{-1/2} b`` (AutoSpec task (c)) at its fixed degree ``d``,
    against the Chebyshev interpolant of the same degree on the probe's interval, the Lanczos
    approximation (the practitioner's Krylov method for a matrix function) with ``d`` products
    and with as many as the probe and the series together, and, for a grid Laplacian, the
    exact answer by sine transforms. Each answer is complete at its budget ("converged");
    the table's error column is what tells them apart. Nothing takes a learned series in."""
    degree = options["fixed_iterations"]
    rhs = problem.rhs.detach()
    matrix = operator.matrix()
    everywhere = np.ones(problem.batch_size, dtype=bool)

    def budget(solution, learned=None) -> Outcome:
        return Outcome(solution.x.detach().double().numpy(), everywhere,
                       solution.iterations.numpy(), None if learned is None else learned(solution))

    def tasks():
        return TaskBatch(problem, features())

    def lanczos(steps: int):
        def solve():
            with torch.no_grad():
                x = lanczos_function(problem.matvec, rhs, steps, torch.rsqrt)
            return Outcome(x.double().numpy(), everywhere,
                           np.full(problem.batch_size, steps))
        return solve

    out = [Contender("learned", "learned", f"metasolve learned series, degree {degree - 1} "
                     "(safeguarded)",
                     lambda: budget(solver.solve(tasks(), **options), _learned_used)),
           Contender("classical", "classical", "metasolve Chebyshev interpolant on the probe's "
                     "interval", lambda: budget(solver.solve_baseline(tasks(), **options))),
           Contender("lanczos", "strong", f"Lanczos f(A) b, {degree} products",
                     lanczos(degree)),
           Contender("lanczos-equal", "strong",
                     f"Lanczos f(A) b, {degree + probe_matvecs} products (the probe's and the "
                     "series' together)", lanczos(degree + probe_matvecs))]
    if grid_eigenvalues(operator) is not None:
        out.append(Contender("sine-transform", "strong",
                             "exact, by sine transforms (scipy.fft; grid Laplacians only)",
                             lambda: Outcome(exact_inverse_sqrt(operator, matrix, rhs).numpy(),
                                             everywhere)))
    return out


#: scs settings of the strong columns: its own defaults (Anderson acceleration with lookback
#: 10, which solve_with_scs turns off unless asked), and the same with the qdldl solver.
SCS_DEFAULTS = {"acceleration_lookback": 10}
SCS_QDLDL = {"acceleration_lookback": 10, "linear_solver": "qdldl"}


def _scs_batch(program: ConeProgram, starts=None, **settings) -> strong.BatchResult:
    xs, iterations, converged = [], [], []
    for i in range(program.batch_size):
        out = solve_with_scs(program, i, warm_start=None if starts is None else starts[i],
                             **settings)
        xs.append(out["x"])
        iterations.append(out["iterations"])
        converged.append(out["status"] == "solved")
    return strong.BatchResult(np.array(xs), np.array(iterations), np.array(converged))


def _scs_x(solution, program: ConeProgram, learned=None) -> Outcome:
    x = primal_dual(program, solution.x)["x"].detach().numpy()
    return Outcome(x, solution.converged.numpy(), solution.iterations.numpy(),
                   None if learned is None else learned(solution))


def scs_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict,
                   deploy_iterations: int = 10) -> list[Contender]:
    """Neural SCS on cone programs: the real ``scs`` cold and warm-started by the model's
    iterate after ``deploy_iterations`` of its own (safeguarded) iterations."""
    program = tasks.problem
    out = [Contender("learned", "learned", "metasolve neural SCS (safeguarded)",
                     lambda: _scs_x(solver.solve(tasks, **options), program,
                                    _learned_used)),
           Contender("classical", "classical", "metasolve SCS (PyTorch), cold start",
                     lambda: _scs_x(solver.solve_baseline(tasks, **options), program)),
           Contender("scs", "strong", "scs (its defaults)",
                     lambda: _result(_scs_batch(program, **SCS_DEFAULTS))),
           Contender("scs-qdldl", "strong", "scs with qdldl",
                     lambda: _result(_scs_batch(program, **SCS_QDLDL)))]

    def warm(settings):
        def solve():
            starts = deploy.scs_warm_starts(solver, tasks, deploy_iterations)
            return _result(_scs_batch(program, starts.value, **settings), starts.learned)
        return solve

    out += [Contender("scs+learned-start", "deployed",
                      f"scs warm-started by {deploy_iterations} learned iterations",
                      warm(SCS_DEFAULTS)),
            Contender("scs-qdldl+learned-start", "deployed",
                      f"scs with qdldl, warm-started by {deploy_iterations} learned iterations",
                      warm(SCS_QDLDL))]
    return out


def _padded_jacobian(problem):
    """The problem's Jacobian with ones on the diagonal of padded unknowns (invertible)."""
    mask = getattr(problem, "mask", None)
    if mask is None:
        return problem.jacobian
    return lambda y: problem.jacobian(y) + torch.diag_embed(1.0 - mask)


def _numpy_functions(problem) -> list:
    """Per-instance ``f`` as NumPy functions on the unpadded unknowns (for SciPy)."""
    functions = []
    for i in range(problem.batch_size):
        if hasattr(problem, "unpadded"):
            operator, _ = problem.unpadded(i)
            a = operator.detach().double().numpy()

            def f(x, a=a):
                return x - 1.0 / (1.0 - a @ x)
        else:
            one = problem.index(slice(i, i + 1))

            def f(x, one=one):
                with torch.no_grad():
                    return one.function(torch.as_tensor(x)[None])[0].numpy()
        functions.append(f)
    return functions


def _starts(problem, x: np.ndarray) -> list[np.ndarray]:
    sizes = problem.sizes.numpy() if hasattr(problem, "sizes") else \
        np.full(problem.batch_size, problem.size)
    return [np.array(x[i, :int(m)]) for i, m in enumerate(sizes)]


def linear_r2n2_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict,
                           deploy_iterations: int = 2) -> list[Contender]:
    """An R2N2 on small linear systems: a batched dense LU, and SciPy's ``gmres`` from zero
    and from the R2N2 iterate after ``deploy_iterations`` outer iterations."""
    problem = tasks.problem
    matrices = strong.scipy_matrices(problem)
    rhs = problem.rhs.detach().double().numpy()
    rtol = _rtol_of(options)
    out = _metasolve(solver, tasks, options, "metasolve R2N2 (safeguarded)",
                     f"metasolve {solver.classical_method_for(problem).name}")

    def gmres_from_learned():
        starts = deploy.linear_starts(solver, tasks, deploy_iterations)
        return _result(strong.scipy_gmres(matrices, rhs, rtol, x0=starts.value),
                       starts.learned)

    out += [Contender("torch-solve", "strong", "torch.linalg.solve (batched dense LU)",
                      lambda: _result(strong.dense_direct(problem))),
            Contender("scipy-gmres", "strong", "scipy gmres",
                      lambda: _result(strong.scipy_gmres(matrices, rhs, rtol))),
            Contender("scipy-gmres+r2n2-start", "deployed",
                      f"scipy gmres from {deploy_iterations} R2N2 iterations",
                      gmres_from_learned)]
    return out


def _ritz_values(problem: EigenProblem, block: torch.Tensor) -> np.ndarray:
    """``(B, wanted)``: the smallest Ritz values of each instance's block (the answers the
    eigenproblem columns are checked by)."""
    with torch.no_grad():
        ritz = FilteredSubspaceIteration._rayleigh_ritz(problem, block.detach())["ritz"]
    return ritz[:, :problem.wanted].double().numpy()


def eigen_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict,
                     deploy_iterations: int = 10) -> list[Contender]:
    """A learned filter for subspace iteration, on the smallest eigenpairs of a sparse matrix:
    ARPACK in shift-invert mode, and ``lobpcg`` with a multigrid preconditioner from the
    starting block and from the learned block after ``deploy_iterations`` iterations. Every
    column's answers are the ``wanted`` smallest eigenvalues; an instance converged where each
    wanted residual ``||A v - lambda v||`` is within ``rtol`` times the probe's bound on
    ``||A||``, the test of metasolve's subspace iteration."""
    problem = tasks.problem
    matrices = strong.scipy_matrices(problem.operator)
    threshold = _rtol_of(options) * problem.upper.detach().double().numpy()
    wanted = problem.wanted

    def ritz_outcome(solution, learned=None):
        return Outcome(_ritz_values(problem, solution.x), solution.converged.numpy(),
                       solution.iterations.numpy(), None if learned is None else learned(solution))

    def lobpcg_from_learned():
        blocks = deploy.eigen_blocks(solver, tasks, deploy_iterations)
        return _result(strong.lobpcg_amg(matrices, blocks.value, wanted, threshold),
                       blocks.learned)

    starts = problem.start.detach().double().numpy()
    out = _metasolve(solver, tasks, options, "metasolve learned-filter subspace iteration "
                     "(safeguarded)", "metasolve Chebyshev-filtered subspace iteration",
                     outcome=ritz_outcome)
    out += [Contender("eigsh-shift-invert", "strong", "scipy eigsh, shift-invert about 0",
                      lambda: _result(strong.scipy_eigsh_shift_invert(matrices, wanted,
                                                                      threshold))),
            Contender("lobpcg-amg", "strong", "scipy lobpcg + pyamg preconditioner",
                      lambda: _result(strong.lobpcg_amg(matrices, starts, wanted, threshold))),
            Contender("lobpcg-amg+learned-block", "deployed",
                      f"scipy lobpcg + pyamg from {deploy_iterations} learned-filter iterations",
                      lobpcg_from_learned)]
    return out


def _ivp_functions(problem: InitialValueProblem) -> list:
    """Per-instance right-hand sides ``f(t, y)`` for SciPy's ``solve_ivp``: NumPy code for the
    van der Pol oscillator (what a practitioner writes), else the problem's own ``function``
    on one instance."""
    if isinstance(problem, VanDerPolSteps):
        def oscillator(a):
            return lambda t, y: np.array([y[1], a * (1.0 - y[0] ** 2) * y[1] - y[0]])
        return [oscillator(float(a)) for a in problem.a]

    def one(i):
        single = problem.index(slice(i, i + 1))

        def f(t, y):
            with torch.no_grad():
                return single.function(torch.as_tensor(y)[None])[0].numpy()
        return f
    return [one(i) for i in range(problem.batch_size)]


def ivp_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict) -> list[Contender]:
    """A learned integrator (an R2N2 as a Runge-Kutta method) over the tasks' fixed steps,
    against SciPy's adaptive ``solve_ivp`` over the same interval: RK45 with its default
    tolerances and DOP853 at 1e-8. The answers are the states at the last step, measured
    against the reference trajectory; there is nothing to deploy a learned integrator into."""
    problem = tasks.problem
    steps = options["fixed_iterations"]
    starts = problem.start.detach().double().numpy()
    ends = steps * problem.step_size.detach().double().numpy()
    functions = _ivp_functions(problem)
    classical = solver.classical_method_for(problem)
    stages = getattr(classical, "layers", None)
    out = _metasolve(solver, tasks, options, f"metasolve R2N2 integrator, {steps} steps "
                     "(safeguarded)", f"metasolve RK-{stages} (Kutta's weights), {steps} steps"
                     if classical.name == "r2n2" and stages else
                     f"metasolve {classical.name}, {steps} steps")
    out += [Contender("rk45", "strong", "scipy solve_ivp RK45 (its default tolerances)",
                      lambda: _result(strong.scipy_ivp(functions, starts, ends))),
            Contender("dop853", "strong", "scipy solve_ivp DOP853, rtol = atol = 1e-8",
                      lambda: _result(strong.scipy_ivp(functions, starts, ends, "DOP853",
                                                       1e-8, 1e-8)))]
    return out


def nonlinear_contenders(solver: LearnedSolver, tasks: TaskBatch, options: dict,
                         deploy_iterations: int = TRAIN_OUTER) -> list[Contender]:
    """A learned method on nonlinear systems (an R2N2; Newton-SOR with learned factors and
    guesses): SciPy's ``newton_krylov`` and a batched Newton method with the exact Jacobian,
    from each instance's start and from the learned start, the model's initial guess where it
    predicts one, else its iterate after ``deploy_iterations`` outer iterations."""
    problem = tasks.problem
    atol = float(options.get("atol") or options.get("rtol") or 1e-8)
    functions = _numpy_functions(problem)
    jacobian = _padded_jacobian(problem)
    start = problem.start.detach().double()
    name = "R2N2" if solver.method.name == "r2n2" else solver.method.name
    out = _metasolve(solver, tasks, options, f"metasolve {name} (safeguarded)",
                     f"metasolve {solver.classical_method_for(problem).name}")
    if solver.learned_guess:
        learned_starts, where = (lambda: deploy.nonlinear_guess(solver, tasks),
                                 "the learned initial guess")
    else:
        learned_starts, where = (lambda: deploy.nonlinear_starts(solver, tasks,
                                                                 deploy_iterations),
                                 f"{deploy_iterations} {name} iterations")

    def nk(x0: np.ndarray, learned=None):
        return _result(strong.scipy_newton_krylov(functions, _starts(problem, x0), atol),
                       learned)

    def newton_from_learned():
        s = learned_starts()
        return _result(strong.batched_newton(problem.function, jacobian,
                                             torch.from_numpy(s.value), atol), s.learned)

    def nk_from_learned():
        s = learned_starts()
        return nk(s.value, s.learned)

    out += [Contender("newton-krylov", "strong", "scipy newton_krylov (defaults)",
                      lambda: nk(start.numpy())),
            Contender("newton", "strong", "batched Newton, exact Jacobian (torch)",
                      lambda: _result(strong.batched_newton(problem.function, jacobian, start,
                                                            atol))),
            Contender("newton-krylov+learned-start", "deployed",
                      f"scipy newton_krylov from {where}", nk_from_learned),
            Contender("newton+learned-start", "deployed",
                      f"batched Newton from {where}", newton_from_learned)]
    return out


# --- a user's model ----------------------------------------------------------------------------


def _reference(problem) -> np.ndarray | None:
    """Exact answers to check every column by: a linear system's stored solution, else a dense
    or sparse direct solve; a nonlinear system's Newton solution to round-off; ``None`` for a
    cone program (the columns stop at different points of the same tolerance)."""
    with torch.no_grad():
        if isinstance(problem, LinearSystem):
            if problem.solution is not None:
                return problem.solution.detach().double().numpy()
            return strong.sparse_direct(strong.scipy_matrices(problem),
                                        problem.rhs.detach().double().numpy()).x
        if isinstance(problem, InitialValueProblem) and problem.reference is not None:
            return problem.reference[:, -1].detach().double().numpy()
        if isinstance(problem, EigenProblem):
            matrices = strong.scipy_matrices(problem.operator)
            return strong.scipy_eigsh_shift_invert(
                matrices, problem.wanted, np.full(problem.batch_size, np.inf)).x
        if isinstance(problem, NonlinearSystem) and hasattr(problem, "jacobian"):
            try:
                return strong.batched_newton(problem.function, _padded_jacobian(problem),
                                             problem.start.detach().double(), 1e-13,
                                             maxiter=100).x
            except (NotImplementedError, RuntimeError):
                return None
    return None


def model_cases(solver: LearnedSolver, tasks: TaskBatch, options: dict, *,
                deploy_iterations: int | None = None) -> list[Contender]:
    """The contenders for ``solver`` on ``tasks`` with run ``options``, chosen by the kind of
    problem and of learned part (``deploy_iterations``: the learned iterations before a warm
    start of scs or a nonlinear solver); :class:`BenchUnsupported` where there is no case."""
    problem = tasks.problem
    outputs = set(getattr(solver.metasolver, "outputs", ()) or ())
    if isinstance(problem, ConeProgram):
        return scs_contenders(solver, tasks, options, deploy_iterations or 10)
    if isinstance(problem, NonlinearSystem):
        return nonlinear_contenders(solver, tasks, options, deploy_iterations or TRAIN_OUTER)
    if isinstance(problem, InitialValueProblem) and problem.reference is not None and \
            options.get("fixed_iterations") == problem.steps:
        return ivp_contenders(solver, tasks, options)
    if isinstance(problem, EigenProblem) and not isinstance(problem.operator, DiagonalSystem):
        return eigen_contenders(solver, tasks, options, deploy_iterations or 10)
    if isinstance(problem, LinearSystem) and type(problem) is LinearSystem:
        if solver.method.name == "iccg":
            return iccg_contenders(solver, tasks, options)
        if solver.method.name == "r2n2":
            return linear_r2n2_contenders(solver, tasks, options, deploy_iterations or 2)
        if isinstance(solver.metasolver, AutoSpecEngine) and \
                solver.metasolver.paradigm == "basis":
            features = tasks.features
            return polynomial_contenders(solver, problem, lambda: features, options)
        if "x0" in outputs:
            return guess_contenders(solver, tasks, options)
    raise BenchUnsupported(f"no bench case for a {solver.method.name} solver with a "
                           f"{type(solver.metasolver).__name__} on {type(problem).__name__} "
                           "tasks; cases exist for learned x0 / ICCG shifts / AutoSpec "
                           "preconditioners / R2N2 on linear systems with a matrix, neural SCS "
                           "on cone programs and R2N2 on nonlinear systems")


def _train_seconds(solver: LearnedSolver, run_folder: Path | None = None,
                   experiment: str | None = None,
                   scale: str | None = None) -> tuple[float | None, str]:
    """The model's training seconds and where they come from: the artifact's settings, else the
    run's records (``train_seconds``), else the catalog's measured time of the whole
    ``reproduce`` run at that scale (an upper bound: it includes the evaluation)."""
    settings = solver.settings or {}
    for found in (settings.get("train_seconds"),
                  (settings.get("training") or {}).get("train_seconds")
                  if isinstance(settings.get("training"), dict) else None):
        if isinstance(found, (int, float)):
            return float(found), "the model file"
    if run_folder is not None and experiment is not None:
        path = run_folder / f"{experiment}.json"
        if path.is_file():
            try:
                values = [r["train_seconds"] for r in read_records(path)
                          if isinstance(r.get("train_seconds"), (int, float))]
            except (OSError, ValueError):
                values = []
            if values:
                return float(max(values)), f"the run's records ({path.name}), longest training"
    if experiment in CATALOG and scale is not None:
        timing = CATALOG[experiment].scales.get(scale)
        if timing is not None:
            return float(timing.seconds), (f"upper bound: the whole `{timing.command}` run "
                                           "(catalog)")
    return None, "not recorded"


def bench_model(solver: LearnedSolver, tasks: TaskBatch, *, repeats: int = 5,
                threads="1", progress: bool = False, experiment: str = "model",
                case: str | None = None, train_seconds: float | None = None,
                train_source: str | None = None, deploy_iterations: int | None = None,
                settings: dict | None = None, **options) -> dict:
    """Bench ``solver`` on ``tasks`` (run ``options`` such as ``rtol``, ``maxiter``): returns
    ``{"records", "tables"}`` (one table per ``threads`` setting, ``"1"``, ``"default"`` or a
    comma-separated list of them). Training seconds come from the model's settings where
    recorded, else ``train_seconds`` (``None``: no break-even)."""
    if not isinstance(solver, LearnedSolver):
        raise TypeError(f"solver must be a LearnedSolver, got {type(solver).__name__}")
    if not isinstance(tasks, TaskBatch):
        raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
    thread_list = [check_threads(t) for t in str(threads).split(",")]
    contenders = model_cases(solver, tasks, options, deploy_iterations=deploy_iterations)
    seconds, source = _train_seconds(solver)
    if seconds is None and train_seconds is not None:
        seconds, source = float(train_seconds), train_source or "given"
    tolerance = ", ".join(f"{k} {v:g}" for k, v in options.items()
                          if k in ("rtol", "atol") and v) or "the method's own tolerance"
    problem = tasks.problem
    case = case or f"{type(problem).__name__}, {problem.size} unknowns"
    bench_case = BenchCase(experiment, case, tolerance, problem.batch_size, contenders,
                           reference=_reference(problem), train_seconds=seconds,
                           train_source=source, settings=dict(settings or {}))
    records = []
    for t in thread_list:
        timed = time_case(bench_case, repeats=repeats, threads=t, progress=progress)
        records += case_records(bench_case, timed, repeats, t)
    return {"records": records, "tables": bench_tables(records)}


# --- the experiments ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentCase:
    """How an experiment is benched: ``models``, the model file names (glob patterns, without
    ``.safetensors``) to try in order; ``count``, the default number of instances (``None``: the
    whole test set); ``build(module, settings, solver, count)``, which returns ``(tasks, run
    options, contenders, case description)``."""

    models: tuple[str, ...]
    count: int | None
    build: Callable


def _test_set(module, settings, solver, count):
    """The experiment's own test set (its first shifted set) and options, first ``count``."""
    shifted = module.shifted_sets(settings, solver)[0]
    tasks = shifted.tasks
    if count is not None and count < len(tasks):
        tasks = tasks.index(torch.arange(count))
    return tasks, dict(shifted.options)


def _build_guess(module, settings, solver, count):
    tasks, options = _test_set(module, settings, solver, count)
    return tasks, options, guess_contenders(solver, tasks, options), \
        f"1D Poisson n={tasks.problem.size}, {len(tasks)} tasks"


def _build_iccg(module, settings, solver, count):
    tasks, options = _test_set(module, settings, solver, count)
    return tasks, options, iccg_contenders(solver, tasks, options), \
        f"elastic beam, {tasks.problem.size} unknowns, {len(tasks)} beams"


def _build_scs(module, settings, solver, count):
    tasks, _ = _test_set(module, settings, solver, count)
    options = {"maxiter": 20_000}
    if hasattr(module, "label_of"):
        label = module.label_of(settings)
    else:  # one model per family variant: say which family the model file holds
        config = solver.family.config()
        label = " ".join([solver.family.name, *(f"{k}={config[k]}" for k in ("p", "q", "steps")
                                                if k in config)])
    return tasks, options, scs_contenders(solver, tasks, options,
                                          settings.deploy_iterations[0]), \
        f"{label}, {len(tasks)} programs"


def _build_nonlinear(module, settings, solver, count):
    tasks, options = _test_set(module, settings, solver, count)
    return tasks, options, nonlinear_contenders(solver, tasks, options), \
        f"H-equation (training distribution), {len(tasks)} tasks"


def _build_ivp(module, settings, solver, count):
    tasks, options = _test_set(module, settings, solver, count)
    if options.get("fixed_iterations") != tasks.problem.steps:
        raise BenchUnsupported(f"{module.NAME}: its test set integrates "
                               f"{options.get('fixed_iterations')} steps of a reference of "
                               f"{tasks.problem.steps}; the bench checks the last state")
    return tasks, options, ivp_contenders(solver, tasks, options), \
        f"van der Pol, {options['fixed_iterations']} steps of h in [0.01, 0.1], {len(tasks)} " \
        "trajectories"


def _build_robertson(module, settings, solver, count):
    tasks, options = _test_set(module, settings, solver, None)
    if count is not None and count < len(tasks):
        # Evenly spread: the test set runs through each trajectory's steps in time order, and
        # its first steps are the easy ones.
        tasks = tasks.index(torch.linspace(0, len(tasks) - 1, count).round().long())
    return tasks, options, nonlinear_contenders(solver, tasks, options), \
        f"Robertson's kinetics, one backward-Euler step each, {len(tasks)} steps"


def _build_linear_r2n2(module, settings, solver, count):
    tasks, options = _test_set(module, settings, solver, count)
    return tasks, options, linear_r2n2_contenders(solver, tasks, options), \
        f"the R2N2 paper's matrices (training distribution), {len(tasks)} systems of " \
        f"{tasks.problem.size} unknowns"


def _build_eigen(module, settings, solver, count):
    # The transfer operator (2D Poisson): the spectra sets are diagonal matrices, whose
    # eigenpairs a practitioner reads off.
    shifted = next((s for s in module.shifted_sets(settings, solver)
                    if not isinstance(s.tasks.problem.operator, DiagonalSystem)), None)
    if shifted is None:
        raise BenchUnsupported(f"{module.NAME} at this scale has no sparse operator to bench "
                               "(its spectra sets are diagonal matrices)")
    tasks = shifted.tasks
    if count is not None and count < len(tasks):
        tasks = tasks.index(torch.arange(count))
    problem = tasks.problem
    return tasks, dict(shifted.options), eigen_contenders(solver, tasks, shifted.options), \
        f"{shifted.shift} ({problem.size} unknowns), the {problem.wanted} smallest " \
        f"eigenpairs from {len(tasks)} starting blocks"


def _build_polynomial(module, settings, solver, count):
    operator = settings.transfer[0]
    matrix = operator.matrix()
    system = sparse_system(matrix, count or 2, seed=settings.seed + 1)
    family = solver.family

    def features():
        return family.features_of(system.matvec, system.size, system.batch_size, settings.seed)

    options = {"rtol": settings.cg_rtol, "maxiter": 20 * system.size}
    tasks = TaskBatch(system, features())
    return tasks, options, polynomial_contenders(solver, system, features, options), \
        f"{operator.name} ({system.size} unknowns), {system.batch_size} right-hand sides"


def _build_invsqrt(module, settings, solver, count):
    operator = settings.transfer[0]
    matrix = operator.matrix()
    system = sparse_system(matrix, count or 2, seed=settings.seed + 1)
    system = LinearSystem(system.matrix, system.rhs,
                          exact_inverse_sqrt(operator, matrix, system.rhs))
    family = solver.family

    def features():
        return family.features_of(system.matvec, system.size, system.batch_size, settings.seed)

    options = {"fixed_iterations": solver.metasolver.degree, "rtol": 0.0,
               "divergence_factor": 1e300}
    return TaskBatch(system, features()), options, \
        invsqrt_contenders(solver, system, operator, features, options, family.probe_matvecs), \
        f"A^(-1/2) b on {operator.name} ({system.size} unknowns), {system.batch_size} " \
        "right-hand sides"


#: The experiments ``metasolve bench`` covers: their models (first found is used) and cases.
SUPPORTED: dict[str, ExperimentCase] = {
    "poisson-jacobi": ExperimentCase(("p0-L_eps-1e-06", "p0.01-L_eps-1e-06", "p0-L_m-25",
                                      "p0.01-L_m-5", "*"), None, _build_guess),
    "elasticity-iccg": ExperimentCase(("L_eps-1e-06", "*"), None, _build_iccg),
    "neural-scs-kalman": ExperimentCase(("*neural_mlp", "*"), 32, _build_scs),
    "neural-scs-lasso": ExperimentCase(("*neural_mlp", "*"), 32, _build_scs),
    "neural-scs-lasso-variants": ExperimentCase(("original-neural_mlp", "*"), 32, _build_scs),
    "r2n2-chandrasekhar": ExperimentCase(("r2n2", "*"), 100, _build_nonlinear),
    "autospec-linear": ExperimentCase(("preconditioner",), 2, _build_polynomial),
    "r2n2-linear": ExperimentCase(("multi", "a123", "a1", "*"), None, _build_linear_r2n2),
    "autospec-eigen": ExperimentCase(("eigen",), None, _build_eigen),
    "r2n2-vanderpol": ExperimentCase(("p3", "*"), None, _build_ivp),
    "robertson-newton-sor": ExperimentCase(("both-L_eps-1e-09", "*L_eps*", "*"), 200,
                                           _build_robertson),
    "autospec-invsqrt": ExperimentCase(("invsqrt",), 2, _build_invsqrt),
}


def _scale_flag(scale: str) -> str:
    return "--quick" if scale == "quick" else "" if scale == "full" else f"--scale {scale}"


def find_model(name: str, scale: str, out_dir) -> Path:
    """The model file of experiment ``name`` at ``scale`` under ``out_dir`` that its bench case
    uses; :class:`MissingModel` naming the training command when there is none."""
    folder = Path(out_dir) / name / scale / "models"
    for pattern in SUPPORTED[name].models:
        found = sorted(folder.glob(f"{pattern}.safetensors"))
        if found:
            return found[0]
    command = " ".join(filter(None, ("metasolve reproduce", name, _scale_flag(scale),
                                     f"--out {out_dir}")))
    wanted = SUPPORTED[name].models[0]
    raise MissingModel(f"no trained model for {name} at the {scale} scale in {folder} (wanted "
                       f"{wanted}.safetensors); train it with `{command}`")


def check_supported(name: str) -> None:
    """:class:`BenchUnsupported` (saying why) for an experiment without a bench case."""
    if name in SUPPORTED:
        return
    if name not in CATALOG:
        raise BenchUnsupported(f"unknown experiment {name!r}; available: {sorted(CATALOG)}")
    reason = UNSUPPORTED.get(name, "no bench case has been written for it")
    raise BenchUnsupported(f"metasolve bench does not cover {name}: {reason}. Covered: "
                           f"{sorted(SUPPORTED)}")


def bench(name: str, scale: str = "quick", out_dir="metasolve-out", *, repeats: int = 5,
          threads="1", count: int | None = None, json_path=None, plot=None,
          progress: bool = True) -> dict:
    """Bench experiment ``name`` with the model ``metasolve reproduce NAME`` saved at ``scale``
    under ``out_dir`` (``OUT/NAME/SCALE/models``): its test tasks (the first ``count``; each
    case has its default) to the experiment's tolerance, every contender timed in ``repeats``
    interleaved rounds under ``threads`` (``"1"``, ``"default"``, or both: ``"1,default"``).
    Writes the records to ``json_path`` (default ``OUT/NAME/SCALE/NAME-bench.json``) and, with
    ``plot``, a figure. Returns ``{"records", "tables", "json", "plot", "model"}``.

    Raises :class:`BenchUnsupported` for an experiment without a case and
    :class:`MissingModel` when the model is not there."""
    check_supported(name)
    module = get(name)
    if scale not in module.SCALES:
        raise ValueError(f"{name} has the scales {sorted(module.SCALES)}, not {scale!r}")
    repeats = check_count("repeats", repeats, minimum=1)
    count = check_count("count", count, minimum=1, allow_none=True)
    thread_list = [check_threads(t) for t in str(threads).split(",")]
    path = find_model(name, scale, out_dir)  # before any folder is created for the outputs
    json_path = check_file_target(
        "records file", json_path or Path(out_dir) / name / scale / f"{name}-bench.json")
    plot_path = None if plot is None else check_file_target("plot file", plot)
    entry = SUPPORTED[name]
    settings = module.SCALES[scale]
    solver = load(path)
    tasks, options, contenders, case = entry.build(module, settings, solver,
                                                   count or entry.count)
    seconds, source = _train_seconds(solver, path.parent.parent, name, scale)
    tolerance = ", ".join(f"{k} {v:g}" for k, v in options.items()
                          if k in ("rtol", "atol") and v) or "the method's tolerance"
    if isinstance(tasks.problem, ConeProgram):
        tolerance = f"eps_abs = eps_rel = {solver.classical_method.eps_abs:g} (scs's test)"
    elif options.get("fixed_iterations") is not None and \
            isinstance(tasks.problem, InitialValueProblem):
        tolerance = (f"a fixed budget of {options['fixed_iterations']} steps for the "
                     "fixed-step integrators (errors against the reference trajectory's last "
                     "point)")
    elif options.get("fixed_iterations") is not None:
        tolerance = (f"a fixed budget of {options['fixed_iterations']} terms or products "
                     "(errors against the exact answer)")
    elif solver.monitor == "error":
        tolerance += " (metasolve: relative error; scipy/pyamg: relative residual)"
    reference = None if isinstance(tasks.problem, ConeProgram) else _reference(tasks.problem)
    bench_case = BenchCase(name, case, tolerance, tasks.problem.batch_size, contenders,
                           reference=reference, train_seconds=seconds, train_source=source,
                           settings={"scale": scale, "model": path.stem})
    records = []
    for t in thread_list:
        timed = time_case(bench_case, repeats=repeats, threads=t, progress=progress)
        records += case_records(bench_case, timed, repeats, t)
    write_records(json_path, records)
    if plot_path is not None:
        plot_path = save_figure(bench_figure(records), plot_path)
    return {"records": records, "tables": bench_tables(records), "json": json_path,
            "plot": plot_path, "model": path}


def bench_saved_model(path, *, count: int = 64, seed: int = 12345, repeats: int = 5,
                      threads="1", json_path=None, plot=None, progress: bool = True,
                      **options) -> dict:
    """Bench a saved model (``metasolve bench --model FILE``) on ``count`` tasks drawn from the
    family stored in it (``seed``), with run ``options`` (``rtol``, ``maxiter``). Writes the
    records to ``json_path`` (default beside the file: ``FILE-bench.json``)."""
    path = Path(path)
    count = check_count("count", count, minimum=1)
    if options.get("rtol") is not None:
        check_positive("rtol", options["rtol"])
    json_path = check_file_target("records file",
                                  json_path or path.with_name(f"{path.stem}-bench.json"))
    plot_path = None if plot is None else check_file_target("plot file", plot)
    solver = load(path)
    if solver.family is None:
        raise BenchUnsupported(f"{path} stores no task family to draw tasks from; bench it from "
                               "Python with metasolve.bench_model(solver, tasks)")
    tasks = solver.family.sample(count, seed=seed)
    if isinstance(tasks.problem, ConeProgram):
        options.pop("rtol", None)
    result = bench_model(solver, tasks, repeats=repeats, threads=threads, progress=progress,
                         case=f"{solver.family.name} {path.stem}, {count} tasks",
                         settings={"model": path.stem},
                         **{k: v for k, v in options.items() if v is not None})
    write_records(json_path, result["records"])
    if plot_path is not None:
        plot_path = save_figure(bench_figure(result["records"]), plot_path)
    return {**result, "json": json_path, "plot": plot_path, "model": path}
