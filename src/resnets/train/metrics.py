"""Classification metrics from logits: accuracy, top-k, confusion matrix, per-class precision, recall and F1,
balanced accuracy, macro-F1, and from the kept probabilities ROC-AUC, PR-AUC and binary operating points.

Counts come from the confusion matrix; everything that needs scores (AUC, average precision, ROC curves,
Youden's J) is scikit-learn's, so no ranking metric is written by hand here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Monitor = Literal["loss", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc"]
MONITORS: tuple[str, ...] = ("loss", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
MAX_CLASSES_WITH_SCORES = 100  # keep per-image probabilities (for AUCs) only up to this many classes


@dataclass
class Operating:
    """A binary classifier's operating point: `positive`'s probability >= `threshold` says positive."""

    threshold: float
    sensitivity: float  # recall of the positive class (true positive rate)
    specificity: float  # recall of the negative class (1 - false positive rate)


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float | None  # only with more than 5 classes
    confusion: torch.Tensor  # (true, predicted) counts
    probs: torch.Tensor | None = None  # (N, C) softmax probabilities, in evaluation order
    targets: torch.Tensor | None = None  # (N,) labels, aligned with probs

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def precision(self) -> torch.Tensor:
        return self.confusion.diag() / self.confusion.sum(0).clamp(min=1)

    @property
    def recall(self) -> torch.Tensor:
        return self.confusion.diag() / self.confusion.sum(1).clamp(min=1)

    @property
    def f1(self) -> torch.Tensor:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r).clamp(min=1e-12)

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present (scikit-learn's definition)."""
        present = self.confusion.sum(1) > 0
        return float(self.recall[present].mean())

    @property
    def macro_f1(self) -> float:
        return float(self.f1.mean())

    def _scores(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.probs is None or len(torch.unique(self.targets)) < 2:
            return None  # AUCs need scores and both kinds of examples
        return self.targets.numpy(), self.probs.double().numpy()

    @property
    def roc_auc(self) -> float | None:
        """ROC-AUC: of the second class's score for two classes, else one-vs-rest macro (None if undefined)."""
        from sklearn.metrics import roc_auc_score

        scores = self._scores()
        if scores is None:
            return None
        y, p = scores
        if p.shape[1] == 2:
            return float(roc_auc_score(y, p[:, 1]))
        if len(np.unique(y)) < p.shape[1]:
            return None  # one-vs-rest needs every class in the split
        return float(roc_auc_score(y, p, multi_class="ovr", average="macro"))

    @property
    def pr_auc(self) -> float | None:
        """Average precision (area under the precision-recall curve), one-vs-rest macro beyond two classes."""
        from sklearn.metrics import average_precision_score

        scores = self._scores()
        if scores is None:
            return None
        y, p = scores
        if p.shape[1] == 2:
            return float(average_precision_score(y, p[:, 1]))
        return float(average_precision_score(np.eye(p.shape[1])[y], p, average="macro"))

    def score(self, monitor: str) -> float:
        """The value `monitor` names, oriented so that higher is better (the loss is negated)."""
        if monitor == "loss":
            return -self.loss
        if monitor == "accuracy":
            return self.top1
        if monitor in ("balanced_accuracy", "macro_f1"):
            return getattr(self, monitor)
        if monitor == "roc_auc":
            auc = self.roc_auc
            if auc is None:
                raise ValueError(
                    "ROC-AUC is undefined on this split (a class has no images): choose another --monitor"
                )
            return auc
        raise ValueError(f"unknown monitor {monitor!r}; choose one of {', '.join(MONITORS)}")

    def operating_point(self, positive: int, threshold: float) -> Operating:
        """Sensitivity and specificity when `positive`'s probability >= `threshold` counts as positive."""
        if self.probs is None:
            raise ValueError(
                "operating points need the per-image probabilities of a split with <= 100 classes"
            )
        is_pos, said_pos = self.targets == positive, self.probs[:, positive] >= threshold
        sens = float((said_pos & is_pos).sum() / is_pos.sum().clamp(min=1))
        spec = float((~said_pos & ~is_pos).sum() / (~is_pos).sum().clamp(min=1))
        return Operating(threshold, sens, spec)

    def youden_threshold(self, positive: int) -> float:
        """The threshold on `positive`'s probability that maximises Youden's J (sensitivity + specificity - 1),
        from scikit-learn's ROC curve: choose it on the validation split, then apply it to test."""
        from sklearn.metrics import roc_curve

        if self._scores() is None:
            raise ValueError("Youden's threshold needs both classes in the split it is chosen on")
        fpr, tpr, thresholds = roc_curve(
            (self.targets == positive).numpy(), self.probs[:, positive].double().numpy()
        )
        best = int(np.argmax(tpr - fpr))
        return float(min(thresholds[best], 1.0))  # roc_curve's first threshold is +inf: "never positive"

    def per_class_table(self, classes: list[str]) -> str:
        lines = [f"{'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
        support = self.confusion.sum(1)
        for i, name in enumerate(classes):
            p, r, f = self.precision[i], self.recall[i], self.f1[i]
            lines.append(f"{name[:19]:<20}{p:>10.3f}{r:>10.3f}{f:>10.3f}{int(support[i]):>10}")
        return "\n".join(lines)

    def summary(self) -> dict[str, float | None]:
        """The headline numbers, for reports and JSON."""
        return {"accuracy": self.top1, "top5": self.top5, "loss": self.loss,
                "balanced_accuracy": self.balanced_accuracy, "macro_f1": self.macro_f1,
                "roc_auc": self.roc_auc, "pr_auc": self.pr_auc}  # fmt: skip


class MetricAccumulator:
    """Running sums over batches (and the probabilities, for up to 100 classes)."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.loss_sum = 0.0
        self.count = 0
        self.top5_hits = 0
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.keep_scores = num_classes <= MAX_CLASSES_WITH_SCORES
        self.probs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

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
        if self.keep_scores:
            self.probs.append(logits.softmax(1))
            self.targets.append(targets)

    def result(self) -> EvalResult:
        if self.count == 0:
            raise ValueError("nothing was evaluated: the split holds no images")
        top1 = self.confusion.diag().sum().item() / self.count
        top5 = self.top5_hits / self.count if self.num_classes > 5 else None
        scores = (
            (torch.cat(self.probs), torch.cat(self.targets))
            if self.keep_scores and self.probs
            else (None, None)
        )
        return EvalResult(self.loss_sum / self.count, top1, top5, self.confusion, *scores)
