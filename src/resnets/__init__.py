"""resnets: the ResNet family one line away — models, training, experiments, benchmarks."""

# `resnets.train` is the subpackage `resnets/train/`, callable as its `train` function (the README's
# `resnets.train(model=..., epochs=...)`): see train/__init__.py.
from . import train
from .models import ResNet, ResNetSpec, create_model, list_models, summarize
from .train import History, TrainConfig, fit
from .trained import Trained, load

__version__ = "0.1.0"

__all__ = [
    "History",
    "ResNet",
    "ResNetSpec",
    "TrainConfig",
    "Trained",
    "__version__",
    "create_model",
    "fit",
    "load",
    "list_models",
    "summarize",
    "train",
]
