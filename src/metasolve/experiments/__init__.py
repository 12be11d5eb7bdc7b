"""Paper experiments: each one a task family, solver, meta-solver, loss and settings, plus the
paper's numbers, so ``metasolve reproduce NAME`` prints ours beside theirs (docs/architecture.md,
convention 10).

An experiment module is settings, cells and the paper's numbers. It defines ``NAME``, ``TITLE``,
``SCALES`` (named settings), optionally ``cells(settings)`` (the independent units of work, each
a dict of the keys that tell ``run_cell`` what to do, slowest first; one cell if absent), a
module-level ``run_cell(job)`` (one cell, run in a worker process, returning a dict with
``records`` and a short ``label`` for the progress display), ``tables(records)`` (a list of
:class:`~metasolve.evaluation.render.Table`, rendered for the terminal and as Markdown by shared
code) and ``plot(results, path)``. :mod:`metasolve.runner` runs them.
"""

from __future__ import annotations

from . import (
    autospec_eigen,
    autospec_invsqrt,
    autospec_linear,
    elasticity_iccg,
    neural_scs_kalman,
    neural_scs_lasso,
    neural_scs_lasso_variants,
    poisson_jacobi,
    r2n2_chandrasekhar,
    r2n2_linear,
    r2n2_vanderpol,
    robertson_newton_sor,
)

EXPERIMENTS = {module.NAME: module
               for module in (poisson_jacobi, robertson_newton_sor, elasticity_iccg,
                              autospec_linear, autospec_eigen, autospec_invsqrt,
                              r2n2_linear, r2n2_chandrasekhar, r2n2_vanderpol,
                              neural_scs_lasso, neural_scs_kalman, neural_scs_lasso_variants)}


def get(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]
