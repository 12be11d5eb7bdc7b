"""Optional dependencies, imported where they are used, with an error that names the extra.

metasolve's core (the solvers, training, the Poisson, Robertson, AutoSpec and R2N2 experiments)
needs torch, NumPy, SciPy and the like only. Three groups of heavy packages are optional extras:

* ``conic``: ``cvxpy`` (builds the cone programs of the Lasso and Kalman families) and ``scs``
  (the reference solver the PyTorch SCS is checked against and warm-started into);
* ``fem``: ``scikit-fem`` (assembles the elastic beam of the ICCG experiment);
* ``ray``: ``ray`` (the engine that runs independent jobs on a Ray runtime or cluster,
  ``reproduce --engine ray``; :mod:`metasolve.parallel`);
* ``bench``: ``pyamg`` (smoothed-aggregation multigrid, a strong classical solver of ``metasolve
  bench``) and ``threadpoolctl`` (single-thread BLAS in its timings; without it only torch is
  limited).

``pip install "metasolve[conic,fem,ray,bench]"`` installs them all; the development extra ``dev``
includes them.
"""

from __future__ import annotations

import importlib

#: module name -> (the package to install, the extra that installs it)
OPTIONAL = {"cvxpy": ("cvxpy", "conic"), "scs": ("scs", "conic"),
            "skfem": ("scikit-fem", "fem"), "ray": ("ray", "ray"),
            "pyamg": ("pyamg", "bench")}


def require(module: str, purpose: str):
    """Import and return optional ``module``; if it is missing, raise an ImportError that says
    what needs it (``purpose``) and how to install it.

    >>> require("cvxpy", "the Lasso family").__name__
    'cvxpy'
    """
    package, extra = OPTIONAL[module]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose}: the optional package {package} is not installed; "
                          f'install it with: pip install "metasolve[{extra}]"') from exc
