"""One multi-layer perceptron, several frameworks: the spec, the interface and the registry."""

from impls.base import MLP, History, TrainingDiverged
from impls.registry import IMPLEMENTATIONS, availability, create, load, names
from impls.spec import ACTIVATIONS, INITIALIZERS, LOSSES, EarlyStopping, MLPSpec, Params, TrainConfig, batch_order

__all__ = [
    "ACTIVATIONS",
    "IMPLEMENTATIONS",
    "INITIALIZERS",
    "LOSSES",
    "MLP",
    "EarlyStopping",
    "History",
    "MLPSpec",
    "Params",
    "TrainConfig",
    "TrainingDiverged",
    "availability",
    "batch_order",
    "create",
    "load",
    "names",
]
