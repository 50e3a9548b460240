"""Classification metrics from logits: accuracy, top-k, confusion matrix, per-class precision and recall."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float | None  # only with more than 5 classes
    confusion: torch.Tensor  # (true, predicted) counts

    @property
    def precision(self) -> torch.Tensor:
        return self.confusion.diag() / self.confusion.sum(0).clamp(min=1)

    @property
    def recall(self) -> torch.Tensor:
        return self.confusion.diag() / self.confusion.sum(1).clamp(min=1)

    def per_class_table(self, classes: list[str]) -> str:
        lines = [f"{'class':<20}{'precision':>10}{'recall':>10}{'support':>10}"]
        support = self.confusion.sum(1)
        for i, name in enumerate(classes):
            p, r = self.precision[i], self.recall[i]
            lines.append(f"{name[:19]:<20}{p:>10.3f}{r:>10.3f}{int(support[i]):>10}")
        return "\n".join(lines)


class MetricAccumulator:
    """Running sums over batches, so evaluation never holds all logits."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.loss_sum = 0.0
        self.count = 0
        self.top5_hits = 0
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: float) -> None:
        logits, targets = logits.float().cpu(), targets.cpu()
        self.loss_sum += loss_sum
        self.count += len(targets)
        pred = logits.argmax(1)
        self.confusion += torch.bincount(
            targets * self.num_classes + pred, minlength=self.num_classes**2
        ).view(self.num_classes, self.num_classes)
        if self.num_classes > 5:
            self.top5_hits += (logits.topk(5, 1).indices == targets[:, None]).any(1).sum().item()

    def result(self) -> EvalResult:
        n = max(self.count, 1)
        top1 = self.confusion.diag().sum().item() / n
        top5 = self.top5_hits / n if self.num_classes > 5 else None
        return EvalResult(self.loss_sum / n, top1, top5, self.confusion)
