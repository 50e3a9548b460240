"""`predict` sees an image exactly as training's evaluation did, and writes its answers as CSV or JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from resnets.cli import main
from resnets.data import DataError, load_dataset
from resnets.data.folder import read_image
from resnets.train import TrainConfig, fit
from resnets.trained import load_image, load_trained, predict

CIFAR = Path(__file__).parent / "fixtures" / "cifar10"


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    fit(TrainConfig(data=f"folder:{CIFAR}", image_size=24, epochs=1, batch_size=16, limit=32, workers=0,
                    quiet=True, out=str(out)))  # fmt: skip
    return out


def test_predict_preprocesses_as_training_evaluation(folder_run: Path) -> None:
    """Short side to 1.14x, centre crop (not a squash): the tensor predict builds is the evaluation item."""
    trained = load_trained(folder_run)
    assert (trained.resize, trained.image_size) == (27, (24, 24))
    bundle = load_dataset(f"folder:{CIFAR}", image_size=24)
    for index in (0, 17):
        path, _ = bundle.test.samples[index]
        item, _ = bundle.test[index]
        expected = TF.normalize(item.float() / 255, list(trained.mean), list(trained.std))
        assert torch.allclose(load_image(path, trained), expected)


def test_predict_writes_csv_and_json(folder_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = CIFAR / "test" / "cat"
    count = len(list(images.iterdir()))
    for suffix in (".csv", ".json"):
        out = tmp_path / f"answers{suffix}"
        assert main(["predict", str(folder_run), str(images), "--top-k", "2", "--batch-size", "3",
                     "--output", str(out)]) == 0  # fmt: skip
        assert f"wrote {count} predictions" in capsys.readouterr().out
        if suffix == ".csv":
            rows = list(csv.DictReader(out.open()))
            assert list(rows[0]) == ["image", "class1", "probability1", "class2", "probability2"]
            assert all(float(r["probability1"]) >= float(r["probability2"]) for r in rows)
        else:
            rows = json.loads(out.read_text())
            assert all(len(r["top"]) == 2 for r in rows)
        assert sorted(Path(r["image"]).name for r in rows) == sorted(p.name for p in images.iterdir())
    assert main(["predict", str(folder_run), str(images), "--output", str(tmp_path / "x.txt")]) == 2


def test_every_runtime_gives_the_same_answers(folder_run: Path) -> None:
    """predict's serving runtime changes the speed, not the answers (probabilities to fp32 rounding)."""
    trained = load_trained(folder_run)
    images = sorted((CIFAR / "test" / "cat").iterdir())[:5]
    answers = {
        runtime: [top for _, top in predict(trained, images, top_k=3, runtime=runtime)]
        for runtime in ("eager", "onnxruntime")  # (compiled: equal to eager in test_deploy.py)
    }
    for top in answers.values():
        assert [[c for c, _ in t] for t in top] == [[c for c, _ in t] for t in answers["eager"]]
        for got, want in zip(top, answers["eager"], strict=True):
            assert [p for _, p in got] == pytest.approx([p for _, p in want], abs=1e-5)


def test_load_gives_the_trained_model_and_a_transform_for_ones_own_images(folder_run: Path) -> None:
    """resnets.load: the run's head (its classes), and `transform` taking a file, a PIL image or a uint8
    tensor to exactly the input evaluation used."""
    from PIL import Image

    from resnets.trained import load

    trained = load(folder_run)
    assert (
        trained.classes == sorted(p.name for p in (CIFAR / "train").iterdir())
        and trained.model.num_classes == 10
    )
    path = sorted((CIFAR / "test" / "cat").iterdir())[0]
    expected = load_image(path, trained)
    pil = Image.open(path)
    assert torch.equal(trained.transform(path), expected) and torch.equal(trained.transform(pil), expected)
    assert torch.equal(trained.transform(TF.pil_to_tensor(pil.convert("RGB"))), expected)
    logits = trained.model(torch.stack([trained.transform(path)] * 2))
    assert logits.shape == (2, 10) and torch.equal(logits[0], logits[1])
    with pytest.raises(ValueError, match=r"expected a uint8 \(3, H, W\) image tensor"):
        trained.transform(torch.zeros(3, 8, 8))


def test_create_model_with_a_runs_weights_keeps_its_head_and_metadata(folder_run: Path) -> None:
    """create_model(name, weights=<our file>) is the run's model: its 10-class head (no warning, no fresh
    1000-class one), and its classes and preprocessing as `model.pretrained`; another model name is refused."""
    import warnings

    from resnets import create_model

    trained = load_trained(folder_run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_model("cifar_resnet20", weights=folder_run / "last.safetensors").eval()
    x = torch.stack([trained.transform(p) for p in sorted((CIFAR / "test" / "cat").iterdir())[:3]])
    assert model.num_classes == 10 and torch.equal(model(x), trained.model(x))
    record = model.pretrained
    assert (record.source, list(record.categories), record.crop, record.resize) == (
        "file",
        trained.classes,
        (24, 24),
        27,
    )
    assert (record.mean, record.std) == (trained.mean, trained.std)
    with pytest.raises(ValueError, match="holds a cifar_resnet20, not a resnet18"):
        create_model("resnet18", weights=folder_run / "last.safetensors")


def test_commands_default_to_what_the_run_recorded(folder_run: Path, capsys: pytest.CaptureFixture) -> None:
    """evaluate needs no --data for a run (it trained on a folder, not Fashion-MNIST), says it averages
    flipped views or not; summary takes the run folder."""
    assert main(["evaluate", str(folder_run)]) == 0
    out = capsys.readouterr().out
    # single view first, as the literature compares; the run evaluated with flip TTA: that is second
    assert f"folder:{CIFAR} test (" in out and "images, single view) top-1" in out
    assert out.index("single view") < out.index("with flip TTA (each image and its mirror averaged")
    assert main(["evaluate", str(folder_run), "--no-tta"]) == 0
    assert "with flip TTA" not in capsys.readouterr().out
    assert main(["summary", str(folder_run)]) == 0
    table = capsys.readouterr().out  # the run's model at the size it trained at, with its 10-class head
    assert (
        "input 3x24x24: 269,722 parameters" in table
        and "fc                      Linear            10 " in table
    )
    report = (folder_run / "report.md").read_text()
    assert "(the mean of each image and its mirror (flip TTA))" in report
    assert "The test split was evaluated once" not in report  # no validation split: test drew the curves


def test_eval_resize_one_evaluates_the_whole_image_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--eval-resize 1 (fastai's evaluation): the whole centre square at the input size, in training's
    evaluation, `predict` and `evaluate` alike; the default 1.14 keeps the centre of a larger resize."""
    whole = load_dataset(f"folder:{CIFAR}", image_size=32, eval_resize=1.0)  # the fixture's PNGs are 32 px
    raw = read_image(whole.test.samples[0][0], 3)
    assert torch.equal(whole.test[0][0], raw)
    assert not torch.equal(load_dataset(f"folder:{CIFAR}", image_size=32).test[0][0], raw)
    with pytest.raises(DataError, match="eval_resize is the evaluation resize"):
        load_dataset(f"folder:{CIFAR}", image_size=32, eval_resize=0.5)
    with pytest.raises(ValueError, match="eval_resize is the resize over the crop"):
        TrainConfig(eval_resize=0.5).validate()
    out = tmp_path / "run"
    fit(TrainConfig(data=f"folder:{CIFAR}", image_size=24, eval_resize=1.0, epochs=1, batch_size=16, limit=32,
                    workers=0, quiet=True, tta=False, out=str(out)))  # fmt: skip
    trained = load_trained(out)
    assert (trained.resize, trained.image_size) == (24, (24, 24))
    bundle = load_dataset(f"folder:{CIFAR}", image_size=24, eval_resize=1.0)
    path, _ = bundle.test.samples[5]
    expected = TF.normalize(bundle.test[5][0].float() / 255, list(trained.mean), list(trained.std))
    assert torch.allclose(load_image(path, trained), expected)
    logged = float(list(csv.DictReader((out / "metrics.csv").open()))[-1]["test_acc"])
    assert main(["evaluate", str(out)]) == 0
    assert f"single view) top-1 {100 * logged:.2f}%" in capsys.readouterr().out
