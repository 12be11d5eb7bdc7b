"""The small-Lasso variants of the neural SCS paper (sec. 6, Figures 3-8): ``p = 10``,
``q = 20``; the original distribution, a fixed source matrix ``F`` (sec. 6.2.1), reduced noise
(``sigma = 1e-2``, sec. 6.2.2), more observations of a fixed ``F`` (``q = 40, 60``, sec. 6.3.1)
and the dynamic Lasso over 2 and 3 steps (sec. 6.3.2). One intermittent-access MLP model
(Algorithm 2) per variant with the paper's ``A = {1, 2, 5, 10}``, ``r_i = 10``.
"""

from __future__ import annotations

from dataclasses import replace

from ..catalog import CATALOG
from ..tasks.conic import DynamicLassoFamily, LassoFamily
from ..training import TrainingConfig
from . import neural_scs_common as common
from .common import job_settings

NAME = "neural-scs-lasso-variants"
TITLE = CATALOG[NAME].title

VARIANTS = {
    "original": (LassoFamily, {"p": 10, "q": 20}),
    "fixed F": (LassoFamily, {"p": 10, "q": 20, "fixed_matrix_seed": 0}),
    "reduced noise": (LassoFamily, {"p": 10, "q": 20, "noise": 1e-2}),
    "fixed F, q=40": (LassoFamily, {"p": 10, "q": 40, "fixed_matrix_seed": 0}),
    "fixed F, q=60": (LassoFamily, {"p": 10, "q": 60, "fixed_matrix_seed": 0}),
    "dynamic, 2 steps": (DynamicLassoFamily, {"steps": 2}),
    "dynamic, 3 steps": (DynamicLassoFamily, {"steps": 3}),
}

FULL = common.Settings(
    family={}, train=2048, validation=64, test=128,
    training=TrainingConfig(epochs=60, batch_size=64, lr=1e-3, betas=(0.9, 0.999),
                            plateau_patience=3, plateau_factor=0.5, grad_clip=100.0),
    models=("neural_mlp",), access=(1, 2, 5, 10),
    windows=((0, 10), (1, 10), (2, 10), (5, 10), (10, 10)),
    init_hidden=(512, 512), acc_hidden=(512, 512), deploy=0,
    extra={"variants": tuple(VARIANTS)})
QUICK = replace(FULL, train=512, validation=32, test=64,
                training=replace(FULL.training, epochs=8, batch_size=64),
                init_hidden=(256, 256), acc_hidden=(256, 256),
                extra={"variants": ("original", "fixed F", "dynamic, 3 steps")})
SMOKE = replace(FULL, train=8, validation=4, test=4,
                training=replace(FULL.training, epochs=1, batch_size=4), init_hidden=(16,),
                acc_hidden=(16,), windows=((0, 3), (1, 3), (2, 3), (5, 3), (10, 3)),
                extra={"variants": ("fixed F", "dynamic, 2 steps")})
SCALES = common.scales(FULL, QUICK, SMOKE)


def run_cell(job: dict) -> dict:
    settings = job_settings(job)
    cls, config = VARIANTS[job["variant"]]
    return common.run_family_cell(NAME, job, settings, cls(**config), job["variant"])


def cells(settings: common.Settings) -> list[dict]:
    return [{"variant": v} for v in settings.extra["variants"]]


def shifted_sets(settings: common.Settings, model, count: int = 64):
    """The variant's test set, then its programs with ten times the measurement noise and with
    five times the nonzeros in ``z*`` (``metasolve reproduce neural-scs-lasso-variants --shift
    ood``), as for the larger Lasso."""
    config = model.family.config()
    return common.shifted_sets_of(settings, model,
                                  {"noise x10": {"noise": 10 * config["noise"]},
                                   "density x5": {"density": min(1.0, 5 * config["density"])}},
                                  count)


tables = common.renderer(NAME, TITLE, order=tuple(VARIANTS))
figure = common.figure_of(NAME, TITLE, order=tuple(VARIANTS))
