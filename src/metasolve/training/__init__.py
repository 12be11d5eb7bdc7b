"""Losses, the trainer and its checkpoints."""

from .losses import (
           FailurePenaltyLoss,
           FixedIterationLoss,
           IterationSurrogateLoss,
           Loss,
           loss_from_config,
)
from .trainer import Trainer, TrainingConfig, TrainingHistory

__all__ = ["FailurePenaltyLoss", "FixedIterationLoss", "IterationSurrogateLoss", "Loss",
           "Trainer", "TrainingConfig", "TrainingHistory", "loss_from_config"]
