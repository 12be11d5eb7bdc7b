"""Losses, the trainer and its checkpoints."""

from .fit import CheckpointedFit, TrainingWarning
from .gauss_newton import GaussNewtonConfig, GaussNewtonHistory
from .losses import (
           FailurePenaltyLoss,
           FilterGapLoss,
           FixedIterationLoss,
           IterationSurrogateLoss,
           LogResidualLoss,
           Loss,
           RelativeLogResidualLoss,
           ResidualSumLoss,
           WeightedResidualLoss,
           loss_from_config,
)
from .trainer import Trainer, TrainingConfig, TrainingHistory

__all__ = [
    "CheckpointedFit", "FailurePenaltyLoss", "FilterGapLoss", "FixedIterationLoss",
    "GaussNewtonConfig", "GaussNewtonHistory", "IterationSurrogateLoss",
    "LogResidualLoss", "Loss", "RelativeLogResidualLoss", "ResidualSumLoss", "Trainer",
    "TrainingConfig", "TrainingHistory", "TrainingWarning",
    "WeightedResidualLoss", "loss_from_config"
]
