"""The paper experiments at a glance, readable without importing them (or torch).

``metasolve list`` and the argument checks of ``metasolve reproduce`` read this catalog, so they
answer at once; the experiment modules (:mod:`metasolve.experiments`) take their ``TITLE`` from
it, and ``tests/test_cli.py`` checks that every entry's scales are the module's ``SCALES``.

Each scale carries the wall-clock of a measured run on 2 CPU cores with the command that
measured it (a :class:`Timing`), or ``None`` where no run of the current settings was timed.
The commands run from the repository root; unless they say otherwise they use the default of
2 worker processes. Most come from docs/RESULTS.md (the ``# 763 s`` beside each command);
``Timing.note`` says where one does not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """The wall-clock ``seconds`` of ``command`` on 2 CPU cores (``note``: any caveat)."""

    seconds: float
    command: str
    note: str = ""


@dataclass(frozen=True)
class Entry:
    """One experiment: its ``name`` (``metasolve reproduce NAME``), the module under
    :mod:`metasolve.experiments` that defines it, its ``title`` and its ``scales`` (name ->
    measured :class:`Timing` or ``None``; ``full`` first, the default of ``reproduce``)."""

    name: str
    module: str
    title: str
    scales: dict[str, Timing | None]


def _reproduce(name: str, *options: str) -> str:
    return " ".join(("metasolve reproduce", name) + options)


#: Quick-scale times that docs/RESULTS.md does not give: from the runs of every experiment at
#: the quick scale, one after the other on 2 cores, that checked the architecture rework's
#: records against the earlier code's (the same command with --no-progress, timed whole).
_COMPARISON = "timed in the quick-scale comparison runs of the architecture rework"


_ENTRIES = (
    Entry("poisson-jacobi", "poisson_jacobi",
          "Learned initial guesses for Jacobi on 1D Poisson (GBMS paper, Table 3)",
          {"full": Timing(2142, _reproduce("poisson-jacobi", "--workers 2", "--restart",
                                           "--json docs/results/poisson-jacobi.json")),
           "quick": Timing(135, _reproduce("poisson-jacobi", "--quick")),
           "smoke": None,
           "adam": Timing(1458, _reproduce("poisson-jacobi", "--scale adam", "--workers 2",
                                           "--json docs/results/poisson-jacobi-adam.json"),
                          "measured before the training cap of 300 existed")}),
    Entry("robertson-newton-sor", "robertson_newton_sor",
          "Learned relaxation factors and initial guesses for Newton-SOR on Robertson's "
          "equation (GBMS paper, Table 1)",
          {"full": Timing(960, _reproduce("robertson-newton-sor", "--workers 2",
                                          "--json docs/results/robertson-newton-sor.json")),
           "paper-width": Timing(1674, _reproduce(
               "robertson-newton-sor", "--scale paper-width", "--workers 2",
               "--json docs/results/robertson-newton-sor-paper-width.json"),
               "measured when these settings were the full scale"),
           "quick": Timing(80, _reproduce("robertson-newton-sor", "--quick", "--workers 2"),
                           _COMPARISON),
           "smoke": None}),
    Entry("elasticity-iccg", "elasticity_iccg",
          "Learned shifts for ICCG(alpha) on a clamped elastic beam (GBMS paper, Table 2)",
          {"full": None,
           "quick": Timing(73, _reproduce("elasticity-iccg", "--quick", "--workers 2",
                                           "--json docs/results/elasticity-iccg-quick.json")),
           "smoke": None,
           "rows": Timing(681, _reproduce("elasticity-iccg", "--scale rows", "--workers 2",
                                          "--json docs/results/elasticity-iccg-rows.json"),
                          "on a machine shared with one other job for its first minutes"),
           "full-section-follows-w": None,
           "quick-section-follows-w": None}),
    Entry("autospec-linear", "autospec_linear",
          "AutoSpec (a): learned polynomial solvers, trained on synthetic spectra, transferred",
          {"full": Timing(763, _reproduce("autospec-linear", "--workers 2",
                                           "--json docs/results/autospec-linear.json")),
           "quick": Timing(179, _reproduce("autospec-linear", "--quick", "--workers 2")),
           "smoke": None}),
    Entry("autospec-eigen", "autospec_eigen",
          "AutoSpec (b): a learned filter for subspace iteration, smallest eigenpairs",
          {"full": Timing(687, _reproduce("autospec-eigen", "--restart",
                                          "--json docs/results/autospec-eigen.json")),
           "quick": Timing(24, _reproduce("autospec-eigen", "--quick", "--workers 2"),
                           _COMPARISON),
           "smoke": None}),
    Entry("autospec-invsqrt", "autospec_invsqrt",
          "AutoSpec (c): learned Chebyshev series for A^(-1/2) b, trained small, transferred",
          {"full": Timing(206, _reproduce("autospec-invsqrt",
                                          "--json docs/results/autospec-invsqrt.json")),
           "quick": Timing(48, _reproduce("autospec-invsqrt", "--quick", "--workers 2"),
                           _COMPARISON),
           "smoke": None}),
    Entry("r2n2-linear", "r2n2_linear",
          "R2N2 against GMRES on 5 x 5 linear systems (R2N2 paper, sec. 4.1, Figures 4-6, SM4)",
          {"full": Timing(208, _reproduce("r2n2-linear", "--workers 2",
                                          "--json docs/results/r2n2-linear.json")),
           "quick": Timing(24, _reproduce("r2n2-linear", "--quick")),
           "smoke": None}),
    Entry("r2n2-chandrasekhar", "r2n2_chandrasekhar",
          "R2N2 against Newton-Krylov-GMRES on Chandrasekhar's H-equation (R2N2 paper, "
          "sec. 4.2, Figures 7-8)",
          {"full": Timing(169, _reproduce("r2n2-chandrasekhar",
                                          "--json docs/results/r2n2-chandrasekhar.json")),
           "quick": Timing(20, _reproduce("r2n2-chandrasekhar", "--quick")),
           "smoke": None}),
    Entry("r2n2-vanderpol", "r2n2_vanderpol",
          "A learned 3-stage integrator against RK-3 on van der Pol (R2N2 paper, sec. 4.3, "
          "Fig. 9)",
          {"full": Timing(71, _reproduce("r2n2-vanderpol", "--workers 2",
                                         "--json docs/results/r2n2-vanderpol.json")),
           "quick": Timing(14, _reproduce("r2n2-vanderpol", "--quick")),
           "smoke": None}),
    Entry("neural-scs-lasso", "neural_scs_lasso",
          "Neural acceleration of SCS: Lasso (neural SCS paper, Fig. 1a, 2a)",
          {"full": Timing(441, _reproduce("neural-scs-lasso",
                                          "--json docs/results/neural-scs-lasso.json")),
           "quick": Timing(33, _reproduce("neural-scs-lasso", "--quick")),
           "smoke": None,
           "paper-corrections": None}),
    Entry("neural-scs-kalman", "neural_scs_kalman",
          "Neural acceleration of SCS: robust Kalman filtering (neural SCS paper, Fig. 1b, 2b)",
          {"full": Timing(2100, _reproduce("neural-scs-kalman",
                                           "--json docs/results/neural-scs-kalman.json"),
                          "about 35 minutes"),
           "quick": Timing(49, _reproduce("neural-scs-kalman", "--quick")),
           "smoke": None,
           "paper-corrections": None}),
    Entry("neural-scs-lasso-variants", "neural_scs_lasso_variants",
          "Neural acceleration of SCS: small-Lasso variants (neural SCS paper, sec. 6)",
          {"full": Timing(1589, _reproduce("neural-scs-lasso-variants", "--workers 1",
                                           "--json docs/results/"
                                           "neural-scs-lasso-variants.json"),
                          "one worker process"),
           "quick": Timing(26, _reproduce("neural-scs-lasso-variants", "--quick")),
           "smoke": None,
           "paper-corrections": None}),
)

#: name -> :class:`Entry`, in the order ``metasolve list`` prints them.
CATALOG: dict[str, Entry] = {entry.name: entry for entry in _ENTRIES}


def format_seconds(seconds: float) -> str:
    """A duration for people: ``"14 s"``, ``"2.3 min"``, ``"1.2 h"``.

    >>> format_seconds(14.2), format_seconds(135), format_seconds(2142), format_seconds(7200)
    ('14 s', '2.2 min', '35.7 min', '2.0 h')
    """
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
