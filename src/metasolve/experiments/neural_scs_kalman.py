"""Neural acceleration of SCS on robust Kalman filtering (neural SCS paper, sec. 4.4, 5.3,
Figures 1b and 2b; Appendix A).

The matrix ``A`` of the cone program is the same for every instance; only ``b`` (the
measurements) varies (:class:`~metasolve.tasks.conic.KalmanFamily`). The paper uses 50 time
steps (655 variables, 852 constraints), 50,000 training problems and networks with 7,680 to
15,000 hidden units trained for 30k+ updates; on 2 CPU cores we use fewer time steps, fewer
problems and narrower networks (``Settings``; every record carries the sizes).
"""

from __future__ import annotations

from dataclasses import replace

from ..catalog import CATALOG
from ..tasks.conic import KalmanFamily
from ..training import TrainingConfig
from . import neural_scs_common as common
from .common import job_settings

NAME = "neural-scs-kalman"
TITLE = CATALOG[NAME].title
#: Sec. 5.3.2: the learned model's residuals at iteration 10 are those SCS and SCS+AA reach at 50.
PAPER_CLAIM = "learned at k=10 <= SCS+AA at k=50"

FULL = common.Settings(
    family={"steps": 20}, train=1024, validation=64, test=128,
    training=TrainingConfig(epochs=40, batch_size=32, lr=1e-3, betas=(0.9, 0.999),
                            plateau_patience=3, plateau_factor=0.5, grad_clip=100.0),
    access=(1, 2, 5, 10, 20), windows=((0, 15), (1, 15), (2, 15), (5, 30), (10, 30), (20, 30)),
    init_hidden=(512, 512), acc_hidden=(512, 512), overparametrize=True, rnn_hidden=256,
    deploy=100, deploy_iterations=(10, 50, 100))
QUICK = replace(FULL, family={"steps": 12}, train=256, validation=32, test=64,
                training=replace(FULL.training, epochs=6), init_hidden=(256, 256),
                acc_hidden=(256, 256), rnn_hidden=128, deploy=32,
                deploy_iterations=(10, 50))
SMOKE = replace(FULL, family={"steps": 4}, train=8, validation=4, test=4,
                training=replace(FULL.training, epochs=1, batch_size=4), init_hidden=(16,),
                acc_hidden=(16,), rnn_hidden=8, deploy=3, deploy_iterations=(2, 5),
                windows=((0, 3), (1, 3), (2, 3), (5, 3), (10, 3), (20, 3)))
SCALES = common.scales(FULL, QUICK, SMOKE)


def label_of(settings: common.Settings) -> str:
    return f"Kalman, {settings.family['steps']} steps"


def run_cell(job: dict) -> dict:
    settings = job_settings(job)
    return common.run_family_cell(NAME, job, settings, KalmanFamily(**settings.family),
                                  label_of(settings))


def shifted_sets(settings: common.Settings, model, count: int = 64):
    """The test set, then Kalman programs with outliers five times larger and with half the
    measurements outliers (``metasolve reproduce neural-scs-kalman --shift ood``)."""
    return common.shifted_sets_of(settings, model, {"outliers x5": {"outlier_scale": 100.0},
                                                    "outlier fraction 0.5":
                                                        {"outlier_fraction": 0.5}}, count)


tables = common.renderer(NAME, TITLE)
figure = common.figure_of(NAME, TITLE)
