"""What the model code reads of the training configuration, as a type: models import nothing of the platform.

``core.config.TrainConfig`` is one; a test or a notebook may pass any object with these attributes.
"""

from __future__ import annotations

from typing import Protocol


class Hyperparameters(Protocol):
    """The hyperparameters that the model builders and the training loop take."""

    seed: int
    embedding_dim: int
    embedding_weight_decay: float
    hidden_units: tuple[int, ...]
    retrieval_dim: int
    learning_rate: float
    epochs: int
    early_stopping_patience: int
    validations_per_epoch: int
    min_improvement_z: float
