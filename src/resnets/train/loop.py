"""The training loop: `train_one_epoch`, `evaluate` and `fit`, which ties them to data, checkpoints
and reports."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataBundle, FolderSplit, load_dataset, make_loader, mixup
from ..data.bundle import balanced_subset
from ..data.seeds import mix_seed
from ..models import ResNet, ResNetSpec, create_model, get_entry
from . import distributed
from .autotune import fastest_cpu_format
from .checkpoint import atomic_write_text, load_state, save_state, save_weights
from .config import TrainConfig
from .metrics import EvalResult, MetricAccumulator
from .optim import default_lr, lr_factor, make_optimizer, set_lr
from .progress import progress
from .runtime import Runtime, cpu_has_bf16, precision_name, resolve_runtime, seed_everything
from .tboard import log_epoch, open_writer

METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr", "seconds"]


@dataclass
class History:
    """What `fit` returns: per-epoch metrics, the run folder and the trained model."""

    run_dir: Path | None
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_acc: float = 0.0
    model: ResNet | None = None
    final: EvalResult | None = None

    @property
    def seconds(self) -> float:
        return sum(e["seconds"] for e in self.epochs)


def show_progress(cfg: TrainConfig, runtime: Runtime) -> bool:
    return runtime.is_main and not cfg.quiet


def log(cfg: TrainConfig, runtime: Runtime, message: str) -> None:
    if runtime.is_main and not cfg.quiet:
        print(message, flush=True)


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    cfg: TrainConfig,
    lr_at: callable,
    step: int,
    generator: torch.Generator,
    ema: nn.Module | None = None,
    desc: str = "train",
) -> tuple[float, float, int]:
    """One pass over `loader`; returns (mean loss, accuracy, next global step). LR is set every step."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = progress(loader, desc, enabled=show_progress(cfg, runtime))
    start = time.perf_counter()
    for x, y in bar:
        set_lr(optimizer, default_lr(cfg), lr_at(step))
        with runtime.autocast():
            if cfg.mixup > 0:
                x, y_a, y_b, lam = mixup(x, y, cfg.mixup, generator)
                logits = model(x)
                loss = lam * F.cross_entropy(logits, y_a, label_smoothing=cfg.label_smoothing) + (
                    1 - lam
                ) * F.cross_entropy(logits, y_b, label_smoothing=cfg.label_smoothing)
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        n = len(y)
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == y).sum().item()
        seen += n
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        img_s=f"{seen / (time.perf_counter() - start):.0f}")  # fmt: skip
    if not torch.isfinite(torch.tensor(loss_sum)):
        raise RuntimeError("training diverged (loss is not finite): lower --lr or use --grad-clip")
    return loss_sum / max(seen, 1), correct / max(seen, 1), step


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, runtime: Runtime, tta: bool = False) -> EvalResult:
    """Loss, top-1/top-5 and confusion matrix over `loader`; `tta` averages with the mirrored image.
    In a distributed job each rank evaluates every world_size-th batch and all get the summed result."""
    model.eval()
    acc = MetricAccumulator(num_classes)
    for x, y in islice(loader, runtime.rank, None, runtime.world_size):
        with runtime.autocast():
            logits = model(x).float()
            if tta:  # mean of the two views' probabilities, in log space: no log(0) when both underflow
                views = torch.stack([logits.log_softmax(1), model(x.flip(3)).float().log_softmax(1)])
                logits = views.logsumexp(0) - math.log(2)
        acc.update(logits, y, F.cross_entropy(logits, y, reduction="sum").item())
    return (distributed.reduce_metrics(acc, runtime.device) if runtime.world_size > 1 else acc).result()


def model_spec(cfg: TrainConfig) -> ResNetSpec:
    """`cfg.model`'s registered spec with `cfg.spec_overrides` applied (lists from config.json become tuples)."""
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in (cfg.spec_overrides or {}).items()}
    if cfg.shortcut is not None:
        changes.setdefault("shortcut", cfg.shortcut)
    return get_entry(cfg.model).spec.with_(**changes)


def build_model(cfg: TrainConfig, bundle: DataBundle) -> ResNet:
    """The model for this data: classes from the data, channels from the data (or --in-channels)."""
    return create_model(
        cfg.model,
        num_classes=bundle.num_classes,
        in_channels=bundle.channels,
        weights=cfg.weights,
        shortcut=cfg.shortcut,
        zero_init_residual=cfg.zero_init_residual and cfg.weights is None,
        drop_rate=cfg.drop_rate,
        stochastic_depth=cfg.stochastic_depth,
        spec_overrides=cfg.spec_overrides,
    )


def load_data(cfg: TrainConfig) -> DataBundle:
    """The data set of `cfg` at its own size (or `--image-size`): any model takes any size, down to 1 px."""
    bundle = load_dataset(
        cfg.data,
        cfg.data_root,
        channels=cfg.in_channels,
        image_size=cfg.image_size,
        val_split=cfg.val_split,
        strict=cfg.strict_data,
        limit=cfg.limit,
    )
    if cfg.test_limit is not None and cfg.test_limit < len(bundle.test):
        labels = bundle.test.targets if isinstance(bundle.test, FolderSplit) else bundle.test.labels.tolist()
        bundle.test = bundle.test.subset(balanced_subset(labels, cfg.test_limit))
    return bundle


def tune_cpu_format(cfg: TrainConfig, runtime: Runtime, model: ResNet, bundle: DataBundle) -> Runtime:
    """On a CPU, time the formats left to "auto" (precision, channels_last) and keep the fastest; the choice
    is written into `cfg`, so config.json and a resumed run use it. Skipped where the search would cost
    more than ~5% of the run, for large images, in distributed jobs (ranks must agree) and with
    --deterministic."""
    precisions = [None, torch.bfloat16] if cfg.precision == "auto" and cpu_has_bf16() else [runtime.amp_dtype]
    layouts = [False, True] if cfg.channels_last is None else [cfg.channels_last]
    steps = cfg.epochs * (len(bundle.train) // cfg.batch_size)
    searched = len(precisions) * len(layouts) * 6  # steps the search takes (1 warm-up + 5 timed each)
    if (
        runtime.device.type == "cpu" and searched > 6 and steps >= 20 * searched
        and bundle.image_size[0] * bundle.image_size[1] <= 64 * 64
        and runtime.world_size == 1 and not cfg.deterministic
    ):  # fmt: skip
        shape = (cfg.batch_size, bundle.channels, *bundle.image_size)
        best, speeds = fastest_cpu_format(model, shape, bundle.num_classes, precisions, layouts)
        if speeds[str(best)] > 0:
            runtime = replace(runtime, amp_dtype=best.amp_dtype, channels_last=best.channels_last)
            log(cfg, runtime, "fastest training format here: "
                + ", ".join(f"{name} {speed:.0f} img/s" for name, speed in sorted(speeds.items(), key=lambda kv: -kv[1])))  # fmt: skip
    cfg.precision = precision_name(runtime.amp_dtype)
    cfg.channels_last = runtime.channels_last
    return runtime


def set_frozen(model: ResNet, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the classifier head, for transfer learning."""
    head = {id(p) for p in list(model.fc.parameters()) + list(model.final_bn.parameters())}
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(not frozen)


def default_run_dir(cfg: TrainConfig) -> Path:
    data = cfg.data.split(":", 1)[0] if cfg.data.startswith("folder:") else cfg.data
    return Path("runs") / f"{cfg.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def weights_meta(cfg: TrainConfig, bundle: DataBundle, model: ResNet) -> dict:
    """Stored inside every .safetensors file, so evaluate/predict/export need only that file."""
    return {
        "model": cfg.model,
        "num_classes": model.num_classes,
        "in_channels": model.in_channels,
        "classes": bundle.classes,
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "image_size": list(bundle.image_size),
        "data": cfg.data,
        "shortcut": cfg.shortcut,
        "spec_overrides": cfg.spec_overrides,
    }


def write_metrics(run_dir: Path, epochs: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    writer.writerows(epochs)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def fit(cfg: TrainConfig, resume: str | Path | None = None) -> History:
    """Train `cfg.model` on `cfg.data`; with `resume`, continue the run in that folder from its checkpoint.
    Under torchrun every process calls this and they train as one job (see `distributed`)."""
    with distributed.process_group():
        return _fit(cfg, distributed.elastic_resume(cfg, resume))


def run_config(run_dir: Path) -> TrainConfig:
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"cannot resume: {run_dir}/config.json not found (is it a run folder?)")
    return TrainConfig.load(run_dir / "config.json")


def _fit(cfg: TrainConfig, resume: str | Path | None) -> History:
    from .report import write_report

    if resume is not None:
        run_dir = Path(resume)
        quiet = cfg.quiet
        cfg = distributed.on_main(lambda: run_config(run_dir))
        cfg.quiet = quiet
    cfg.validate()
    runtime = resolve_runtime(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    bundle = load_data(cfg)
    if -(-len(bundle.train) // runtime.world_size) < cfg.batch_size:  # drop_last would leave no batch
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {len(bundle.train)} training images "
                         f"({runtime.world_size} process(es)): lower it or use more data")  # fmt: skip
    model = build_model(cfg, bundle).to(runtime.device)
    runtime = tune_cpu_format(cfg, runtime, model, bundle)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn:
        model = distributed.sync_batch_norm(model, runtime.device)
    raw_model = model
    if not cfg.out and not resume:
        run_dir = distributed.on_main(lambda: default_run_dir(cfg))  # rank 0's clock names the folder
    elif not resume:
        run_dir = Path(cfg.out)  # a resumed run stays in the folder given, even if it was moved since
    cfg.out = str(run_dir)

    lr_ratio = cfg.lr_ratio if cfg.weights else 1.0
    optimizer = make_optimizer(model, cfg, lr_ratio)
    ema = None
    if cfg.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True
        )
    history = History(run_dir)
    start_epoch, step = 0, 0
    if resume is not None:
        state = distributed.on_main(lambda: load_state(run_dir))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start_epoch, step = state["epoch"], state["step"]
        history.epochs, history.best_acc = state["history"], state["best_acc"]
        torch.set_rng_state(state["rng"])
        if runtime.device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], runtime.device)
        log(cfg, runtime, f"resuming {run_dir} after epoch {start_epoch}/{cfg.epochs}")
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", cfg.to_json())
    writer = open_writer(run_dir) if runtime.is_main else None  # TensorBoard, when installed
    train_model, frozen = model, None  # (re)built when freezing changes: DDP syncs the trainable params only

    steps_per_epoch = len(make_loader(bundle, "train", cfg.batch_size, train=True, rank=runtime.rank,
                                      world_size=runtime.world_size))  # fmt: skip
    freeze_until = cfg.epochs if cfg.freeze else cfg.freeze_epochs

    def lr_at(s: int) -> float:
        # fastai's fine_tune: one schedule for the frozen phase, a fresh one after unfreezing
        boundary = freeze_until * steps_per_epoch if 0 < freeze_until < cfg.epochs else 0
        begin, end = (0, boundary) if s < boundary else (boundary, cfg.epochs * steps_per_epoch)
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), (end - begin) // 2)
        return lr_factor(s - begin, end - begin, warmup, cfg.schedule)

    augment = cfg.augment()
    test_loader = make_loader(bundle, "test", max(cfg.batch_size, 256), train=False, device=runtime.device,
                              workers=cfg.workers, channels_last=runtime.channels_last)  # fmt: skip
    log(cfg, runtime, f"training {cfg.model} on {bundle.name} ({len(bundle.train)} train / {len(bundle.test)} test "
        f"images, {bundle.num_classes} classes) for {cfg.epochs} epochs on {runtime.device} "
        f"({precision_name(runtime.amp_dtype)}{', channels_last' if runtime.channels_last else ''}) -> {run_dir}")  # fmt: skip
    if runtime.world_size > 1:
        log(cfg, runtime, f"distributed: {runtime.world_size} processes x batch {cfg.batch_size} = global batch "
            f"{runtime.world_size * cfg.batch_size}, peak lr {default_lr(cfg):g}")  # fmt: skip
    for epoch in range(start_epoch, cfg.epochs):
        if frozen != (epoch < freeze_until):
            frozen = epoch < freeze_until
            set_frozen(model, frozen)
            train_model = distributed.wrap(model, runtime.device)
            train_model = torch.compile(train_model) if cfg.compile else train_model
        t0 = time.perf_counter()
        loader = make_loader(bundle, "train", cfg.batch_size, train=True, augment=augment, device=runtime.device,
                             seed=cfg.seed, epoch=epoch, rank=runtime.rank, world_size=runtime.world_size,
                             workers=cfg.workers, channels_last=runtime.channels_last)  # fmt: skip
        generator = torch.Generator(device=runtime.device).manual_seed(
            mix_seed(cfg.seed, epoch, runtime.rank, 7)
        )
        train_loss, train_acc, step = train_one_epoch(
            train_model, loader, optimizer, runtime, cfg, lr_at, step, generator, ema,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
        )  # fmt: skip
        train_loss, train_acc = distributed.mean_over_ranks([train_loss, train_acc], runtime.device)
        eval_model = ema.module if ema is not None else model
        result = evaluate(eval_model, test_loader, bundle.num_classes, runtime, tta=cfg.tta)
        row = {
            "epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "test_loss": result.loss,
            "test_acc": result.top1, "test_top5": result.top5 if result.top5 is not None else "",
            "lr": default_lr(cfg) * lr_at(max(step - 1, 0)), "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        history.epochs.append(row)
        is_best = result.top1 >= history.best_acc
        history.best_acc = max(history.best_acc, result.top1)
        log(cfg, runtime, f"epoch {epoch + 1:>3}/{cfg.epochs}  train loss {train_loss:.4f} acc {100 * train_acc:.2f}%"
            f"  test loss {result.loss:.4f} acc {100 * result.top1:.2f}%  lr {row['lr']:.4f}  {row['seconds']:.0f}s")  # fmt: skip
        if runtime.is_main:
            weights = eval_model.state_dict()
            meta = weights_meta(cfg, bundle, raw_model) | {"epoch": epoch + 1, "test_acc": result.top1}
            save_weights(weights, run_dir / "last.safetensors", meta)
            if is_best:
                save_weights(weights, run_dir / "best.safetensors", meta)
            write_metrics(run_dir, history.epochs)
            save_state(run_dir, {
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else {}, "epoch": epoch + 1, "step": step,
                "history": history.epochs, "best_acc": history.best_acc, "rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(runtime.device)} if runtime.device.type == "cuda" else {}),
            })  # fmt: skip
            log_epoch(writer, row)
        history.final = result
    history.model = raw_model if ema is None else ema.module
    if runtime.is_main and history.final is not None:
        write_report(run_dir, cfg, bundle, history)
    if writer is not None:
        writer.close()
    return history
