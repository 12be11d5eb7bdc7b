"""Task families: reproducible samplers of problem instances (GBMS paper, sec. 2.1: the task space
``(T, P)``).

A :class:`TaskFamily` draws a :class:`TaskBatch` (the problems plus the features a learned model
may look at) from a seed. :func:`make_splits` draws the test, validation and training sets from
three separate random streams derived from one seed, so the splits are independent draws (never
the same instance), and the test set does not change when the training budget does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..registry import Registry
from ..validation import check_count, check_tensor

FAMILIES = Registry("task family", hint=" (import the module that defines it before loading)")
register_family = FAMILIES.register
family_from_config = FAMILIES.build


@dataclass(frozen=True)
class TaskBatch:
    """A batch of tasks: ``problem`` for the solver, ``features`` ``(B, F)`` for the meta-solver."""

    problem: Any
    features: torch.Tensor

    def __post_init__(self):
        check_tensor("features", self.features, ndim=2)
        if self.features.shape[0] != self.problem.batch_size:
            raise ValueError(f"features has {self.features.shape[0]} rows but the problem batch "
                             f"has {self.problem.batch_size} instances")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def index(self, idx) -> TaskBatch:
        return TaskBatch(self.problem.index(idx), self.features[idx])

    @property
    def device(self) -> torch.device:
        """The device the features (and the problem's data) lie on."""
        return self.features.device

    def to(self, device) -> TaskBatch:
        """The same tasks with the problem's data and the features on ``device`` (``self``
        if they are there already); see :meth:`metasolve.problems.Problem.to`."""
        device = torch.device(device)
        problem = self.problem.to(device)
        if problem is self.problem and self.features.device == device:
            return self
        moved = object.__new__(TaskBatch)  # validated when built: not checked again
        object.__setattr__(moved, "problem", problem)
        object.__setattr__(moved, "features", self.features.to(device))
        return moved


class TaskFamily:
    """A distribution of tasks. Subclasses set ``name`` and implement :meth:`sample_with`.

    ``config()`` returns the constructor arguments so an artifact can rebuild the family.
    """

    name: ClassVar[str] = ""

    def config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def declared_size(cls, config: dict[str, Any]) -> int | None:
        """The number of entries of the largest data the family described by ``config`` builds
        (in its constructor or for one sampled instance, e.g. ``n * n`` for a dense ``n x n``
        matrix), computed from the config alone, with its size fields' types checked
        (``TypeError``/``ValueError``). Loading an artifact compares it with a ceiling before
        building the family; ``None`` (the default) declares nothing."""
        return None

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define feature_dim")

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        raise NotImplementedError(f"{type(self).__name__} must implement sample_with()")

    def sample(self, n: int, seed: int = 0) -> TaskBatch:
        """``n`` tasks drawn reproducibly from ``seed``."""
        check_count("n", n, minimum=1)
        check_count("seed", seed)
        generator = torch.Generator().manual_seed(seed)
        return self.sample_with(n, generator)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


@dataclass(frozen=True)
class Splits:
    train: TaskBatch
    validation: TaskBatch
    test: TaskBatch


def make_splits(family: TaskFamily, n_train: int, n_validation: int, n_test: int,
                seed: int = 0) -> Splits:
    """Draw the three splits from separate streams derived from ``seed``."""
    for name, value in (("n_train", n_train), ("n_validation", n_validation),
                        ("n_test", n_test)):
        check_count(name, value, minimum=1)
    check_count("seed", seed)
    streams = torch.Generator().manual_seed(seed)
    sub_seeds = torch.randint(0, 2**62, (3,), generator=streams).tolist()
    test, validation, train = (
        family.sample_with(n, torch.Generator().manual_seed(s))
        for n, s in zip((n_test, n_validation, n_train), sub_seeds, strict=True))
    return Splits(train, validation, test)
