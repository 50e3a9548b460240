"""resnets: the ResNet family one line away — models, training, experiments, benchmarks."""

from .models import ResNet, ResNetSpec, create_model, list_models, summarize

__version__ = "0.1.0"

__all__ = ["ResNet", "ResNetSpec", "__version__", "create_model", "list_models", "summarize"]
