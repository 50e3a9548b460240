"""resnets: the ResNet family one line away — models, training, experiments, benchmarks."""

from .models import ResNet, ResNetSpec, create_model, list_models, summarize

# `resnets.train` is the training function, as the README shows, while the training code lives in the
# subpackage `resnets/train/`. Python binds a subpackage to its parent's attribute when it first loads it
# (`setattr(resnets, "train", <module>)`), never again, so loading the subpackage here, before binding the
# function, keeps `resnets.train` the function for good: `import resnets.train.loop` later finds the
# subpackage in sys.modules and leaves the attribute alone (tests/test_readme.py checks this). Reach the
# subpackage's modules with `from resnets.train.run import fit` or `from resnets.train import loop`,
# not by attribute (`resnets.train.loop` is an attribute of the function).
from .train import History, TrainConfig, fit, train  # noqa: I001 (the order above matters)
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
