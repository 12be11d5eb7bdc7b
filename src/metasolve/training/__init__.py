"""Losses, the trainer and its checkpoints."""

from .losses import FixedIterationLoss, IterationSurrogateLoss, Loss, loss_from_config
from .trainer import Trainer, TrainingConfig, TrainingHistory

__all__ = ["FixedIterationLoss", "IterationSurrogateLoss", "Loss", "Trainer", "TrainingConfig",
           "TrainingHistory", "loss_from_config"]
