"""The rft-operator API: Pydantic models that are the one source of truth for the CRDs.

`make crds` renders `crds/*.yaml` from these models (see `rft.api.crdgen`), and a test fails
when the two drift apart. Everything else (operator, trainer, SDK) parses objects with them.
"""

from rft.api.common import API_VERSION, CATEGORY, GROUP, VERSION, Condition
from rft.api.dataset import Dataset, DatasetSpec, DatasetStatus
from rft.api.deployment import Deployment, DeploymentSpec, DeploymentStatus
from rft.api.model import Model, ModelSpec, ModelStatus
from rft.api.reinforcement_step import (
    ReinforcementStep,
    ReinforcementStepSpec,
    ReinforcementStepStatus,
    StepPhase,
)
from rft.api.training_session import TrainingSession, TrainingSessionSpec, TrainingSessionStatus

ALL_KINDS = (Dataset, Deployment, Model, ReinforcementStep, TrainingSession)

__all__ = [
    "ALL_KINDS",
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "VERSION",
    "Condition",
    "Dataset",
    "DatasetSpec",
    "DatasetStatus",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "Model",
    "ModelSpec",
    "ModelStatus",
    "ReinforcementStep",
    "ReinforcementStepSpec",
    "ReinforcementStepStatus",
    "StepPhase",
    "TrainingSession",
    "TrainingSessionSpec",
    "TrainingSessionStatus",
]
