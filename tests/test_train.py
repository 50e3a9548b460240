"""Training on the real fixture data: it learns, resumes bit-exactly after SIGKILL, fine-tunes and freezes
as asked, finds a learning rate, and every training option has its stated effect. Sizes are tiny so the
file stays fast."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import resnets
from resnets import create_model
from resnets.data import DataBundle, TensorSplit, make_loader, mixup
from resnets.models.metadata import WeightsMeta, read_meta
from resnets.train import History, TrainConfig, evaluate, fit, schedule
from resnets.train import folder as folder_module
from resnets.train import run as run_module
from resnets.train import setup as train_setup
from resnets.train.autotune import fastest_cpu_format
from resnets.train.checkpoint import save_weights
from resnets.train.config import apply_preset
from resnets.train.folder import METRIC_FIELDS
from resnets.train.loop import load_data
from resnets.train.lr_find import lr_find, suggest_lr
from resnets.train.optim import default_lr, lr_factor, make_optimizer
from resnets.train.runtime import resolve_runtime
from resnets.train.step import MixedTargets, classification_loss
from resnets.trained import load_trained, predict

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
CIFAR = FIXTURES / "cifar10"
RUN_FILES = (
    "config.json",
    "runtime.json",
    "metrics.csv",
    "last.safetensors",
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
    # no validation split: nothing is selected, the last epoch is the model and its test result is final
    assert not (out / "best.safetensors").exists() and history.best_epoch == 3
    assert history.final.top1 == pytest.approx(history.epochs[-1]["test_acc"])
    saved = TrainConfig.load(out / "config.json")
    assert saved.limit == 800 and saved.precision == "auto"  # the settings as given, so the run repeats
    resolved = json.loads((out / "runtime.json").read_text())  # what they became here, for resume
    assert resolved["precision"] in ("fp32", "bf16") and isinstance(resolved["channels_last"], bool)

    # the saved weights carry their metadata and reproduce the logged accuracy
    meta = read_meta(out / "last.safetensors")
    assert meta["epoch"] == 3 and meta["model"] == "cifar_resnet20" and meta["image_size"] == [12, 12]
    trained = load_trained(out / "last.safetensors")
    assert trained.classes[0] == "T-shirt/top" and trained.model.in_channels == 1
    bundle = train_setup.load_data(TrainConfig.load(out / "config.json"))  # the same 500 test images
    assert len(bundle.test) == 500 and bundle.image_size == (12, 12)
    runtime = resolve_runtime(replace(saved, precision=resolved["precision"]))  # the precision the run chose
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
        # one format for both runs: `auto` times the formats, and on a loaded machine two runs may pick two
        "--precision", "fp32", "--no-channels-last", "--no-compile",
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
    build, save = train_setup.build_model, folder_module.save_weights

    def build_and_record(cfg: TrainConfig, bundle):  # noqa: ANN001, ANN202
        model = build(cfg, bundle)
        seen["init"] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return model

    def save_and_record(state: dict, path: Path, meta: WeightsMeta) -> None:
        if path.name == "last.safetensors":
            seen[f"epoch{meta.epoch}"] = {k: v.detach().clone() for k, v in state.items()}
        save(state, path, meta)

    monkeypatch.setattr(train_setup, "build_model", build_and_record)
    monkeypatch.setattr(folder_module, "save_weights", save_and_record)
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
    convs = [k for k in body if k.endswith(".weight") and init[k].ndim == 4]
    norms = [k for k in body if k not in convs]  # BatchNorm scales and shifts
    assert len(convs) == 19 and len(norms) == 38  # ResNet-20: stem + 18 block convs, each with a BN
    for key in convs:
        assert torch.equal(after[key], init[key]), f"frozen {key} changed"
    assert all(not torch.equal(after[k], init[k]) for k in norms), (
        "BatchNorm is trainable by default (fastai)"
    )
    assert not torch.equal(after["fc.weight"], init["fc.weight"]), "the head did not train"
    assert after["fc.weight"].shape == (10, 64)


def test_freeze_without_train_bn_freezes_batchnorm_too(tmp_path: Path, capture: dict) -> None:
    weights = pretrained_cifar_file(tmp_path / "pretrained.pth")
    with pytest.warns(UserWarning, match="classifier re-initialised"):
        fit(TrainConfig(**tiny(tmp_path / "run", weights=str(weights), freeze=True, train_bn=False, lr=0.05)))
    init, after = capture["init"], capture["epoch1"]
    for key in (k for k in init if not is_head(k)):
        assert torch.equal(after[key], init[key]), f"frozen {key} changed"


def test_freeze_epochs_unfreezes_the_body_after_the_head_phase(tmp_path: Path, capture: dict) -> None:
    weights = pretrained_cifar_file(tmp_path / "pretrained.pth")
    with pytest.warns(UserWarning, match="classifier re-initialised"):
        history = fit(
            TrainConfig(**tiny(tmp_path / "run", weights=str(weights), freeze_epochs=1, epochs=1, lr=0.05))
        )
    assert len(history.epochs) == 2, "fastai's fine_tune(1, freeze_epochs=1): one frozen epoch, then one more"
    init, first, second = capture["init"], capture["epoch1"], capture["epoch2"]
    body = [k for k in init if not is_head(k)]
    for key in (k for k in body if init[k].ndim == 4):
        assert torch.equal(first[key], init[key]), f"{key} changed while frozen"
    assert not torch.equal(first["fc.weight"], init["fc.weight"])
    changed = [k for k in body if not torch.equal(second[k], first[k])]
    assert changed == body, f"unchanged after unfreezing: {sorted(set(body) - set(changed))}"


def test_fine_tune_schedule_is_fastais() -> None:
    """fastai's fine_tune(freeze_epochs=3, epochs=12, base_lr=5e-4, pct_start=0.3): fit_one_cycle(3, base_lr,
    pct_start=0.99), then base_lr /= 2 and fit_one_cycle(12, base_lr, pct_start) - the first peak after 99% of
    its steps, the second at half the LR after 30% of the 12 epochs."""
    cfg = TrainConfig(freeze_epochs=3, epochs=12, warmup_epochs=3.6, lr=5e-4, schedule="onecycle")  # 0.3 x 12
    lr = [default_lr(cfg) * schedule.lr_multiplier(cfg, 100, s) for s in range(1500)]
    first, second = lr[:300], lr[300:]
    assert max(first) == pytest.approx(5e-4) and first.index(max(first)) == 296  # 99% of 300 steps
    assert max(second) == pytest.approx(2.5e-4) and second.index(max(second)) == 359  # 30% of 1200 steps
    assert second[-1] < 1e-6 and first[-1] < first[296]
    plain = TrainConfig(epochs=15, warmup_epochs=4.5, lr=5e-4)  # no phases: one schedule at the full LR
    assert max(schedule.lr_multiplier(plain, 100, s) for s in range(1500)) == pytest.approx(1.0)
    # --schedule fastai: fit_one_cycle's cosines, from lr/25 (fine_tune's second phase: lr/5) to lr/1e5
    fastai = replace(cfg, schedule="fastai")
    lr = [schedule.lr_multiplier(fastai, 100, s) for s in range(1500)]
    assert lr[0] == pytest.approx(1 / 25) and lr[297] == pytest.approx(1) == max(lr[:300])  # 99% of 300 steps
    assert lr[300] == pytest.approx(0.5 / 5) and lr[660] == pytest.approx(0.5) and max(lr[300:]) <= 0.5
    assert lr[300 + 180] == pytest.approx(0.5 * (1 / 5 + 1) / 2)  # halfway up a cosine: the mean of its ends
    assert lr[-1] < 1e-5 and lr[660 + 420] == pytest.approx(0.5 * (1 + 1e-5) / 2)
    # ... and its momentum (Adam's beta1) cycled against the LR: 0.95, 0.85 at each peak, back to 0.95
    momentum = [schedule.momentum_at(fastai, 100, s) for s in (0, 297, 300, 660, 1499)]
    assert momentum[:4] == pytest.approx([0.95, 0.85, 0.95, 0.85]) and 0.9499 < momentum[4] < 0.95
    assert schedule.momentum_at(cfg, 100, 0) is None  # other schedules leave the optimizer's own


def test_fine_tune_from_scratch_freezes_nothing_and_starts_the_optimizer_afresh(
    tmp_path: Path, capture: dict
) -> None:
    """As fastai's Learner on a model with one parameter group (the fastbook seed's custom ResNet-34):
    --freeze-epochs without pretrained weights trains every layer in the first phase too, and the unfreezing
    clears the optimizer's state (fastai's freeze_to -> opt.clear_state()): AdamW's step count after the run
    is the second phase's steps, not both phases'. With --schedule fastai, Adam's beta1 follows the cycle."""
    out = tmp_path / "run"
    cfg = TrainConfig(**tiny(out, freeze_epochs=1, epochs=2, optimizer="adamw", lr=1e-3, schedule="fastai"))
    fit(cfg)
    init, first = capture["init"], capture["epoch1"]
    assert all(not torch.equal(first[k], init[k]) for k in init if init[k].ndim == 4), "a conv stayed frozen"
    fit(TrainConfig(**tiny(tmp_path / "one-phase", epochs=3, optimizer="adamw", lr=1e-3)))
    for run, phase_epochs in ((out, 2), (tmp_path / "one-phase", 3)):
        state = torch.load(run / "state.pt", weights_only=True)
        steps_per_epoch = state["step"] // 3
        adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
        assert steps_per_epoch > 1 and adam_steps == {phase_epochs * steps_per_epoch}, (run.name, adam_steps)
    beta1 = torch.load(out / "state.pt", weights_only=True)["optimizer"]["param_groups"][0]["betas"][0]
    last = schedule.momentum_at(cfg, steps_per_epoch, 3 * steps_per_epoch - 1)
    assert beta1 == pytest.approx(last) and abs(last - 0.9) > 0.01, (beta1, last)  # not AdamW's own 0.9


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
    meta = read_meta(out / "last.safetensors")
    assert meta["model"] == "resnet18" and meta["num_classes"] == 10 and meta["in_channels"] == 3
    assert meta["classes"] == sorted(p.name for p in (CIFAR / "train").iterdir())
    assert meta["image_size"] == [32, 32]
    images = [next((CIFAR / "test" / c).iterdir()) for c in ("cat", "ship")]
    top = [t for _, t in predict(load_trained(out), images, top_k=3)]
    assert [len(t) for t in top] == [3, 3]
    assert all(name in meta["classes"] for t in top for name, _ in t)


def test_ema_saves_the_averaged_weights(tmp_path: Path) -> None:
    out = tmp_path / "ema"
    fit(TrainConfig(**tiny(out, limit=32, ema=0.5)))
    ema_weights = load_file(out / "last.safetensors")
    raw = torch.load(out / "state.pt", weights_only=True)["model"]
    assert not torch.equal(ema_weights["layer1.0.conv1.weight"], raw["layer1.0.conv1.weight"])


def test_mixup_blends_pairs_and_trains_on_their_mixed_targets() -> None:
    n = 8
    x = torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1).expand(n, 1, 2, 2)  # image i is all i
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixed_x, y_a, y_b, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(3))
    assert 0 < lam < 1 and torch.equal(y_a, y)
    partner = ((mixed_x[:, 0, 0, 0] - lam * torch.arange(n)) / (1 - lam)).round().long()
    assert sorted(partner.tolist()) == list(range(n))  # every image is blended with one other
    assert torch.allclose(mixed_x, lam * x + (1 - lam) * x[partner]) and torch.equal(y_b, y[partner])
    logits = torch.randn(n, 3, dtype=torch.float64)
    log_p = logits.log_softmax(1)
    by_hand = -(lam * log_p[range(n), y] + (1 - lam) * log_p[range(n), y[partner]]).mean()
    loss = classification_loss(logits, y, 0.0, MixedTargets(y_a, y_b, lam))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-12)

    def spread(alpha: float) -> float:  # mean |lam - 1/2| of Beta(alpha, alpha) draws
        lams = [mixup(x, y, alpha, torch.Generator().manual_seed(s))[3] for s in range(200)]
        return sum(abs(v - 0.5) for v in lams) / len(lams)

    assert spread(0.2) > 0.3 and spread(5.0) < 0.15  # small alpha: nearly one image; large: half and half


def test_cutout_zeroes_one_square_of_the_given_size() -> None:
    """Through the training loader: every image gets one zeroed square of at most `cutout` px a side (less
    only where it is clipped at a border), the same on every channel, and nothing else changes."""
    images = torch.full((64, 2, 12, 12), 200, dtype=torch.uint8)
    labels = torch.zeros(64, dtype=torch.long)
    bundle = DataBundle("ones", ["a"], 2, (12, 12), (0.0, 0.0), (1.0, 1.0), TensorSplit(images, labels),
                        TensorSplit(images, labels))  # fmt: skip
    cfg = TrainConfig(cutout=4, flip=False, crop_padding=0)
    x, _ = next(iter(make_loader(bundle, "train", 64, train=True, augment=cfg.augment(), workers=0)))
    holes = x == 0
    assert torch.equal(holes, holes[:, :1].expand_as(holes))
    assert torch.allclose(x[~holes], torch.tensor(200 / 255))
    full = 0
    for hole in holes[:, 0]:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert int(hole.sum()) == len(rows) * len(cols)  # one filled rectangle
        for idx in (rows, cols):
            assert torch.equal(idx, torch.arange(int(idx[0]), int(idx[-1]) + 1))
            assert len(idx) == 4 or idx[0] == 0 or idx[-1] == 11  # smaller only at a border
        full += int(hole.sum()) == 16
    assert full > 20


def test_no_normalize_feeds_pixels_in_unit_range_and_the_weights_say_so(tmp_path: Path) -> None:
    """--no-normalize (d2l's loaders: ToTensor, no Normalize): batches hold the pixels in [0, 1], and the
    weights record mean 0 and std 1, so predict feeds them the same; the default subtracts the data's mean."""
    run = fit(TrainConfig(**tiny(tmp_path / "run", normalize=False)))
    trained = load_trained(tmp_path / "run")
    assert (trained.mean, trained.std) == ((0.0,), (1.0,)) and run.test_acc > 0
    for normalize in (False, True):
        bundle = load_data(TrainConfig(**tiny(tmp_path / "x", normalize=normalize)))
        x, _ = next(iter(make_loader(bundle, "test", 64, train=False, workers=0)))
        assert (float(x.min()) >= 0 and float(x.max()) <= 1) != normalize
        assert float(x.min()) < 0 if normalize else float(x.max()) > 0.9


def test_adamw_option_is_torch_adamw_without_decay_on_bn_and_biases() -> None:
    model = create_model("cifar_resnet20", spec_overrides={"layers": [1, 1, 1]})
    reference = copy.deepcopy(model)
    ours = make_optimizer(model, TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.1))
    decay = [p for p in reference.parameters() if p.ndim > 1]
    no_decay = [p for p in reference.parameters() if p.ndim <= 1]
    theirs = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                               lr=0.01)  # fmt: skip
    start = model.conv1.weight.detach().clone()
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        ours.step()
        theirs.step()
        if step == 0:  # Adam's first step is lr * sign(grad), after decoupled decay of the weights
            grad = model.conv1.weight.grad
            expected = start * (1 - 0.01 * 0.1) - 0.01 * grad / (grad.abs() + 1e-8)
            assert torch.allclose(model.conv1.weight, expected, atol=1e-7)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-7)


def test_cosine_schedule_is_warmup_then_torch_cosine_annealing() -> None:
    total, warmup = 50, 5
    assert [lr_factor(s, total, warmup, "cosine") for s in range(warmup)] == pytest.approx(
        [0.2, 0.4, 0.6, 0.8, 1]
    )
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)
    for step in range(warmup, total + 1):
        assert lr_factor(step, total, warmup, "cosine") == pytest.approx(
            optimizer.param_groups[0]["lr"], abs=1e-9
        )
        optimizer.step()
        annealing.step()
    assert lr_factor(warmup + 15, total, warmup, "onecycle") == pytest.approx(1 - 15 / 45)  # linear instead


def test_step_and_constant_schedules_and_the_source_presets() -> None:
    """Step: x gamma at each milestone (fractions of the length), after the warm-up; constant: 1 after it.
    The paper preset's milestones land at epochs 91 and 137 of 182 (351 steps per epoch: 32k and 48k of 64k
    iterations), and both source presets validate."""
    assert [lr_factor(s, 10, 2, "step", [0.5, 0.75], 0.1) for s in range(10)] == pytest.approx(
        [0.5, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01]
    )
    assert [lr_factor(s, 10, 2, "constant") for s in range(10)] == [0.5] + [1.0] * 9
    paper = apply_preset("paper", {})
    at_epoch = [schedule.lr_multiplier(paper, 351, e * 351) for e in (0, 90, 91, 136, 137, 181)]
    assert at_epoch == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    for cfg in (paper, apply_preset("d2l", {})):
        cfg.validate()
    assert (paper.nesterov, paper.tta, paper.label_smoothing, paper.val_split) == (False, False, 0.0, 0.1)
    assert make_optimizer(create_model("cifar_resnet20"), paper).defaults["nesterov"] is False
    fastai_adam = TrainConfig(optimizer="adamw", adam_beta2=0.99, adam_eps=1e-5)  # fastai's Adam
    defaults = make_optimizer(create_model("cifar_resnet20"), fastai_adam).defaults
    assert (defaults["betas"], defaults["eps"]) == ((0.9, 0.99), 1e-5)


def test_grad_clip_bounds_every_step_of_a_run(tmp_path: Path) -> None:
    """Plain SGD (no momentum, no weight decay) with --grad-clip c moves the weights by at most lr x c per
    step, as the total gradient norm is at most c; the same run without clipping moves them much further."""
    init = tmp_path / "init.pth"
    torch.save(create_model("cifar_resnet20", num_classes=10, in_channels=1).state_dict(), init)
    start = torch.load(init, weights_only=True)
    names = [n for n, _ in create_model("cifar_resnet20", num_classes=10, in_channels=1).named_parameters()]
    lr, clip, steps = 0.1, 1e-3, 2  # 32 images in batches of 16
    moved = {}
    for c in (0.0, clip):
        out = tmp_path / f"clip{c}"
        fit(TrainConfig(**tiny(out, limit=32, weights=str(init), momentum=0.0, weight_decay=0.0, lr=lr,
                               grad_clip=c, precision="fp32", label_smoothing=0.0)))  # fmt: skip
        final = load_file(out / "last.safetensors")
        moved[c] = torch.cat([(final[n] - start[n]).flatten() for n in names]).norm().item()
    assert 0 < moved[clip] <= steps * lr * clip * 1.0001
    assert moved[0.0] > 10 * steps * lr * clip


@pytest.mark.slow
def test_compile_trains_through_torch_compile_to_the_eager_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compile trains through torch.compile (Inductor's default mode on a CPU) and ends at the weights the
    same eager run reaches, up to float32 rounding; without it nothing is compiled. torch.compile on a CPU
    needs a C++ toolchain and minutes of compiling: slow-marked."""
    compiled, real_compile = [], torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda model, **kw: compiled.append(kw) or real_compile(model, **kw)
    )
    weights = {}
    for name, flag in (("eager", False), ("compiled", True)):
        out = tmp_path / name
        fit(TrainConfig(**tiny(out, compile=flag, limit=32, precision="fp32", channels_last=False)))
        assert compiled == ([{"mode": None}] if flag else []), name
        weights[name] = load_file(out / "last.safetensors")
    for key, eager in weights["eager"].items():
        torch.testing.assert_close(weights["compiled"][key], eager, rtol=1e-4, atol=1e-5, msg=key)


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


def test_tensorboard_events_hold_the_metrics(tmp_path: Path) -> None:
    """A run writes TensorBoard event files that TensorBoard itself reads back as metrics.csv's numbers."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    fit(TrainConfig(**tiny(out, limit=32, epochs=2)))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    _, rows = read_metrics(out)
    for tag, column in (("loss/train", "train_loss"), ("acc/test", "test_acc"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2], tag
        assert [s.value for s in scalars] == pytest.approx([float(r[column]) for r in rows], rel=1e-6), tag


def test_cpu_format_search_times_every_candidate_and_leaves_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The format search times each candidate's real steps, picks the fastest, and touches neither the model
    nor the random streams the run will use. The timer's answer is replaced after it ran, so that the
    fastest format is known: the third candidate, bf16 NCHW."""
    from resnets.train import autotune

    timed, real_timer = [], autotune.median_seconds_each

    def timer(runs: list, *args: object, **kwargs: object) -> list[float]:
        timed.append(real_timer(runs, *args, **kwargs))
        return [0.4, 0.2, 0.1, 0.8]

    monkeypatch.setattr(autotune, "median_seconds_each", timer)
    monkeypatch.setattr(autotune, "MAX_STEP_SECONDS", 60.0)  # a busy test machine still times every format
    model = create_model("cifar_resnet20", num_classes=10, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    best, speeds = fastest_cpu_format(
        model, (8, 1, 16, 16), 10, [None, torch.bfloat16], [False, True], steps=1
    )
    assert len(timed) == 1 and len(timed[0]) == 4 and all(t > 0 for t in timed[0])  # four real steps timed
    assert speeds == {
        "fp32 NCHW": 20.0,
        "fp32 channels_last": 40.0,
        "bf16 NCHW": 80.0,
        "bf16 channels_last": 10.0,
    }
    assert (best.amp_dtype, best.channels_last) == (torch.bfloat16, False)
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


def test_progressive_resizing_trains_small_first_and_evaluates_at_full_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--progressive-from 16 over 5 epochs of 28 px images: the training batches grow 16, 20, 24 and reach
    28 px at the 4th epoch (by 3/4 of the run), where they stay; evaluation always sees 28 px."""
    seen: list[tuple[str, tuple[int, ...]]] = []
    real = run_module.make_loader

    def peeking(bundle: DataBundle, split: str, *args: object, **kwargs: object):  # noqa: ANN202
        loader = real(bundle, split, *args, **kwargs)
        seen.append((split, tuple(next(iter(loader))[0].shape[-2:])))  # iterating is seeded: no side effect
        return loader

    monkeypatch.setattr(run_module, "make_loader", peeking)
    fit(TrainConfig(**tiny(tmp_path / "run", epochs=5, image_size=None, limit=32, progressive_from=16)))
    trained = [size for split, size in seen if split == "train"][-5:]  # the first one counts the steps
    assert trained == [(16, 16), (20, 20), (24, 24), (28, 28), (28, 28)]
    assert {size for split, size in seen if split != "train"} == {(28, 28)}
    for side, message in ((28, "must be smaller than the images"), (4, "progressive_from is the first")):
        with pytest.raises(ValueError, match=message):
            fit(TrainConfig(**tiny(tmp_path / "bad", image_size=None, progressive_from=side)))


def test_resume_keeps_the_best_epoch_and_the_early_stop_count(tmp_path: Path) -> None:
    """A run with a validation split and early stopping, stopped after 2 epochs and resumed, selects the same
    epoch, stops at the same epoch and ends with the same weights as the run that was never stopped."""
    options = tiny(tmp_path / "whole", epochs=6, val_split=0.25, early_stop=1, monitor="loss", lr=0.2,
                   schedule="constant", warmup_epochs=0.0,
                   precision="fp32", channels_last=False, compile=False, limit=64)  # fmt: skip
    whole = fit(TrainConfig(**options))
    fit(TrainConfig(**(options | {"epochs": 2, "out": str(tmp_path / "part")})))
    resumed = fit(resume=tmp_path / "part", changes={"epochs": 6})
    assert [e["val_score"] for e in resumed.epochs] == [e["val_score"] for e in whole.epochs]
    assert (resumed.best_epoch, resumed.best_acc) == (whole.best_epoch, whole.best_acc)
    assert len(whole.epochs) < 6, "the recipe should stop early; make lr larger"
    best = (
        load_file(tmp_path / "whole" / "best.safetensors"),
        load_file(tmp_path / "part" / "best.safetensors"),
    )
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])


def test_weights_metadata_is_one_record_for_writer_and_reader(tmp_path: Path) -> None:
    """Every field of WeightsMeta is written by a run and read back with its type; a field of the wrong type
    is refused by name on reading and on writing."""
    fit(TrainConfig(**tiny(tmp_path / "run")))
    meta = read_meta(tmp_path / "run" / "last.safetensors")
    assert set(meta) == {f.name for f in dataclasses.fields(WeightsMeta)}
    WeightsMeta(**meta)  # the reader's dict is the writer's record
    weights = load_file(tmp_path / "run" / "last.safetensors")
    with pytest.raises(ValueError, match="metadata 'epoch' is 'one'"):
        save_weights(weights, tmp_path / "w.safetensors", meta | {"epoch": "one"})
    with pytest.raises(ValueError, match="metadata 'classes' is 3"):
        save_weights(weights, tmp_path / "w.safetensors", meta | {"classes": 3})
    assert not (tmp_path / "w.safetensors").exists()


def test_a_moved_folder_data_set_is_found_again_on_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder data set that moved: `--data-root NEW` (or `--data folder:NEW`) on resume replaces the path,
    and is checked to hold the classes the run trained on; other data is refused by name."""
    from resnets.cli import main

    cifar = Path(__file__).parent / "fixtures" / "cifar10"

    def copy(root: Path, classes: tuple[str, ...]) -> Path:
        for split in ("train", "test"):
            for c in classes:
                shutil.copytree(cifar / split / c, root / split / c)
        return root

    data, out = copy(tmp_path / "data", ("cat", "dog")), tmp_path / "run"
    fit(TrainConfig(data=f"folder:{data}", model="cifar_resnet20", image_size=8, epochs=1, batch_size=8,
                    workers=0, quiet=True, out=str(out)))  # fmt: skip
    moved = tmp_path / "moved"
    data.rename(moved)
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 2  # the old path is gone
    assert "if it moved, resume with --data-root NEW_PATH" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--data-root", str(moved), "--quiet"]) == 0
    assert TrainConfig.load(out / "config.json").data == f"folder:{moved}"  # later resumes need no flag
    other = copy(tmp_path / "other", ("cat", "truck"))
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "3", "--data", f"folder:{other}", "--quiet"]) == 2
    assert "trained on cat, dog" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "3", "--data", "cifar10", "--quiet"]) == 2
    assert "--data cannot change" in capsys.readouterr().err
