"""Small synthetic symmetric positive definite operators known by their spectrum: the training
distribution of AutoSpec (summary: "trained on small problems"; issue: spectra with condition
numbers up to 1e6, clustered, uniform, with outliers).

An instance is ``diag(lambda) x = b`` (:class:`~metasolve.problems.DiagonalSystem`): for
a polynomial method only the spectrum and the right-hand side's components in the eigenbasis
matter, so a diagonal operator is every symmetric operator with that spectrum, and a matvec is one
elementwise product. Each instance draws

* a largest eigenvalue ``lambda_max = 10^U(-2, 2)`` (the engine must be scale free) and a condition
  number ``kappa = 10^U(log10 kappa_min, log10 kappa_max)``, both attained exactly;
* a shape, uniformly among :data:`SPECTRUM_KINDS`:

  - ``uniform``: eigenvalues uniform on ``[lambda_min, lambda_max]``;
  - ``geometric``: log-uniform (evenly spread over the decades);
  - ``clustered``: 2 to 6 tight clusters (relative width 1e-3 to 1e-1) at log-uniform centres;
  - ``outliers``: a uniform bulk with a smaller condition number and 1 to 5 small outliers;
  - ``laplacian``: the density of states of a Dirichlet Laplacian in 1, 2 or 3 dimensions
    (``sum_i sin^2(pi u_i / 2)`` with ``u_i`` uniform), mapped to ``[lambda_min, lambda_max]``:
    the shape of the PDE matrices AutoSpec is transferred to;

* a standard normal right-hand side ``b``; the stored solution is ``A^{-1} b`` (``function =
  "inverse"``, a linear solve) or ``A^{-1/2} b`` (``"inverse-sqrt"``, the matrix-function task).

The features are a matrix-free probe seeded from the instance's stream, either ``s`` Lanczos
steps (:func:`metasolve.probes.lanczos_probe`) or subspace iteration on a block of ``s`` vectors
(:func:`metasolve.probes.subspace_probe`): ``s`` Ritz values then their ``s`` residual norms,
raw (scale included). :func:`metasolve.learned.autospec.probe_inputs` makes them scale free.
"""

from __future__ import annotations

import math

import torch

from ..probes import lanczos_probe, subspace_probe
from ..problems import DiagonalSystem, EigenProblem
from ..solvers.subspace import FilteredSubspaceIteration, filter_features
from ..validation import check_choice, check_count, check_finite_number
from .base import TaskBatch, TaskFamily, register_family

SPECTRUM_KINDS = ("uniform", "geometric", "clustered", "outliers", "laplacian")
PROBES = ("lanczos", "subspace")
FUNCTIONS = {"inverse": lambda t: 1 / t, "inverse-sqrt": torch.rsqrt}


def _uniform(n, generator, low=0.0, high=1.0):
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _unit_spectrum(kind: str, size: int, kappa: float, generator: torch.Generator) -> torch.Tensor:
    """``size`` eigenvalues in ``[1 / kappa, 1]`` of the given shape, both ends attained."""
    low = 1.0 / kappa
    if kind == "uniform":
        values = _uniform(size, generator, low, 1.0)
    elif kind == "geometric":
        values = torch.exp(_uniform(size, generator, math.log(low), 0.0))
    elif kind == "clustered":
        clusters = int(torch.randint(2, 7, (1,), generator=generator))
        centres = torch.exp(_uniform(clusters, generator, math.log(low), 0.0))
        widths = 10 ** _uniform(clusters, generator, -3.0, -1.0)
        member = torch.randint(0, clusters, (size,), generator=generator)
        noise = torch.randn(size, generator=generator, dtype=torch.float64)
        values = (centres[member] * torch.exp(widths[member] * noise)).clamp(low, 1.0)
    elif kind == "outliers":
        bulk_low = low ** float(_uniform(1, generator, 0.3, 0.7))
        count = int(torch.randint(1, 6, (1,), generator=generator))
        values = _uniform(size, generator, bulk_low, 1.0)
        values[:count] = torch.exp(_uniform(count, generator, math.log(low), math.log(bulk_low)))
    elif kind == "laplacian":
        dimension = int(torch.randint(1, 4, (1,), generator=generator))
        u = torch.rand(size, dimension, generator=generator, dtype=torch.float64)
        density = torch.sin(torch.pi * u / 2).pow(2).sum(dim=1) / dimension
        density = (density - density.min()) / (density.max() - density.min())
        values = low + (1.0 - low) * density
    else:
        raise ValueError(f"kind must be one of {SPECTRUM_KINDS}, got {kind!r}")
    values[0], values[-1] = low, 1.0
    return values


@register_family
class SpectrumFamily(TaskFamily):
    """Diagonal SPD operators with varied spectra and a Lanczos probe of each (see module doc).

    Args:
        size: ``N``, eigenvalues per operator.
        probe_steps: ``s``, Lanczos steps or block size of the probe (``2 s`` features).
        kappa_min, kappa_max: range of the condition number (log-uniform).
        kinds: the spectrum shapes to draw from.
        probe: ``"lanczos"`` or ``"subspace"``; ``probe_iterations``: the subspace iterations.
        function: ``"inverse"`` (solution ``A^{-1} b``) or ``"inverse-sqrt"`` (``A^{-1/2} b``).
    """

    name = "spectrum"

    def __init__(self, size: int = 256, probe_steps: int = 10, kappa_min: float = 10.0,
                 kappa_max: float = 1e6, kinds: tuple[str, ...] = SPECTRUM_KINDS,
                 probe: str = "lanczos", probe_iterations: int = 2, function: str = "inverse"):
        self.size = check_count("size", size, minimum=2)
        self.probe_steps = check_count("probe_steps", probe_steps, minimum=2)
        if self.probe_steps > self.size:
            raise ValueError(f"probe_steps must be at most size ({size}), got {probe_steps}")
        self.kappa_min = check_finite_number("kappa_min", kappa_min)
        self.kappa_max = check_finite_number("kappa_max", kappa_max)
        if not 1 < self.kappa_min <= self.kappa_max:
            raise ValueError(f"need 1 < kappa_min <= kappa_max, got {kappa_min}, {kappa_max}")
        kinds = tuple(kinds)
        unknown = sorted(set(kinds) - set(SPECTRUM_KINDS))
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty subset of {SPECTRUM_KINDS}, got {kinds}")
        self.kinds = kinds
        self.probe = check_choice("probe", probe, PROBES)
        self.probe_iterations = check_count("probe_iterations", probe_iterations)
        self.function = check_choice("function", function, tuple(FUNCTIONS))

    @classmethod
    def declared_size(cls, config):
        size = check_count("size", config.get("size", 256), minimum=2)
        steps = check_count("probe_steps", config.get("probe_steps", 10), minimum=2)
        return size * (steps + 2)  # a spectrum, a right-hand side and the probe's vectors

    def config(self):
        return {"size": self.size, "probe_steps": self.probe_steps, "kappa_min": self.kappa_min,
                "kappa_max": self.kappa_max, "kinds": list(self.kinds), "probe": self.probe,
                "probe_iterations": self.probe_iterations, "function": self.function}

    @property
    def probe_matvecs(self) -> int:
        """Products one probe costs."""
        if self.probe == "lanczos":
            return self.probe_steps
        return self.probe_steps * (self.probe_iterations + 1)

    def features_of(self, matvec, size: int, batch: int, seed: int) -> torch.Tensor:
        """This family's probe features of any operator (``matvec``, order ``size``)."""
        if self.probe == "lanczos":
            return probe_features(matvec, size, self.probe_steps, batch, seed)
        probe = subspace_probe(matvec, size, self.probe_steps, self.probe_iterations, batch, seed)
        return torch.cat([probe.ritz_values, probe.residual_norms], dim=1)

    @property
    def feature_dim(self) -> int:
        return 2 * self.probe_steps

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        log_kappa = _uniform(n, generator, math.log10(self.kappa_min), math.log10(self.kappa_max))
        scale = 10 ** _uniform(n, generator, -2.0, 2.0)
        choice = torch.randint(0, len(self.kinds), (n,), generator=generator)
        spectra = torch.stack([
            scale[i] * _unit_spectrum(self.kinds[int(choice[i])], self.size,
                                      float(10 ** log_kappa[i]), generator)
            for i in range(n)])
        rhs = torch.randn(n, self.size, generator=generator, dtype=torch.float64)
        probe_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        system = DiagonalSystem(spectra, rhs, FUNCTIONS[self.function](spectra) * rhs)
        return TaskBatch(system, self.features_of(system.matvec, self.size, n, probe_seed))


def probe_features(matvec, size: int, steps: int, batch: int, seed: int) -> torch.Tensor:
    """``(B, 2 s)``: the Ritz values then the residual norms of an ``s``-step Lanczos probe."""
    probe = lanczos_probe(matvec, size=size, steps=steps, batch=batch, seed=seed)
    return torch.cat([probe.ritz_values, probe.residual_norms], dim=1)


def diagonal_eigen_start(tasks: TaskBatch, block: int, generator: torch.Generator
                         ) -> tuple[DiagonalSystem, torch.Tensor, torch.Tensor]:
    """From sampled spectra (:class:`SpectrumFamily` tasks): the diagonal operator of each
    spectrum in ascending order, a random starting block ``(n, N, block)`` drawn from
    ``generator``, and the probe's bound on the top of each spectrum (its largest Ritz value
    plus that value's residual norm)."""
    spectra = tasks.problem.eigenvalues.sort(dim=1).values
    probe = tasks.features.shape[1] // 2
    upper = tasks.features[:, probe - 1] + tasks.features[:, -1]
    operator = DiagonalSystem(spectra, torch.ones_like(spectra), torch.zeros_like(spectra))
    start = torch.randn(len(tasks), spectra.shape[1], block, generator=generator,
                        dtype=torch.float64)
    return operator, start, upper


@register_family
class FilterStateFamily(TaskFamily):
    """States of Chebyshev-filtered subspace iteration on synthetic spectra: the training
    distribution of a learned eigenvalue filter (AutoSpec task (b)).

    Each instance draws a spectrum as :class:`SpectrumFamily` does (``size`` eigenvalues,
    ascending), bounds its top with a Lanczos probe of ``probe_steps`` steps, runs
    :class:`~metasolve.solvers.subspace.FilteredSubspaceIteration` (the Chebyshev filter of
    ``degree``) from a random block of ``block`` vectors for a random number of iterations in
    ``0 .. iterations``, and keeps that iteration's filter features (Ritz values, residual
    norms, upper bound). The problem is ``diag(lambda)`` with ``b = 1``, so a filter run on it
    as a :class:`~metasolve.solvers.chebyshev_expansion.ChebyshevSeries` returns its values at
    the eigenvalues, which :class:`~metasolve.training.FilterGapLoss` scores.
    """

    name = "filter_state"

    def __init__(self, size: int = 512, block: int = 15, degree: int = 20, iterations: int = 4,
                 probe_steps: int = 20, kappa_min: float = 10.0, kappa_max: float = 1e6,
                 kinds: tuple[str, ...] = SPECTRUM_KINDS):
        self.spectra = SpectrumFamily(size, probe_steps, kappa_min, kappa_max, kinds)
        self.block = check_count("block", block, minimum=1)
        if self.block >= size:
            raise ValueError(f"block must be below size ({size}), got {block}")
        self.degree = check_count("degree", degree, minimum=1)
        self.iterations = check_count("iterations", iterations)

    @classmethod
    def declared_size(cls, config):
        size = check_count("size", config.get("size", 512), minimum=2)
        block = check_count("block", config.get("block", 15), minimum=1)
        steps = check_count("probe_steps", config.get("probe_steps", 20), minimum=2)
        return size * (block + steps + 2)  # the block of vectors besides a spectrum's probe

    def config(self):
        spectra = self.spectra.config()
        return {"size": spectra["size"], "block": self.block, "degree": self.degree,
                "iterations": self.iterations, "probe_steps": spectra["probe_steps"],
                "kappa_min": spectra["kappa_min"], "kappa_max": spectra["kappa_max"],
                "kinds": spectra["kinds"]}

    @property
    def feature_dim(self) -> int:
        return 2 * self.block + 1

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        operator, start, upper = diagonal_eigen_start(self.spectra.sample_with(n, generator),
                                                      self.block, generator)
        stop = torch.randint(0, self.iterations + 1, (n,), generator=generator)
        problem = EigenProblem(operator, start, upper, self.block)
        method = FilteredSubspaceIteration(self.degree)
        state = method.init(problem, start, {})
        ritz, residuals = state["ritz"].clone(), state["residuals"].clone()
        for t in range(1, self.iterations + 1):
            state = method.step(problem, state, {})
            here = stop == t
            ritz[here], residuals[here] = state["ritz"][here], state["residuals"][here]
        return TaskBatch(operator, filter_features(ritz, residuals, upper))
