"""A classical method plus a meta-solver: the object users train, save, load and solve with.

:meth:`LearnedSolver.save` and :meth:`LearnedSolver.load` (also ``metasolve.save`` and
``metasolve.load``) store it in the file format of :mod:`metasolve.artifact`: the trained tensors
(``LearnedSolver.model``) and a JSON document naming the method, meta-solver architecture, task
family, monitor, training settings and metasolve version, from which the registries rebuild it,
and what the safeguard needs: the training features' envelope, the classical method with its
configuration, and the classical method's iteration counts on the training tasks.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..artifact import ArtifactError, json_type, json_type_name, read_tensors, write_tensors
from ..solution import ConvergenceError, Solution, SolutionJoin
from ..solvers.base import MONITORS, IterativeMethod, chunk_rows, run
from ..solvers.registry import METHODS, method_from_config
from ..tasks.base import FAMILIES, TaskBatch, TaskFamily, family_from_config
from ..validation import check_choice, check_count, check_device
from .metasolver import METASOLVERS, MetaSolver, heads_sizes, metasolver_from_config
from .safeguard import (
    BUDGET_CHECKS,
    GUESS_CHECKS,
    calibrate,
    feature_envelope,
    outside_envelope,
    safeguarded_solve,
)

ARTIFACT_KIND = "learned_solver"

#: The most weights (entries of the state dict: the meta-solver's, and the method's when it has
#: any) a file may describe for :meth:`LearnedSolver.load` to build it: 10 million, 80 MB in
#: float64. The count is computed from the JSON alone before anything is built; raise it with
#: ``load(path, max_parameters=...)``.
MAX_PARAMETERS = 10_000_000

#: The largest ``TaskFamily.declared_size`` (entries of the largest data the family builds, e.g.
#: ``2 n^2`` for a 1D Poisson family of size ``n``) :meth:`LearnedSolver.load` rebuilds a stored
#: family for: 2**24, 128 MB in float64. Raise it with ``load(path, max_family_size=...)``.
MAX_FAMILY_SIZE = 2**24

# The keys a learned-solver document has, and the JSON types each may take.
_DOCUMENT_FIELDS = {"kind": (str,), "metasolve_version": (str,), "method": (dict,),
                    "metasolver": (dict,), "family": (dict, type(None)), "monitor": (str,),
                    "settings": (dict, type(None)), "feature_envelope": (list, type(None)),
                    "classical_method": (dict, type(None)), "calibration": (dict, type(None))}
_REQUIRED = ("kind", "method", "metasolver", "feature_envelope", "classical_method")


def _mapping(path, what: str, value, keys: dict[str, tuple] | None = None,
             required: tuple[str, ...] = ()) -> dict:
    """``value`` as a JSON object whose listed ``keys`` have the listed types."""
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: {what} must be a JSON object, got a "
                            f"{json_type(value)}: {_short(value)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise ArtifactError(f"{path}: {what} lacks the key(s) {missing}")
    for key, types in (keys or {}).items():
        if key in value and not isinstance(value[key], types):
            raise ArtifactError(f"{path}: {what}[{key!r}] must be a JSON "
                                f"{' or '.join(json_type_name(t) for t in types)}, got a "
                                f"{json_type(value[key])}: {_short(value[key])}")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _registered(path, what: str, name, registry) -> type:
    if not isinstance(name, str) or name not in registry:
        raise ArtifactError(f"{path}: unknown {what} {_short(name)}; registered: "
                            f"{sorted(registry)}")
    return registry[name]


def _declared(path, what: str, hook, config: dict) -> int | None:
    """Call a size hook (``parameter_count``, ``declared_size``); its type and value errors
    become ArtifactErrors naming the part of the file they are about."""
    try:
        return hook(config)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise ArtifactError(f"{path}: malformed {what}: {exc}") from exc


def classical_counterpart(method: IterativeMethod,
                          problem_type: type | None = None) -> IterativeMethod:
    """The classical method a learned solver with ``method`` compares with and falls back to on
    problems of ``problem_type``: the method's own ``classical(problem_type)`` where it defines
    one (neural SCS: plain SCS with the model's settings; R2N2: GMRES, Newton-Krylov or a
    Runge-Kutta method by the problem type, which it needs), else ``method`` itself, run with
    the classical parameters (:meth:`LearnedSolver.classical_params`)."""
    classical = getattr(method, "classical", None)
    return classical(problem_type) if callable(classical) else method


def _has_weights(method: IterativeMethod) -> bool:
    return isinstance(method, nn.Module) and any(True for _ in method.parameters())


def _calibration_extras_ok(calibration: dict, length: int) -> bool:
    """The optional lists of a calibration (means and the learned method's counts) have one
    entry per tolerance: non-negative numbers, the learned 95th percentiles possibly ``None``."""
    for key in ("mean_iterations", "learned_iterations", "learned_mean_iterations"):
        values = calibration.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != length:
            return False
        for v in values:
            if v is None and key == "learned_iterations":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                return False
    return True


def check_document(path, document: dict, *, build_family: bool = True,
                   max_parameters: int = MAX_PARAMETERS,
                   max_family_size: int = MAX_FAMILY_SIZE) -> int | None:
    """Check a learned-solver document against its schema before anything is built.

    Checks every field's JSON type, that the method, meta-solver kind, head kinds and (when
    ``build_family``) the family are registered, and, arithmetically from the configs, that the
    weights they describe (``parameter_count`` of the meta-solver kind and of the method, when
    they declare it) stay within ``max_parameters`` and the family's ``declared_size`` within
    ``max_family_size``. Returns the weight count, or ``None`` if a part does not declare it.
    Raises :class:`~metasolve.ArtifactError` naming what is wrong.
    """
    if isinstance(document, dict) and document.get("kind") == ARTIFACT_KIND and \
            "feature_envelope" not in document:
        raise ArtifactError(f"{path} does not record the envelope of its training features "
                            "(written before the safeguard existed); retrain and save it again")
    if isinstance(document, dict) and document.get("kind") == ARTIFACT_KIND and \
            "classical_method" not in document:
        raise ArtifactError(f"{path} does not record its classical method (the safeguard's "
                            "fallback; written before learned solvers stored it); retrain and "
                            "save it again")
    _mapping(path, "the document", document, _DOCUMENT_FIELDS, _REQUIRED)
    if document["kind"] != ARTIFACT_KIND:
        raise ArtifactError(f"{path} holds a {document['kind']!r}, not a learned solver")
    envelope = document["feature_envelope"]
    if envelope is not None and not (
            len(envelope) == 2 and all(isinstance(row, list) for row in envelope)
            and len(envelope[0]) == len(envelope[1])
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    for row in envelope for v in row)):
        raise ArtifactError(f"{path}: feature_envelope must be two equally long lists of numbers "
                            "(the training features' minima and maxima)")
    calibration = document.get("calibration")
    if calibration is not None:
        rtols, counts = calibration.get("rtols"), calibration.get("iterations")
        if not (calibration.get("monitor") in MONITORS and isinstance(rtols, list)
                and isinstance(counts, list) and len(rtols) == len(counts)
                and all(isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0
                        for r in rtols)
                and all(c is None or (isinstance(c, int) and not isinstance(c, bool) and c >= 0)
                        for c in counts)
                and _calibration_extras_ok(calibration, len(rtols))):
            raise ArtifactError(f"{path}: calibration must name a monitor and hold equally long "
                                "lists of tolerances and iteration counts")
    unknown = sorted(set(document) - set(_DOCUMENT_FIELDS))
    if unknown:
        raise ArtifactError(f"{path}: unknown key(s) {unknown} in the document; expected "
                            f"{sorted(_DOCUMENT_FIELDS)}")
    if "monitor" in document:
        if document["monitor"] not in MONITORS:
            raise ArtifactError(f"{path}: monitor must be one of {MONITORS}, got "
                                f"{document['monitor']!r}")

    method = _mapping(path, "the method", document["method"], {"name": (str,),
                                                                "config": (dict,)},
                      ("name", "config"))
    method_cls = _registered(path, "method", method["name"], METHODS)
    metasolver = _mapping(path, "the meta-solver", document["metasolver"], {"kind": (str,)},
                          ("kind",))
    metasolver_cls = _registered(path, "meta-solver kind", metasolver["kind"], METASOLVERS)
    if "heads" in metasolver:  # head kinds and their configs, whatever the meta-solver kind
        _declared(path, "meta-solver heads", heads_sizes, metasolver["heads"])

    counts = [_declared(path, f"meta-solver ({metasolver['kind']})",
                        metasolver_cls.parameter_count, metasolver)]
    method_count = getattr(method_cls, "parameter_count", None)
    if callable(method_count):  # only methods with weights of their own declare them
        counts.append(_declared(path, f"method config ({method['name']})", method_count,
                                method["config"]))
    classical = document["classical_method"]
    if classical is not None:
        _mapping(path, "the classical method", classical, {"name": (str,), "config": (dict,)},
                 ("name", "config"))
        classical_count = getattr(_registered(path, "classical method", classical["name"],
                                              METHODS), "parameter_count", None)
        if callable(classical_count):
            counts.append(_declared(path, f"classical method config ({classical['name']})",
                                    classical_count, classical["config"]))
    total = sum(c for c in counts if c is not None)
    if total > max_parameters:
        raise ArtifactError(f"{path}: the architecture it describes has {total} weights, more "
                            f"than the limit of {max_parameters} (pass a larger "
                            "max_parameters to load a file you trust)")

    stored = document.get("family")
    if stored is not None:
        _mapping(path, "the family", stored, {"name": (str,), "config": (dict,)},
                 ("name", "config"))
        if build_family and stored["name"] in FAMILIES:
            size = _declared(path, f"family config ({stored['name']})",
                             FAMILIES[stored["name"]].declared_size, stored["config"])
            if size is not None and size > max_family_size:
                raise ArtifactError(f"{path}: family {stored['name']} {_short(stored['config'])}"
                                    f" declares size {size}, more than the limit of "
                                    f"{max_family_size} (pass a larger max_family_size to "
                                    "load a file you trust)")
    return None if None in counts else total


#: A number in a warning's text: warnings of chunked solves that differ only in their numbers
#: are one kind (:meth:`LearnedSolver._in_chunks`).
NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")


class LearnedSolver:
    """``Phi(tau; Psi(tau; omega))``: run ``method`` with the parameters ``metasolver`` predicts.

    ``model`` holds what is trained and saved: the meta-solver, plus the method when the method
    is itself an ``nn.Module`` with learned weights.

    Args:
        method: the classical iterative method ``Phi``.
        metasolver: the trained (or to-be-trained) ``Psi``.
        family: the task family it was trained on (stored in the artifact; optional).
        monitor: ``"residual"`` or ``"error"``, the norm the stopping test reads.
        settings: free-form, JSON-serialisable record of how it was trained.
        feature_envelope: ``(2, F)`` the training features' envelope (set by the trainer).
        calibration: the classical method's iteration counts on the training tasks (set by
            the trainer).
        classical_method: the classical method to compare with and fall back to (a method
            without trained weights); by default the one :func:`classical_counterpart` gives for
            the problems solved, stored by the trainer for the training tasks' problems
            (:meth:`record_training`) and kept in the artifact.

    Example:
        >>> import metasolve as ms
        >>> fam = ms.Poisson1DFamily(n=16)
        >>> psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))})
        >>> solver = ms.LearnedSolver(ms.Jacobi(), psi, family=fam)
        >>> sol = solver.solve(fam.sample(4, seed=1), rtol=1e-6, maxiter=2000)
        >>> sol.x.shape
        torch.Size([4, 16])
    """

    def __init__(self, method: IterativeMethod, metasolver: MetaSolver,
                 family: TaskFamily | None = None, monitor: str = "residual",
                 settings: dict[str, Any] | None = None,
                 feature_envelope: torch.Tensor | None = None,
                 calibration: dict | None = None,
                 classical_method: IterativeMethod | None = None):
        if not isinstance(method, IterativeMethod):
            raise TypeError(f"method must be an IterativeMethod, got {type(method).__name__}")
        if classical_method is not None:
            if not isinstance(classical_method, IterativeMethod):
                raise TypeError(f"classical_method must be an IterativeMethod, got "
                                f"{type(classical_method).__name__}")
            if _has_weights(classical_method):
                raise ValueError(f"classical_method {classical_method.name} has weights of its "
                                 "own; a classical method is one without trained weights")
        if not isinstance(metasolver, MetaSolver):
            raise TypeError(f"metasolver must be a MetaSolver, got {type(metasolver).__name__}")
        unknown = sorted(set(metasolver.outputs) - set(method.parameter_names) - {"x0"})
        if unknown:
            raise ValueError(f"metasolver outputs {unknown} are not parameters of {method.name} "
                             f"(allowed: {sorted(set(method.parameter_names) | {'x0'})})")
        if family is not None and getattr(metasolver, "in_features", None) not in (
                None, family.feature_dim):
            raise ValueError(f"metasolver expects {metasolver.in_features} features but family "
                             f"{family.name} provides {family.feature_dim}")
        self.method = method
        self.metasolver = metasolver
        # Everything trainable, under stable names: the meta-solver, and the method itself when
        # it carries learned weights (an acceleration model applied inside each step).
        parts = {"metasolver": metasolver}
        if isinstance(method, nn.Module):
            parts["method"] = method
        self.model = nn.ModuleDict(parts)
        self.family = family
        self.monitor = check_choice("monitor", monitor, MONITORS)
        self.settings = dict(settings or {})
        #: ``(2, F)`` per-feature minimum and maximum of the training features (set by the
        #: trainer), read by the safeguard's out-of-distribution test; ``None`` if untrained.
        self.feature_envelope = None if feature_envelope is None else \
            torch.as_tensor(feature_envelope, dtype=torch.float64).reshape(2, -1)
        #: The classical method's iteration counts on the training tasks (set by the trainer,
        #: :func:`~metasolve.learned.safeguard.calibrate`): the safeguard's budget for a learned
        #: attempt; ``None`` if unknown.
        self.calibration = calibration
        self._classical = classical_method

    @property
    def device(self) -> torch.device:
        """The device the solver's weights lie on (the CPU for a solver without weights)."""
        for tensor in itertools.chain(self.model.parameters(), self.model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def to(self, device) -> LearnedSolver:
        """Move the solver's weights (the meta-solver's, and the method's own) to ``device``
        for good, as ``nn.Module.to`` does; returns the solver. ``device=`` of :meth:`solve`
        moves them for one solve only."""
        self.model.to(check_device("device", device))
        return self

    @contextlib.contextmanager
    def _placed(self, device, tasks, run_options: dict):
        """The solver's weights on ``device`` for the ``with`` body (back where they were after
        it), and ``tasks`` and a given ``x0`` moved there; nothing moves for ``device=None``."""
        if device is None:
            yield tasks
            return
        device = check_device("device", device)
        if not isinstance(tasks, TaskBatch):
            raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
        if isinstance(run_options.get("x0"), torch.Tensor):
            run_options["x0"] = run_options["x0"].to(device)
        home = self.device
        if home == device:
            yield tasks.to(device)
            return
        self.model.to(device)
        try:
            yield tasks.to(device)
        finally:
            self.model.to(home)

    def classical_method_for(self, problem) -> IterativeMethod:
        """The classical method for ``problem``, the one place every comparison and fallback
        asks (``solve_baseline``, the safeguard, the calibration): the stored
        ``classical_method`` where it solves problems of this type, else
        :func:`classical_counterpart` for ``type(problem)``."""
        stored = self._classical
        if stored is not None and isinstance(problem, stored.problem_type):
            return stored
        return self._counterpart(type(problem))

    def _counterpart(self, problem_type: type | None) -> IterativeMethod:
        counterpart = classical_counterpart(self.method, problem_type)
        if counterpart is self.method and _has_weights(self.method):
            raise TypeError(f"method {self.method.name} carries trained weights of its own and "
                            "names no classical counterpart (a classical() method)")
        return counterpart

    def record_training(self, tasks: TaskBatch) -> None:
        """Remember what the safeguard needs from the training tasks: the envelope of their
        features, the classical method for their problems (:meth:`classical_method_for`) and its
        iteration counts on them."""
        self.record_training_features(tasks.features)
        try:
            self._classical = self.classical_method_for(tasks.problem)
        except TypeError:  # a method with weights of its own and no classical counterpart
            self.calibration = None
            return
        self.calibration = calibrate(self, tasks)

    def record_training_features(self, features: torch.Tensor) -> None:
        """Remember the envelope of the training features (:mod:`.safeguard`)."""
        self.feature_envelope = feature_envelope(features)

    @property
    def guess_parameters(self) -> frozenset[str]:
        """The parameters that only set the starting point: ``x0`` and the method's own
        ``guess_parameters`` (the safeguard tests them by the starting norm)."""
        return frozenset({"x0", *getattr(self.method, "guess_parameters", ())})

    @property
    def learned_guess(self) -> bool:
        """Whether the meta-solver predicts a starting point (one of :attr:`guess_parameters`)."""
        return bool(set(getattr(self.metasolver, "outputs", ()) or ()) & self.guess_parameters)

    def classical_params(self, features: torch.Tensor,
                         problem=None) -> dict[str, torch.Tensor]:
        """``theta`` of the classical method this solver falls back to and compares with: the
        meta-solver's :meth:`~MetaSolver.baseline_params` where it defines them (AutoSpec:
        Chebyshev on the probe's interval), else none, so that the method runs with its own
        classical defaults (its constructor's parameters, the zero initial guess). ``problem``
        is accepted for the signature :meth:`params` has; no classical parameter needs it."""
        if type(self.metasolver).baseline_params is MetaSolver.baseline_params:
            return {}
        return self.metasolver.baseline_params(features)

    def params(self, features: torch.Tensor, problem=None) -> dict[str, torch.Tensor]:
        """``theta = Psi(tau; omega)`` for a batch of task features. Features of another
        width than the meta-solver reads are refused with an error that names the family (and
        sizes) it was trained on.

        A head whose parameter the problem sizes (:attr:`Head.needs_problem`: a
        :class:`~metasolve.GridSineHead`'s guess, evaluated on each task's grid) needs the
        tasks' ``problem``; without it such a head is a ``ValueError`` naming ``problem``."""
        expected = getattr(self.metasolver, "in_features", None)
        if expected is not None and isinstance(features, torch.Tensor) and features.ndim == 2 \
                and features.shape[1] != expected:
            trained = "an unrecorded family" if self.family is None else \
                f"family {self.family.name} " + ", ".join(
                    f"{k}={v}" for k, v in self.family.config().items())
            sizes = {k: v for k, v in self.settings.items() if "size" in k}
            raise ValueError(f"this solver cannot apply to these tasks: they have "
                             f"{features.shape[1]} features, its meta-solver reads {expected}; "
                             f"it was trained on {trained}"
                             + "".join(f", {k}={v}" for k, v in sizes.items()))
        theta = self.metasolver(features)
        heads = getattr(self.metasolver, "heads", {})
        for name in theta:
            head = heads[name] if name in heads else None
            if head is None or not head.needs_problem:
                continue
            if problem is None:
                raise ValueError(f"problem is needed: the meta-solver's head {name!r} "
                                 f"({type(head).__name__}) is evaluated on each task's problem")
            theta[name] = head.place(theta[name], problem)
        return theta

    @property
    def classical_method(self) -> IterativeMethod:
        """The classical method this solver falls back to and compares with: the one stored
        (given, recorded for the training tasks' problems, or loaded), else the method's own
        ``classical()`` where it defines one (neural SCS: plain SCS with the model's settings),
        else the method itself (run with :meth:`classical_params`). An R2N2's depends on the
        problem type: before training, ask :meth:`classical_method_for` with a problem."""
        if self._classical is not None:
            return self._classical
        return self._counterpart(None)

    @property
    def guarded_method(self) -> IterativeMethod | None:
        """The method in its safeguarded mode, where it has one (``method.safeguarded()``:
        neural SCS, whose learned steps are tested inside the iteration; R2N2, which checks its
        convergence certificate on linear systems before the first step); else ``None``."""
        safeguarded = getattr(self.method, "safeguarded", None)
        return safeguarded() if callable(safeguarded) else None

    @property
    def method_is_trainable(self) -> bool:
        """Whether the method carries trainable weights of its own (a learned acceleration
        model), besides the meta-solver's."""
        return isinstance(self.method, nn.Module) and any(
            p.requires_grad for p in self.method.parameters())

    def deployed(self, method: IterativeMethod) -> LearnedSolver:
        """The same meta-solver (shared, not copied) driving another ``method`` that reads the
        same parameters: for example AutoSpec's polynomial coefficients as the preconditioner
        of :class:`~metasolve.solvers.ConjugateGradient`. Solves go through the same path."""
        return LearnedSolver(method, self.metasolver, family=self.family, monitor=self.monitor,
                             settings=self.settings, feature_envelope=self.feature_envelope)
        # (No calibration: it counted the iterations of this solver's method, not the other.)

    def solve(self, tasks: TaskBatch, params: dict[str, torch.Tensor] | None = None,
              safeguard: bool = True, check_guess: str = "outside", check_budget: str = "always",
              device=None,
              **run_options) -> Solution:
        """Predict ``theta`` for ``tasks`` and run the method; options go to :func:`metasolve.run`.

        ``solution.info["inference_time"]`` is the meta-solver's time and ``wall_time`` includes
        it, so wall-clock comparisons with the classical method are fair.

        With ``safeguard`` (the default) the learned part is used per instance only where it
        does not do worse than the classical method, and instances outside the training
        features are flagged (:mod:`metasolve.learned.safeguard`; ``solution.fallback``,
        ``solution.out_of_distribution``). ``safeguard=False`` runs the prediction as it is
        (training, and the papers' tables). ``check_guess`` says whose learned initial guesses
        are tested against the classical one: ``"outside"`` the training features (default),
        ``"always"`` or ``"never"``. At a fixed budget (``fixed_iterations``) the classical
        method also runs on the same budget and each instance keeps the converged result where
        only one converged, else the one with the smaller final monitored norm;
        ``check_budget`` (the same three choices, default ``"always"``) says which instances
        are compared. A method with weights of its own runs in its
        safeguarded mode where it has one (neural SCS: a learned step or start is kept only
        where it does not raise the fixed-point residual; ``solution.info["rejected_steps"]``),
        and unguarded where it has none. The safeguarded solve computes no gradient.

        ``params``, if given, is run instead of the prediction, unguarded: a dict like
        :meth:`params` returns, one row per task. Training uses it to differentiate with
        respect to ``theta`` itself (the Gauss-Newton refinement); no meta-solver runs, so
        ``inference_time`` is 0.

        ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`) runs this
        solve there: the tasks and the solver's weights are moved there for it (the weights go
        back afterwards; :meth:`to` moves them for good) and the solution's tensors lie there.
        ``None`` (default) solves where the tasks and weights lie. A malformed or unavailable
        device is a ``ValueError`` naming ``device``.

        ``chunk_size`` (one of the options): solve ``chunk_size`` tasks at a time, features,
        inference and safeguard included, and join the results (:meth:`Solution.concatenate`);
        with ``history=False`` a million small instances then fit in the memory of their
        problems and iterates (``benchmarks/million_instances.py``). Warnings are given once
        per kind, after the last chunk, saying in how many chunks they arose.
        """
        # The safeguard's budget depends on whether any task of the whole batch lies outside
        # the training features: each chunk is told, so that chunks give one batch's results.
        batch_outside = run_options.pop("_batch_outside", None)
        if run_options.get("chunk_size") is not None and isinstance(tasks, TaskBatch) \
                and self.feature_envelope is not None and batch_outside is None:
            batch_outside = bool(outside_envelope(tasks.features, self.feature_envelope).any())
        chunked = self._in_chunks(tasks, run_options, params, lambda part, given, options:
                                  self.solve(part, params=given, safeguard=safeguard,
                                             check_guess=check_guess, check_budget=check_budget,
                                             device=device, _batch_outside=batch_outside,
                                             **options))
        if chunked is not None:
            return chunked
        if device is not None:
            with self._placed(device, tasks, run_options) as placed:
                if params is not None:
                    params = {k: v.to(placed.device) for k, v in params.items()}
                return self.solve(placed, params=params, safeguard=safeguard,
                                  check_guess=check_guess, check_budget=check_budget,
                                  _batch_outside=batch_outside, **run_options)
        if params is not None:
            return self._run(tasks, None, run_options, params=params)
        if safeguard and (not self.method_is_trainable or hasattr(self.method, "safeguarded")):
            if not isinstance(tasks, TaskBatch):
                raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
            check_choice("check_guess", check_guess, GUESS_CHECKS)
            check_choice("check_budget", check_budget, BUDGET_CHECKS)
            # No gradient: the safeguard's decisions are not differentiable, and a method with
            # weights of its own would otherwise keep every iteration's graph (a learned
            # eigensolver's 300 iterations at a batch of 64 held more than 16 GB).
            with torch.no_grad():
                return safeguarded_solve(self, tasks, run_options, check_guess, check_budget,
                                         batch_outside=batch_outside)
        return self._run(tasks, self.params, run_options)

    def solve_baseline(self, tasks: TaskBatch, device=None, **run_options) -> Solution:
        """Run the classical method (:meth:`classical_method_for` the tasks' problems, with
        :meth:`classical_params`) on ``tasks``; no gradient. For neural SCS: plain SCS with the
        model's settings from the cold start; for an R2N2: GMRES, Newton-Krylov or Runge-Kutta
        (:meth:`~metasolve.learned.R2N2.classical`). ``device``: as in :meth:`solve`."""
        chunked = self._in_chunks(tasks, run_options, None, lambda part, _, options:
                                  self.solve_baseline(part, device=device, **options))
        if chunked is not None:
            return chunked
        if device is not None:
            with self._placed(device, tasks, run_options) as placed:
                return self.solve_baseline(placed, **run_options)
        if not isinstance(tasks, TaskBatch):
            raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
        with torch.no_grad():
            return self._run(tasks, self.classical_params, run_options,
                             method=self.classical_method_for(tasks.problem))

    @staticmethod
    def _in_chunks(tasks: TaskBatch, run_options: dict, params, solve) -> Solution | None:
        """``solve(part, params, options)`` on consecutive slices of ``run_options``'s
        ``chunk_size`` tasks, each written into the joined solution as it finishes; ``None``
        (and ``chunk_size`` taken out of ``run_options``) where the batch fits in one chunk.
        Per-task options and parameters (the batch as leading dimension: ``x0``, a
        per-instance ``maxiter``) are sliced; ``throw`` asks about the whole batch at the end;
        each kind of warning (its category and its text without the numbers in it) is given
        once, after the last chunk, at the caller's line, saying in how many chunks it
        arose."""
        chunk_size = check_count("chunk_size", run_options.pop("chunk_size", None), minimum=1,
                                 allow_none=True)
        if chunk_size is None or not isinstance(tasks, TaskBatch) or len(tasks) <= chunk_size:
            return None
        batch = len(tasks)
        options = dict(run_options)
        throw = options.pop("throw", False)
        join, seen, chunks = SolutionJoin(batch), {}, 0
        for begin in range(0, batch, chunk_size):
            part = slice(begin, min(begin + chunk_size, batch))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                join.add(solve(tasks.index(part), None if params is None else {
                    k: chunk_rows(v, batch, part) for k, v in params.items()},
                    {k: chunk_rows(v, batch, part) for k, v in options.items()}))
            chunks += 1
            kinds: dict = {}  # this chunk's warnings by kind, the first text of each
            for warning in caught:
                text = str(warning.message)
                kinds.setdefault((warning.category, NUMBER.sub("#", text)), text)
            for kind, text in kinds.items():
                first, count = seen.get(kind, (text, 0))
                seen[kind] = (first, count + 1)
        for (category, _), (text, count) in seen.items():
            if count > 1:
                text = (f"{text} (in {count} of the {chunks} chunks of {chunk_size} tasks; "
                        "this is the first)")
            warnings.warn(text, category, stacklevel=3)
        solution = join.result()
        if throw and not bool(solution.converged.all()):
            raise ConvergenceError(f"{solution.info.get('method', 'solve')}: "
                                   f"{solution.summary()}", solution)
        return solution

    def _run(self, tasks: TaskBatch, params_of, run_options: dict,
             params: dict[str, torch.Tensor] | None = None,
             method: IterativeMethod | None = None) -> Solution:
        # The one place where a meta-solver's parameters meet the method: prediction,
        # baseline and training solves all come through here with the same defaults.
        # ``method``: the classical counterpart (baseline) or the safeguarded mode of
        # ``self.method``; by default ``self.method`` itself.
        if not isinstance(tasks, TaskBatch):
            raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
        run_options.setdefault("monitor", self.monitor)
        inference = 0.0
        if params is None:
            start = time.perf_counter()
            params = params_of(tasks.features, tasks.problem)
            inference = time.perf_counter() - start
        solution = run(self.method if method is None else method, tasks.problem, params=params,
                       **run_options)
        solution.wall_time += inference
        solution.info["inference_time"] = inference
        return solution

    def save(self, path) -> Path:
        """Write ``path``: the trained tensors and the JSON document that rebuilds the solver
        (:mod:`metasolve.artifact`). Returns the path."""
        document = {
            "kind": ARTIFACT_KIND,
            "metasolve_version": __version__,
            "method": {"name": self.method.name, "config": self.method.config()},
            "metasolver": self.metasolver.config(),
            "family": None if self.family is None else {"name": self.family.name,
                                                        "config": self.family.config()},
            "monitor": self.monitor,
            "settings": self.settings,
            "feature_envelope": None if self.feature_envelope is None
            else self.feature_envelope.tolist(),
            "classical_method": None if self._classical is None else {
                "name": self._classical.name, "config": self._classical.config()},
            "calibration": self.calibration,
        }
        return write_tensors(path, self.model.state_dict(), document)

    @classmethod
    def load(cls, path, family: TaskFamily | None = None, *,
             max_parameters: int = MAX_PARAMETERS,
             max_family_size: int = MAX_FAMILY_SIZE) -> LearnedSolver:
        """Load a solver written by :meth:`save`; raises :class:`~metasolve.ArtifactError` if the
        file is not one, is damaged, or does not match what it describes.

        Nothing is built before the document passed :func:`check_document` (types, registered
        names, and the weight and family-size limits, computed from the JSON), so a forged
        header cannot make loading allocate more than the limits allow; the tensors are then
        checked against the state dict of the architecture, name by name and shape by shape,
        before any is loaded. The checksum proves the file is intact, not who wrote it: load
        only files from sources you trust, since the file chooses which registered classes run.

        Args:
            family: optionally the task family to attach; it must match the stored one. If
                omitted, the stored family is rebuilt when its class is registered (imported).
            max_parameters: the most weights the described architecture may have
                (:data:`MAX_PARAMETERS`); raise it for a larger model you trust.
            max_family_size: the largest declared size of a stored family that is rebuilt
                (:data:`MAX_FAMILY_SIZE`).
        """
        tensors, document = read_tensors(path)
        # The schema bounds what building costs; the tensors (in memory already, bounded by the
        # file's size) are compared name by name and shape by shape with the state dict of the
        # built (untrained) architecture below, before any is loaded into it.
        check_document(path, document, build_family=family is None,
                       max_parameters=max_parameters, max_family_size=max_family_size)
        stored = document.get("family")
        if family is not None and stored is not None and (
                stored.get("name") != family.name or stored.get("config") != family.config()):
            raise ArtifactError(f"{path} was trained on family {stored.get('name')} "
                                f"{stored.get('config')}, but {family.name} {family.config()} "
                                "was given")
        try:
            method = method_from_config(document["method"]["name"],
                                        document["method"]["config"])
            metasolver = metasolver_from_config(document["metasolver"])
            stored_classical = document["classical_method"]
            classical = None if stored_classical is None else method_from_config(
                stored_classical["name"], stored_classical["config"])
            if family is None and stored is not None:
                if stored["name"] in FAMILIES:
                    family = family_from_config(stored["name"], stored["config"])
                else:
                    warnings.warn(f"{path}: task family {stored['name']!r} is not registered "
                                  "(import the module that defines it); loading without it",
                                  stacklevel=2)
            solver = cls(method, metasolver, family=family,
                         monitor=document.get("monitor", "residual"),
                         settings=document.get("settings"),
                         feature_envelope=document["feature_envelope"],
                         calibration=document.get("calibration"),
                         classical_method=classical)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
                RecursionError, RuntimeError) as exc:
            # Constructors validate their own arguments; whatever they refuse with is a malformed
            # file here (the schema has bounded sizes, so this is not an allocation failure).
            raise ArtifactError(f"{path}: cannot rebuild the solver from its JSON: "
                                f"{type(exc).__name__}: {exc}") from exc
        expected = solver.model.state_dict()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise ArtifactError(f"{path}: tensors do not match the stored architecture "
                                f"(missing {missing}, unexpected {extra})")
        for name, value in expected.items():
            got = tensors[name]
            if tuple(value.shape) != tuple(got.shape) or value.dtype != got.dtype:
                raise ArtifactError(f"{path}: tensor {name!r} is {got.dtype} of shape "
                                    f"{tuple(got.shape)}, the architecture needs {value.dtype} "
                                    f"of shape {tuple(value.shape)}")
        solver.model.load_state_dict(tensors)
        solver.model.eval()
        return solver

    def __repr__(self) -> str:
        return (f"LearnedSolver(method={self.method!r}, metasolver={self.metasolver.config()}, "
                f"family={self.family!r})")


def save(solver: LearnedSolver, path) -> Path:
    """``metasolve.save(solver, path)``: the same as ``solver.save(path)``."""
    if not isinstance(solver, LearnedSolver):
        raise TypeError(f"solver must be a LearnedSolver, got {type(solver).__name__}")
    return solver.save(path)


def load(path, family: TaskFamily | None = None, *, max_parameters: int = MAX_PARAMETERS,
         max_family_size: int = MAX_FAMILY_SIZE) -> LearnedSolver:
    """``metasolve.load(path)``: the same as :meth:`LearnedSolver.load`."""
    return LearnedSolver.load(path, family=family, max_parameters=max_parameters,
                              max_family_size=max_family_size)
