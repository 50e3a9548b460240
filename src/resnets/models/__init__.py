"""The ResNet zoo: one `ResNet` class, built from a `ResNetSpec`, and a registry of named variants."""

from .features import FeatureInfo, FeatureNet
from .registry import ModelEntry, create_model, get_entry, list_models
from .resnet import ResNet
from .spec import ResNetSpec
from .summary import ModelSummary, count_macs, count_params, summarize
from .weights import load_weights, read_state_dict

__all__ = [
    "FeatureInfo",
    "FeatureNet",
    "ModelEntry",
    "ModelSummary",
    "ResNet",
    "ResNetSpec",
    "count_macs",
    "count_params",
    "create_model",
    "get_entry",
    "list_models",
    "load_weights",
    "read_state_dict",
    "summarize",
]
