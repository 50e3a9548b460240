"""Training on the real fixture data: it learns, resumes bit-exactly after SIGKILL, fine-tunes and freezes
as asked, finds a learning rate, and every training option runs. Sizes are tiny so the file stays fast."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import resnets
from resnets import create_model
from resnets.data import make_loader
from resnets.train import History, TrainConfig, evaluate, fit
from resnets.train import run as run_module
from resnets.train.autotune import fastest_cpu_format
from resnets.train.checkpoint import read_meta
from resnets.train.lr_find import lr_find, suggest_lr
from resnets.train.run import METRIC_FIELDS
from resnets.train.runtime import resolve_runtime
from resnets.trained import load_trained, predict

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
CIFAR = FIXTURES / "cifar10"
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "last.safetensors",
    "best.safetensors",
    "state.pt",
    "curves.png",
    "confusion.png",
    "report.md",
)


def tiny(out: Path, **overrides: object) -> dict[str, object]:
    """Options for a seconds-long run: a CIFAR ResNet-20 on 8 px Fashion-MNIST, a few batches."""
    options = {
        "model": "cifar_resnet20",
        "data": "fashion-mnist",
        "data_root": str(FASHION),
        "epochs": 1,
        "batch_size": 16,
        "limit": 48,
        "test_limit": 64,
        "image_size": 8,
        "workers": 0,
        "quiet": True,
        "out": str(out),
    }
    return options | overrides


def read_metrics(run_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def is_head(name: str) -> bool:
    return name.startswith(("fc.", "final_bn."))


def test_training_learns_and_writes_the_run_folder(tmp_path: Path) -> None:
    """Three short epochs on 800 real Fashion-MNIST images beat chance (10%) by far on the real test set,
    and the run folder holds everything the docs promise, consistent with the returned History."""
    out = tmp_path / "run"
    history = resnets.train(
        **tiny(out, epochs=3, batch_size=32, limit=800, test_limit=500, image_size=12, lr=0.05)
    )
    assert isinstance(history, History) and history.run_dir == out
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]
    assert history.epochs[-1]["test_acc"] > 0.5, history.epochs
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"

    columns, rows = read_metrics(out)
    assert columns == METRIC_FIELDS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, epoch in zip(rows, history.epochs, strict=True):
        assert float(row["test_acc"]) == pytest.approx(epoch["test_acc"])
        assert float(row["train_loss"]) == pytest.approx(epoch["train_loss"])
    assert history.best_acc == max(float(r["test_acc"]) for r in rows)
    saved = TrainConfig.load(out / "config.json")
    assert saved.limit == 800 and saved.precision == "auto"  # the settings as given, so the run repeats
    resolved = json.loads((out / "runtime.json").read_text())  # what they became here, for resume
    assert resolved["precision"] in ("fp32", "bf16") and isinstance(resolved["channels_last"], bool)

    # the saved weights carry their metadata and reproduce the logged accuracy
    meta = read_meta(out / "last.safetensors")
    assert meta["epoch"] == 3 and meta["model"] == "cifar_resnet20" and meta["image_size"] == [12, 12]
    assert read_meta(out / "best.safetensors")["test_acc"] == history.best_acc
    trained = load_trained(out / "last.safetensors")
    assert trained.classes[0] == "T-shirt/top" and trained.model.in_channels == 1
    bundle = run_module.load_data(TrainConfig.load(out / "config.json"))  # the same 500 test images
    assert len(bundle.test) == 500 and bundle.image_size == (12, 12)
    runtime = resolve_runtime(saved)  # the precision the run chose
    loader = make_loader(bundle, "test", 256, train=False)
    result = evaluate(trained.model, loader, bundle.num_classes, runtime, tta=saved.tta)
    assert result.top1 == pytest.approx(history.epochs[-1]["test_acc"], abs=0.005)
    report = (out / "report.md").read_text()
    assert "cifar_resnet20" in report and f"{100 * history.epochs[-1]['test_acc']:.2f}%" in report
    # TensorBoard events only when the optional package is there
    has_tb = any(os.scandir(out / "tensorboard")) if (out / "tensorboard").is_dir() else False
    try:
        import tensorboard  # noqa: F401

        assert has_tb
    except ImportError:
        assert not has_tb


def train_cmd(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "resnets", "train", "--data", "fashion-mnist", "--data-root", str(FASHION),
        "--model", "cifar_resnet20", "--epochs", "3", "--batch-size", "16", "--limit", "96",
        "--test-limit", "64", "--image-size", "8", "--workers", "0", "--drop-rate", "0.3", "--ema", "0.9",
        "--seed", "1", "--deterministic", "--quiet", "--out", str(out),
    ]  # fmt: skip


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    """kill -9 during epoch 2, move the folder, `train --resume` it: the final weights, EMA and metrics are
    exactly those of an uninterrupted run with the same seed (dropout exercises the RNG state)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # equal threads: equal sums
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full = subprocess.Popen(
        train_cmd(full_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = subprocess.Popen(train_cmd(killed_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed_dir / "state.pt").is_file():
        assert killed.poll() is None, killed.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    killed.kill()
    killed.wait()
    assert killed.returncode == -9
    state = torch.load(killed_dir / "state.pt", weights_only=True)
    assert state["epoch"] < 3, "the run finished before it could be killed"
    out, err = full.communicate(timeout=180)
    assert full.returncode == 0, err[-2000:]
    assert out == "", "--quiet printed on stdout"

    moved = tmp_path / "moved"
    shutil.move(killed_dir, moved)
    resumed = subprocess.run(
        [sys.executable, "-m", "resnets", "train", "--resume", str(moved), "--quiet"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout == ""
    assert not killed_dir.exists(), "resume wrote into the folder's old location"
    a, b = load_file(full_dir / "last.safetensors"), load_file(moved / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    raw_a = torch.load(full_dir / "state.pt", weights_only=True)["model"]
    raw_b = torch.load(moved / "state.pt", weights_only=True)["model"]
    for key in raw_a:
        assert torch.equal(raw_a[key], raw_b[key]), key
    drop_time = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(full_dir)[1]]
    assert drop_time == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(moved)[1]]
    assert len(drop_time) == 3
    assert (moved / "report.md").is_file()


def pretrained_cifar_file(path: Path) -> Path:
    """A 'pretrained' CIFAR ResNet-20 with 5 classes and RGB input, its BN affine randomised too, saved as a
    plain torch state dict (the usual .pth of other code)."""
    model = create_model("cifar_resnet20", num_classes=5, in_channels=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.1, 0.1)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, torch.Tensor]]:
    """Record the freshly built model's parameters ('init') and the weights saved after each epoch."""
    seen: dict[str, dict[str, torch.Tensor]] = {}
    build, save = run_module.build_model, run_module.save_weights

    def build_and_record(cfg: TrainConfig, bundle):  # noqa: ANN001, ANN202
        model = build(cfg, bundle)
        seen["init"] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return model

    def save_and_record(state: dict, path: Path, meta: dict) -> None:
        if path.name == "last.safetensors":
            seen[f"epoch{meta['epoch']}"] = {k: v.detach().clone() for k, v in state.items()}
        save(state, path, meta)

    monkeypatch.setattr(run_module, "build_model", build_and_record)
    monkeypatch.setattr(run_module, "save_weights", save_and_record)
    return seen


def test_freeze_trains_only_the_head(tmp_path: Path, capture: dict) -> None:
    weights = pretrained_cifar_file(tmp_path / "pretrained.pth")
    with pytest.warns(UserWarning, match="classifier re-initialised for 10 classes"):
        fit(TrainConfig(**tiny(tmp_path / "run", weights=str(weights), freeze=True, lr=0.05)))
    init, after = capture["init"], capture["epoch1"]
    source = torch.load(weights, weights_only=True)
    assert torch.equal(init["layer2.0.conv1.weight"], source["layer2.0.conv1.weight"]), "weights not loaded"
    assert torch.equal(init["layer3.1.bn2.bias"], source["layer3.1.bn2.bias"])
    assert init["conv1.weight"].shape[1] == 1  # RGB stem adapted to Fashion-MNIST's gray
    body = [k for k in init if not is_head(k)]
    assert len(body) > 50
    for key in body:
        assert torch.equal(after[key], init[key]), f"frozen {key} changed"
    assert not torch.equal(after["fc.weight"], init["fc.weight"]), "the head did not train"
    assert after["fc.weight"].shape == (10, 64)


def test_freeze_epochs_unfreezes_the_body_after_the_head_phase(tmp_path: Path, capture: dict) -> None:
    weights = pretrained_cifar_file(tmp_path / "pretrained.pth")
    with pytest.warns(UserWarning, match="classifier re-initialised"):
        fit(TrainConfig(**tiny(tmp_path / "run", weights=str(weights), freeze_epochs=1, epochs=2, lr=0.05)))
    init, first, second = capture["init"], capture["epoch1"], capture["epoch2"]
    body = [k for k in init if not is_head(k)]
    for key in body:
        assert torch.equal(first[key], init[key]), f"{key} changed while frozen"
    assert not torch.equal(first["fc.weight"], init["fc.weight"])
    changed = [k for k in body if not torch.equal(second[k], first[k])]
    assert changed == body, f"unchanged after unfreezing: {sorted(set(body) - set(changed))}"


def test_finetune_imagenet_resnet18_on_an_image_folder(tmp_path: Path) -> None:
    """torchvision-layout ResNet-18 weights (1000 classes) fine-tuned on the CIFAR-10 PNG folders, streamed
    through a DataLoader worker at 32 px; the result predicts fixture images with the folder's classes."""
    imagenet = create_model("resnet18")
    torch.save(imagenet.state_dict(), tmp_path / "resnet18.pth")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="classifier re-initialised for 10 classes"):
        history = fit(TrainConfig(**tiny(
            out, model="resnet18", data=f"folder:{CIFAR}", data_root=None, weights=str(tmp_path / "resnet18.pth"),
            image_size=32, limit=32, test_limit=20, workers=1, lr=0.01,
        )))  # fmt: skip
    assert len(history.epochs) == 1 and all(
        torch.isfinite(torch.tensor(e["train_loss"])) for e in history.epochs
    )
    meta = read_meta(out / "best.safetensors")
    assert meta["model"] == "resnet18" and meta["num_classes"] == 10 and meta["in_channels"] == 3
    assert meta["classes"] == sorted(p.name for p in (CIFAR / "train").iterdir())
    assert meta["image_size"] == [32, 32]
    images = [next((CIFAR / "test" / c).iterdir()) for c in ("cat", "ship")]
    top = [t for _, t in predict(load_trained(out), images, top_k=3)]
    assert [len(t) for t in top] == [3, 3]
    assert all(name in meta["classes"] for t in top for name, _ in t)


def test_training_options_run(tmp_path: Path) -> None:
    """EMA, label smoothing, cutout, mixup, TTA, grad clipping, AdamW and the cosine schedule all run (two
    runs with several options each, to stay fast)."""
    variants = {
        "ema": {"ema": 0.5, "label_smoothing": 0.1, "cutout": 4},
        "mixup": {"mixup": 0.4, "tta": True, "optimizer": "adamw", "schedule": "cosine", "grad_clip": 1.0},
    }
    for name, options in variants.items():
        out = tmp_path / name
        history = fit(TrainConfig(**tiny(out, limit=32, **options)))
        loss = history.epochs[0]["train_loss"]
        assert 0 < loss < 10 and 0 <= history.epochs[0]["test_acc"] <= 1, (name, history.epochs)
        assert (out / "report.md").is_file(), name
    # EMA: the saved weights are the average, not the raw model
    ema_weights = load_file(tmp_path / "ema" / "last.safetensors")
    raw = torch.load(tmp_path / "ema" / "state.pt", weights_only=True)["model"]
    assert not torch.equal(ema_weights["layer1.0.conv1.weight"], raw["layer1.0.conv1.weight"])


@pytest.mark.slow
def test_compile_runs_one_epoch(tmp_path: Path) -> None:
    """torch.compile on CPU needs a C++ toolchain and minutes of compiling: slow-marked."""
    history = fit(TrainConfig(**tiny(tmp_path / "run", compile=True, limit=32)))
    assert len(history.epochs) == 1


def test_batch_larger_than_the_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--batch-size 64 is larger than the 20 training images"):
        fit(TrainConfig(**tiny(tmp_path / "run", limit=20, batch_size=64)))


def test_lr_find_suggests_a_rate_in_the_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(**tiny(tmp_path / "never", limit=64))
    lrs, losses, suggestion = lr_find(cfg, start=1e-4, end=1.0, steps=12)
    assert len(lrs) == len(losses) and 6 <= len(lrs) <= 12
    assert lrs[0] == pytest.approx(1e-4)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([(1.0 / 1e-4) ** (1 / 11)] * len(ratios))  # exponential growth
    assert all(torch.isfinite(torch.tensor(losses)))
    assert 1e-4 <= suggestion <= 1.0 and lrs[0] <= suggestion <= lrs[-1] * 1.0001
    assert list(tmp_path.iterdir()) == [], "lr_find wrote files"


def test_lr_find_stops_when_the_loss_diverges(tmp_path: Path) -> None:
    cfg = TrainConfig(**tiny(tmp_path / "never", limit=64, precision="fp32"))
    lrs, losses, _ = lr_find(cfg, start=1.0, end=1e8, steps=40)
    assert len(lrs) < 40, "did not stop on divergence"


def test_suggest_lr_picks_the_steepest_descent() -> None:
    lrs = [10 ** (-5 + i * 0.25) for i in range(25)]  # 1e-5 .. 1
    # flat, then a drop that is steepest around index 12, a minimum at 18, then a blow-up
    losses = [2.3 - 1.5 / (1 + 2.718 ** (-(i - 12) * 1.5)) if i <= 18 else 0.8 + (i - 18) for i in range(25)]
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[12])
    assert suggest_lr(lrs[:3], losses[:3]) == pytest.approx(
        min(lrs[:3], key=lambda x: losses[lrs.index(x)]) / 10
    )
    with pytest.raises(ValueError):
        suggest_lr([], [])


def test_tensorboard_events_when_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With torch.utils.tensorboard importable (a recording stand-in here, since tensorboard is optional),
    fit logs every metrics.csv column per epoch into <run>/tensorboard and closes the writer."""
    import types

    calls: list[tuple] = []

    class Writer:
        def __init__(self, log_dir: str) -> None:
            calls.append(("init", log_dir))

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            calls.append((tag, step))

        def flush(self) -> None:
            pass

        def close(self) -> None:
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    fit(TrainConfig(**tiny(tmp_path / "run", limit=32, epochs=2)))
    assert calls[0] == ("init", str(tmp_path / "run" / "tensorboard")) and calls[-1] == ("close",)
    for tag in ("loss/train", "acc/train", "loss/test", "acc/test", "top5/test", "lr", "seconds"):
        assert (tag, 1) in calls and (tag, 2) in calls, tag


def test_cpu_format_search_times_every_candidate_and_leaves_no_trace() -> None:
    """The format search times each candidate, picks the fastest, and touches neither the model nor the
    random streams the run will use."""
    model = create_model("cifar_resnet20", num_classes=10, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    best, speeds = fastest_cpu_format(
        model, (8, 1, 16, 16), 10, [None, torch.bfloat16], [False, True], steps=1
    )
    assert set(speeds) == {"fp32 NCHW", "fp32 channels_last", "bf16 NCHW", "bf16 channels_last"}
    assert all(v > 0 for v in speeds.values())
    assert speeds[str(best)] == max(speeds.values())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_crop_padding_defaults_per_data_set() -> None:
    """CIFAR gets the paper's 4 px crops; Fashion-MNIST's short default recipe flips only; a flag wins."""
    assert TrainConfig(data="cifar10").augment().crop_padding == 4
    assert TrainConfig().augment().crop_padding == 0
    assert TrainConfig(data="cifar10", crop_padding=1).augment().crop_padding == 1


def test_variant_outside_the_zoo_trains_and_reloads_from_its_weights_file(tmp_path: Path) -> None:
    """A run with --spec-overrides and --shortcut stores them with the weights, so evaluate/predict/export
    rebuild the same network from the file alone."""
    out = tmp_path / "variant"
    history = fit(TrainConfig(**tiny(out, spec_overrides={"layers": [1, 1, 1]}, shortcut="B")))
    trained = load_trained(out / "last.safetensors")
    assert trained.model.spec.layers == (1, 1, 1) and trained.model.spec.shortcut == "B"
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), history.model.eval()(x))
