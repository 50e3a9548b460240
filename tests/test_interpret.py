"""Interpretation: Grad-CAM equals CAM for global-average-pooled nets, top losses and confused pairs by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnets import create_model
from resnets.cli import main
from resnets.interpret import grad_cam, most_confused, top_losses
from resnets.train import TrainConfig, fit

CIFAR = Path(__file__).parent / "fixtures" / "cifar10"


def test_grad_cam_is_cam_from_the_classifier_weights() -> None:
    """With global average pooling and one linear layer, d score / d A_k = W_ck / (h w), so Grad-CAM is
    ReLU(sum_k W_ck A_k) up to scale (Zhou et al.'s CAM), computed here without autograd."""
    model = create_model("cifar_resnet20", num_classes=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        # each image's class with the largest positive evidence, so neither map is all zero
        evidence = F.relu(torch.einsum("nkhw,ck->nchw", features, model.fc.weight)).sum(dim=(2, 3))
        target = evidence.argmax(1)
        cam = F.relu(torch.einsum("nkhw,nk->nhw", features, model.fc.weight[target]))
        assert (cam.flatten(1).amax(1) > 0).all()
        cam = F.interpolate(cam[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.flatten(1).amax(1).view(-1, 1, 1)
    got = grad_cam(model, x, target)
    assert got.shape == (2, 32, 32) and torch.allclose(got, cam, atol=1e-5)
    assert got.min() >= 0 and got.amax(dim=(1, 2)).allclose(torch.ones(2))


def test_top_losses_and_most_confused_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    mistakes = top_losses(probs, torch.tensor([0, 0, 1]), k=2)
    assert [m.index for m in mistakes] == [1, 2]  # losses -log 0.9, -log 0.2, -log 0.4
    assert mistakes[0].loss == pytest.approx(-math.log(0.2)) and (
        mistakes[0].true,
        mistakes[0].predicted,
    ) == (0, 1)
    assert mistakes[0].probability == pytest.approx(0.8)
    confusion = torch.tensor([[5, 3, 0], [1, 7, 4], [0, 0, 9]])
    assert most_confused(confusion, k=5) == [(1, 2, 4), (0, 1, 3), (1, 0, 1)]


def test_predict_writes_cam_overlays_and_the_report_shows_mistakes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(TrainConfig(data=f"folder:{CIFAR}", image_size=24, epochs=1, batch_size=16, limit=32, workers=0,
                    quiet=True, out=str(out)))  # fmt: skip
    report = (out / "report.md").read_text()
    assert "## What it gets wrong" in report and "![top losses](top_losses.png)" in report
    assert (out / "top_losses.png").read_bytes()[:4] == b"\x89PNG"
    images = sorted((CIFAR / "test" / "cat").iterdir())[:2]
    assert main(["predict", str(out), *map(str, images), "--cam", str(tmp_path / "cams")]) == 0
    for image in images:
        with Image.open(tmp_path / "cams" / f"{image.stem}.cam.png") as cam:
            assert cam.size == (24, 24) and cam.mode == "RGB"
