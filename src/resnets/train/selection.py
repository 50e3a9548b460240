"""Which epoch is the model, and when to stop: the one owner of the best-epoch state (validation score,
its epoch and accuracy, epochs since it improved), updated after each evaluation and rebuilt from a resumed
run's history in one place. The test split never selects: without a validation split nothing is chosen."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class Selection:
    """The best validation score so far (higher is better), the epoch and accuracy it came with, and how
    many epochs have passed since; `patience` > 0 stops training after that many without a better score."""

    patience: int = 0
    score: float | None = None
    epoch: int | None = None
    accuracy: float = 0.0  # the selected epoch's validation accuracy (0 without a validation split)
    since: int = 0

    def update(self, epoch: int, score: float, accuracy: float) -> bool:
        """Record an evaluated epoch; True when it is strictly better (ties keep the earlier epoch)."""
        if self.score is not None and score <= self.score:
            self.since = epoch - self.epoch
            return False
        self.score, self.epoch, self.accuracy, self.since = score, epoch, accuracy, 0
        return True

    @property
    def stop(self) -> bool:
        """Early stopping: `patience` epochs without a better validation score."""
        return bool(self.patience) and self.since >= self.patience

    @classmethod
    def restore(cls, patience: int, epochs: list[dict[str, Any]], accuracy: float) -> Selection:
        """The state after `epochs` (a checkpoint's history rows; `accuracy` as the checkpoint kept it)."""
        scores = [e.get("val_score") for e in epochs]
        if not any(isinstance(v, float) for v in scores):
            return cls(patience, accuracy=accuracy)
        best = max(range(len(scores)), key=lambda i: scores[i] if isinstance(scores[i], float) else -math.inf)
        return cls(patience, scores[best], epochs[best]["epoch"], accuracy, len(scores) - 1 - best)
