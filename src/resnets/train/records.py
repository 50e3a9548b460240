"""What a run produces: its `History` (what `fit` returns), the metadata every weights file carries, and the
records its folder keeps (runtime.json, results.json), each built in one place for writer and reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import DataBundle
from ..interpret import Mistake
from ..models import ResNet
from ..models.metadata import WeightsMeta
from ..provenance import git_state, invocation
from .config import TrainConfig
from .metrics import EvalResult, Operating
from .runtime import Runtime, precision_name


@dataclass
class History:
    """What `fit` returns: per-epoch metrics, the run folder and the trained model."""

    run_dir: Path | None
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_acc: float = 0.0  # the selected epoch's validation accuracy (0 without a validation split)
    model: ResNet | None = None  # the final model: best on validation, else the last epoch's
    final: EvalResult | None = None  # the final model on the test split, evaluated once
    val: EvalResult | None = None  # the final model on the validation split
    best_epoch: int | None = None  # the epoch the final model comes from
    operating: dict[str, Operating] = field(default_factory=dict)  # two classes: "threshold", "youden"
    config: TrainConfig | None = None  # the settings the run used (a resumed run's, with its changes)
    mistakes: list[Mistake] = field(default_factory=list)  # the test images with the highest loss

    @property
    def test_acc(self) -> float:
        return self.final.top1 if self.final is not None else float("nan")

    @property
    def seconds(self) -> float:
        return sum(e["seconds"] for e in self.epochs)


def weights_meta(cfg: TrainConfig, bundle: DataBundle, model: ResNet, epoch: int) -> WeightsMeta:
    """What every weights file of the run carries, so evaluate/predict/export need only that file."""
    return WeightsMeta(
        model=cfg.model, num_classes=model.num_classes, in_channels=model.in_channels, classes=bundle.classes,
        mean=list(bundle.mean), std=list(bundle.std), image_size=list(bundle.image_size),
        resize=bundle.eval_resize, data=cfg.data, shortcut=cfg.shortcut, spec_overrides=cfg.spec_overrides,
        pretrained=model.pretrained.url if model.pretrained else None, epoch=epoch,
    )  # fmt: skip


def resolved_record(runtime: Runtime) -> dict[str, Any]:
    """runtime.json: what the settings resolved to on this machine, so a resumed run computes the same way."""
    return {"device": str(runtime.device), "precision": precision_name(runtime.amp_dtype),
            "channels_last": runtime.channels_last, "compile": runtime.compile,
            "cpu_threads": torch.get_num_threads()}  # fmt: skip


def results_record(history: History) -> dict[str, Any]:
    """results.json: the final model's numbers for scripts (test, and the validation split that chose it),
    and the commit and command that produced them."""
    commit, dirty = git_state()
    return {
        "best_epoch": history.best_epoch, "epochs": len(history.epochs), "test": history.final.summary(),
        "val": history.val.summary() if history.val is not None else None,
        "operating": {k: vars(op) for k, op in history.operating.items()},
        "source": {"commit": commit, "dirty": dirty, "command": invocation()},
    }  # fmt: skip
