"""Neural acceleration of SCS on Lasso (neural SCS paper, sec. 3.3, 4.4, 5.3, Figures 1a, 2a).

``p = 50`` features, ``q = 100`` observations, a new ``F`` per instance
(:class:`~metasolve.tasks.conic.LassoFamily`): ``A``, ``b`` and ``c`` all vary, and the context
has 5,150 varying entries. The paper trains on 100,000 problems with 2,560/5,120-unit networks;
we train on far fewer problems with narrower networks (``Settings``).
"""

from __future__ import annotations

from dataclasses import replace

from ..catalog import CATALOG
from ..tasks.conic import LassoFamily
from ..training import TrainingConfig
from . import neural_scs_common as common
from .common import job_settings

NAME = "neural-scs-lasso"
TITLE = CATALOG[NAME].title
#: Sec. 4.4.2: a fixed-point residual of 1e-3 after 25 (learned), 35 (SCS+AA), 50 (SCS) iters.
PAPER_ITERATIONS_TO_1E3 = {"neural_recurrent": 25, "scs_aa": 35, "scs": 50}

FULL = common.Settings(
    family={"p": 50, "q": 100}, train=1024, validation=64, test=128,
    training=TrainingConfig(epochs=10, batch_size=64, lr=1e-3, betas=(0.9, 0.999),
                            plateau_patience=3, plateau_factor=0.5, grad_clip=100.0),
    access=(1, 2, 5, 10, 15), windows=((0, 5), (1, 10), (2, 10), (5, 10), (10, 20), (15, 20)),
    init_hidden=(512, 512), acc_hidden=(512, 512), rnn_hidden=256, deploy=100,
    deploy_iterations=(10, 50, 100))
QUICK = replace(FULL, family={"p": 20, "q": 40}, train=256, validation=32, test=64,
                training=replace(FULL.training, epochs=6, batch_size=32),
                init_hidden=(256, 256), acc_hidden=(256, 256), rnn_hidden=128, deploy=32,
                deploy_iterations=(10, 50))
SMOKE = replace(FULL, family={"p": 5, "q": 10}, train=8, validation=4, test=4,
                training=replace(FULL.training, epochs=1, batch_size=4), init_hidden=(16,),
                acc_hidden=(16,), rnn_hidden=8, deploy=3, deploy_iterations=(2, 5),
                windows=((0, 3), (1, 3), (2, 3), (5, 3), (10, 3), (15, 3)))
SCALES = common.scales(FULL, QUICK, SMOKE)


def label_of(settings: common.Settings) -> str:
    return f"Lasso p={settings.family['p']}, q={settings.family['q']}"


def run_cell(job: dict) -> dict:
    settings = job_settings(job)
    result = common.run_family_cell(NAME, job, settings, LassoFamily(**settings.family),
                                    label_of(settings))
    for r in result["records"]:
        if r["metric"] == "iterations_to_median_fixed_point" and r.get("target") == 1e-3 \
                and settings.family == {"p": 50, "q": 100}:
            r["paper"] = PAPER_ITERATIONS_TO_1E3.get(r["method"])
    return result


def shifted_sets(settings: common.Settings, model, count: int = 64):
    """The test set, then Lasso programs with ten times the measurement noise and with five
    times the nonzeros in ``z*`` (``metasolve reproduce neural-scs-lasso --shift ood``)."""
    return common.shifted_sets_of(settings, model, {"noise x10": {"noise": 1.0},
                                                    "density 0.5": {"density": 0.5}}, count)


tables = common.renderer(NAME, TITLE)
figure = common.figure_of(NAME, TITLE)
