"""PNG plots of a run: loss/accuracy curves and the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..files import atomic_write, printable  # noqa: E402


def plot_curves(history: list[dict[str, float]], path: Path) -> None:
    """Loss and accuracy per epoch: train, and validation (or test, when there is no validation split)."""
    epochs = [h["epoch"] for h in history]
    split = "val" if any(h.get("val_loss") not in ("", None) for h in history) else "test"
    evaluated = [h for h in history if h.get(f"{split}_loss") not in ("", None)]  # --eval-every skips some
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot([h["epoch"] for h in evaluated], [h[f"{split}_loss"] for h in evaluated], "o-", label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_acc.plot(epochs, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax_acc.plot(
        [h["epoch"] for h in evaluated], [100 * h[f"{split}_acc"] for h in evaluated], "o-", label=split
    )
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def plot_confusion(confusion: torch.Tensor, classes: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (true class per row)."""
    classes = [printable(c) for c in classes]  # (a font cannot draw undecodable bytes)
    rates = (confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)).numpy()  # numpy for matplotlib
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.5 * n))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (row-normalised)")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def plot_roc_pr(result, classes: list[str], path: Path) -> None:  # noqa: ANN001 (an EvalResult)
    """ROC and precision-recall curves (scikit-learn's), of the positive class for two classes, else one
    curve per class (one-vs-rest)."""
    classes = [printable(c) for c in classes]  # (a font cannot draw undecodable bytes)
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, p = result.targets.numpy(), result.probs.double().numpy()
    shown = [1] if p.shape[1] == 2 else range(p.shape[1])
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4))
    for c in shown:
        fpr, tpr, _ = roc_curve(y == c, p[:, c])
        precision, recall, _ = precision_recall_curve(y == c, p[:, c])
        ax_roc.plot(fpr, tpr, label=classes[c])
        ax_pr.plot(recall, precision, label=classes[c])
    ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
    ax_roc.set(
        xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)", title="ROC"
    )
    ax_pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def plot_top_losses(images: list[torch.Tensor], mistakes: list, classes: list[str], path: Path) -> None:
    """A grid of uint8 (C, H, W) images titled true / predicted and the prediction's probability."""
    classes = [printable(c) for c in classes]  # (a font cannot draw undecodable bytes)
    cols = min(3, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, m in zip(axes.flat, images, mistakes, strict=False):
        shown = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
        ax.imshow(shown.numpy(), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(f"{classes[m.true][:14]} / {classes[m.predicted][:14]}\n{m.probability:.2f}", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
