"""A whole run (`fit`) — its folder, data, model, epochs, checkpoints and report — around the epoch functions
of `loop`. Split by what each part owns: `fit` claims the folder, `open_run` settles the configuration,
`restore` continues from a checkpoint, `run_epoch` trains and evaluates one epoch, `save_epoch` writes it."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..data import DataBundle, make_loader
from ..data.loader import balanced_class_weights
from ..data.seeds import mix_seed
from ..files import atomic_write_text, cache_dir
from ..interpret import Mistake, top_losses
from ..models import ResNet
from ..provenance import git_state, invocation
from . import distributed, rundir
from .autotune import COMPILE_MIN_SECONDS, Candidate, fastest_cpu_format, machine_format, time_compiled
from .checkpoint import load_state, save_state, save_weights
from .config import TrainConfig, resume_config
from .loop import build_model, evaluate, load_data, log, set_frozen, train_one_epoch
from .metrics import EvalResult, Operating
from .optim import default_lr, lr_factor, make_optimizer
from .runtime import (
    Runtime,
    compile_for_training,
    cpu_has_bf16,
    precision_name,
    resolve_runtime,
    seed_everything,
)
from .tboard import log_epoch, open_writer

# per epoch: validation numbers when there is a validation split (test is then evaluated once, at the end),
# else test numbers, which draw curves but select nothing
METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_score", "test_loss", "test_acc",
                 "lr", "seconds"]  # fmt: skip
RUNTIME_FILE = "runtime.json"  # what the run resolved on its machine (device, precision, layout)


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


@dataclass
class Run:
    """The state of a run in progress (its own copy of the config: the caller's is never changed)."""

    cfg: TrainConfig
    dir: Path
    runtime: Runtime
    bundle: DataBundle
    model: ResNet
    optimizer: torch.optim.Optimizer
    ema: nn.Module | None
    steps_per_epoch: int
    history: History
    start_epoch: int = 0
    step: int = 0
    class_weight: torch.Tensor | None = None  # --class-weights balanced, on the device
    best_score: float | None = None  # the best validation score so far (higher is better)
    since_best: int = 0  # epochs since it improved, for early stopping

    @property
    def monitor(self) -> str:
        return self.cfg.monitor or "accuracy"

    @property
    def eval_split(self) -> str:
        return "val" if self.bundle.val is not None else "test"

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def fit(
    cfg: TrainConfig | None = None,
    resume: str | Path | None = None,
    *,
    changes: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> History:
    """Train `cfg.model` on `cfg.data` into a new run folder (`cfg.out`), or continue the run in `resume`
    from its checkpoint with `changes` to the few settings a resumed run may change (`RESUMABLE`).

    A folder that already holds a run is refused unless `overwrite`; a folder another process trains into is
    always refused. Under torchrun every process calls this and they train as one job (see `distributed`)."""
    if (cfg is None) == (resume is None):
        raise ValueError("give either a TrainConfig for a new run or resume=RUN_DIR (with changes), not both")
    if changes and resume is None:
        raise ValueError("changes apply to a resumed run only; set them in the TrainConfig instead")
    with distributed.process_group():
        if cfg is not None and (elastic := distributed.elastic_resume(cfg, None)) is not None:
            cfg, resume, changes = None, elastic, {"quiet": cfg.quiet}  # torchrun restarted this worker
        run_dir = (
            Path(resume)
            if resume is not None
            else Path(cfg.out or distributed.on_main(partial(default_run_dir, cfg)))
        )
        distributed.on_main(partial(rundir.claim, run_dir, resume=resume is not None, overwrite=overwrite))
        try:
            return _fit(open_run(cfg, run_dir, changes or {}))
        finally:
            rundir.release(run_dir)


def default_run_dir(cfg: TrainConfig) -> Path:
    data = cfg.data.split(":", 1)[0] if cfg.data.startswith("folder:") else cfg.data
    return Path("runs") / f"{cfg.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_run(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """A run folder's config.json and what it resolved at its start (runtime.json; {} in older runs)."""
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"cannot resume: {run_dir}/config.json not found (is it a run folder?)")
    cfg = TrainConfig.load(run_dir / "config.json")
    path = run_dir / RUNTIME_FILE
    try:
        resolved = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); delete it to resolve the device and format again") from e
    return cfg, resolved if isinstance(resolved, dict) else {}


def open_run(cfg: TrainConfig | None, run_dir: Path, changes: Mapping[str, Any]) -> Run:
    """Settle the config (a copy), the runtime, data, model and optimizer; restore a resumed run's state."""
    resolved: dict[str, Any] = {}
    resuming = cfg is None
    if resuming:  # rank 0 reads the folder and every rank gets its contents
        saved, resolved = distributed.on_main(partial(read_run, run_dir))
        cfg = resume_config(saved, changes)
        if "device" in changes:
            resolved = {}  # another device: resolve precision and layout for it anew
    cfg = replace(cfg, out=str(run_dir))
    cfg.validate()
    known = {k: resolved[k] for k in ("precision", "channels_last", "compile") if k in resolved}
    runtime = resolve_runtime(replace(cfg, **known))
    seed_everything(cfg.seed, cfg.deterministic)
    bundle = load_data(cfg)
    if -(-len(bundle.train) // runtime.world_size) < cfg.batch_size:  # drop_last would leave no batch
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {len(bundle.train)} training images "
                         f"({runtime.world_size} process(es)): lower it or use more data")  # fmt: skip
    check_against_data(cfg, bundle)
    runtime, model, optimizer, ema = build_training(cfg, runtime, bundle, tune=not known)
    steps = len(make_loader(bundle, "train", cfg.batch_size, train=True, rank=runtime.rank,
                            world_size=runtime.world_size))  # fmt: skip
    run = Run(cfg, run_dir, runtime, bundle, model, optimizer, ema, steps, History(run_dir, config=cfg))
    if cfg.class_weights == "balanced":
        run.class_weight = balanced_class_weights(bundle.train, bundle.num_classes).to(runtime.device)
    if resuming:
        restore(run, distributed.on_main(partial(load_state, run_dir)))
    return run


def build_training(
    cfg: TrainConfig, runtime: Runtime, bundle: DataBundle, tune: bool
) -> tuple[Runtime, ResNet, torch.optim.Optimizer, nn.Module | None]:
    """The model in its fastest format (`tune`: chosen now; else as resolved before), the optimizer and the
    weights' moving average (--ema)."""
    model = build_model(cfg, bundle).to(runtime.device)
    if tune:
        runtime = tune_cpu_format(cfg, runtime, model, bundle)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.sync_bn:
        model = distributed.sync_batch_norm(model, runtime.device)
    optimizer = make_optimizer(model, cfg, cfg.lr_ratio if cfg.weights else 1.0)
    ema = None
    if cfg.ema > 0:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True
        )
    return runtime, model, optimizer, ema


def check_against_data(cfg: TrainConfig, bundle: DataBundle) -> None:
    """Options that only make sense with a validation split, or with two classes, refused otherwise."""
    if bundle.val is None:
        for flag, value in (("--early-stop", cfg.early_stop), ("--monitor", cfg.monitor)):
            if value:
                raise ValueError(f"{flag} selects on a validation split and {bundle.name} has none: add "
                                 "--val-split F (or a val/ folder); the test split is never used to select")  # fmt: skip
    if cfg.progressive_from and cfg.progressive_from >= min(bundle.image_size):
        raise ValueError(f"--progressive-from {cfg.progressive_from} must be smaller than the images "
                         f"({bundle.image_size[0]}x{bundle.image_size[1]} px): it is where the sizes start growing")  # fmt: skip
    if cfg.positive is not None and (bundle.num_classes != 2 or cfg.positive not in bundle.classes):
        raise ValueError(f"--positive {cfg.positive!r} must name one of two classes; {bundle.name} has "
                         f"{', '.join(bundle.classes[:10])}")  # fmt: skip


def positive_index(cfg: TrainConfig, bundle: DataBundle) -> int:
    """The class sensitivity refers to: --positive, else the second class (e.g. PNEUMONIA after NORMAL)."""
    return bundle.classes.index(cfg.positive) if cfg.positive else 1


def tune_cpu_format(cfg: TrainConfig, runtime: Runtime, model: ResNet, bundle: DataBundle) -> Runtime:
    """On a CPU, choose the formats left to "auto" (precision, channels_last) by speed, not by feature flags:
    runs long enough time their own model (a few steps of each format, when that costs under ~5% of the
    run); others (short runs, large images, distributed jobs, --deterministic) take this machine's cached
    ranking for a reference step (`machine_format`: measured now, cached, provisional, or this CPU's
    known-good format when nothing could be timed; the log says which). runtime.json records the choice for
    --resume."""
    precisions = [None, torch.bfloat16] if cfg.precision == "auto" and cpu_has_bf16() else [runtime.amp_dtype]
    layouts = [False, True] if cfg.channels_last is None else [cfg.channels_last]
    if runtime.device.type != "cpu" or len(precisions) * len(layouts) == 1:
        return runtime
    steps = cfg.total_epochs * (len(bundle.train) // cfg.batch_size)
    searched = len(precisions) * len(layouts) * 6  # steps the search takes (1 warm-up + 5 timed each)
    own = (steps >= 20 * searched and bundle.image_size[0] * bundle.image_size[1] <= 64 * 64
           and runtime.world_size == 1 and not cfg.deterministic)  # fmt: skip
    shape = (cfg.batch_size, bundle.channels, *bundle.image_size)
    best, speeds = (
        fastest_cpu_format(model, shape, bundle.num_classes, precisions, layouts) if own else (None, {})
    )
    where = "for this run"
    if best is None or speeds[str(best)] <= 0:  # not timed here, or one step too slow to time
        cache = cache_dir() / "cpu_formats.json"
        chosen = distributed.on_main(partial(machine_format, precisions, layouts, cache))
        best, speeds, own, where = chosen.best, chosen.speeds, False, f"on this machine ({chosen.describe()})"
    ranked = ", ".join(f"{n} {s:.0f} img/s" for n, s in sorted(speeds.items(), key=lambda kv: -kv[1]))
    log(cfg, runtime, f"fastest training format {where}: {ranked or best}")
    runtime = replace(runtime, amp_dtype=best.amp_dtype, channels_last=best.channels_last)
    if own and cfg.compile is None:
        runtime = choose_compile(cfg, runtime, model, bundle, speeds[str(best)], shape)
    return runtime


def choose_compile(
    cfg: TrainConfig,
    runtime: Runtime,
    model: ResNet,
    bundle: DataBundle,
    img_s: float,
    shape: tuple[int, ...],
) -> Runtime:
    """--compile left unset on a CPU: for training estimated at COMPILE_MIN_SECONDS or more, time the step
    compiled and keep torch.compile when it saves at least twice its compile time over the run. Not with
    --progressive-from: every new image size would compile again, which the timing of one size cannot see."""
    images = cfg.total_epochs * (len(bundle.train) // cfg.batch_size) * cfg.batch_size
    if images / img_s < COMPILE_MIN_SECONDS:
        return runtime
    if cfg.progressive_from:
        log(cfg, runtime, "torch.compile: off with --progressive-from (each image size would compile again); "
            "--compile decides instead")  # fmt: skip
        return runtime
    best = Candidate(runtime.amp_dtype, runtime.channels_last)
    timing = time_compiled(model, best, shape, bundle.num_classes)
    pays = timing.pays(images)
    log(cfg, runtime, f"torch.compile: {timing.compiled_img_s:.0f} against {timing.eager_img_s:.0f} img/s eager "
        f"after a {timing.compile_s:.0f} s compile, over ~{images / img_s / 60:.0f} min of training: "
        f"{'on' if pays else 'off'} (--compile / --no-compile decide instead)")  # fmt: skip
    return replace(runtime, compile=pays)


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue `run` from a checkpoint written by `save_epoch`: weights, optimizer, EMA, RNG, history."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
        if run.runtime.scaler is not None and "scaler" in state:  # fp16: the loss scale goes on as it was
            run.runtime.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{run.dir}/state.pt does not match the run's config.json ({e})") from None
    run.start_epoch, run.step = state["epoch"], state["step"]
    if run.start_epoch > run.cfg.epochs:
        raise ValueError(
            f"{run.dir} has already trained {run.start_epoch} epochs: --epochs must be at least that"
        )
    run.history.epochs, run.history.best_acc = state["history"], state["best_acc"]
    scores = [e.get("val_score") for e in run.history.epochs]
    if any(isinstance(v, float) for v in scores):
        best = max(range(len(scores)), key=lambda i: scores[i] if isinstance(scores[i], float) else -math.inf)
        run.best_score, run.since_best = scores[best], len(scores) - 1 - best
        run.history.best_epoch = run.history.epochs[best]["epoch"]
    torch.set_rng_state(state["rng"])
    if run.runtime.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], run.runtime.device)
    log(run.cfg, run.runtime, f"resuming {run.dir} after epoch {run.start_epoch}/{run.cfg.total_epochs}")


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int, step: int) -> float:
    """The LR schedule as a plain function of the global step. With --freeze-epochs the head-only phase
    and the unfrozen phase each get their own schedule, as fastai's `fine_tune`."""
    total = cfg.total_epochs
    boundary = cfg.freeze_epochs * steps_per_epoch
    begin, end = (0, boundary) if step < boundary else (boundary, total * steps_per_epoch)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), (end - begin) // 2)
    return lr_factor(step - begin, end - begin, warmup, cfg.schedule, cfg.milestones, cfg.gamma)


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
        "resize": bundle.eval_resize,  # evaluation: short side to this, then centre-crop image_size
        "data": cfg.data,
        "shortcut": cfg.shortcut,
        "spec_overrides": cfg.spec_overrides,
        "pretrained": model.pretrained.url if model.pretrained else None,  # what a --weights NAME resolved to
    }


def write_metrics(run_dir: Path, epochs: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=METRIC_FIELDS, restval="", extrasaction="ignore"
    )  # old runs' rows
    writer.writeheader()
    writer.writerows(epochs)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def check_finite(run: Run, epoch: int, row: dict[str, Any]) -> None:
    """A non-finite loss or weight is divergence, not a result: stop before it is saved as one."""
    losses = [row[k] for k in ("train_loss", "val_loss", "test_loss") if row[k] != ""]  # evaluated ones
    losses_ok = all(math.isfinite(loss) for loss in losses)
    weights_ok = all(
        torch.isfinite(t).all() for t in run.eval_model.state_dict().values() if t.is_floating_point()
    )
    if not (losses_ok and weights_ok):
        kept = "" if epoch == 1 else f"; {run.dir}/last.safetensors holds epoch {epoch - 1}"
        raise RuntimeError(
            f"training diverged in epoch {epoch} (losses {', '.join(f'{loss:.4g}' for loss in losses)}"
            f"{'' if weights_ok else ', non-finite weights'}): lower --lr or set --grad-clip{kept}"
        )


def evaluates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether 0-based `epoch` ends with an evaluation: every `eval_every` epochs, and always the last."""
    return (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.total_epochs


# progressive resizing reaches the full size after this fraction of the epochs (FFCV's ResNet recipes ramp up
# to their final resolution a few epochs before the end, so that BatchNorm and the last epochs see it)
PROGRESSIVE_END = 0.75


def train_size(cfg: TrainConfig, epoch: int, full: tuple[int, int]) -> tuple[int, int]:
    """The image size 0-based `epoch` trains at: `full`, or with --progressive-from S (> 0), S at the first epoch
    growing linearly to `full` by epoch round(3/4 of the epochs) - 1, and `full` from there on."""
    if not cfg.progressive_from:
        return full
    last_ramp = max(1, round(PROGRESSIVE_END * cfg.total_epochs) - 1)
    grown = min(1.0, epoch / last_ramp)
    start = cfg.progressive_from
    return (round(start + grown * (full[0] - start)), round(start + grown * (full[1] - start)))


def run_epoch(
    run: Run, epoch: int, train_model: nn.Module, eval_loader
) -> tuple[dict[str, Any], EvalResult | None]:
    """Train one epoch, evaluate on the validation split (else on test, for the curves only) when the epoch
    is one `evaluates` names, and return its metrics row and evaluation (None when not evaluated)."""
    cfg, runtime = run.cfg, run.runtime
    t0 = time.perf_counter()
    loader = make_loader(run.bundle, "train", cfg.batch_size, train=True, augment=cfg.augment(),
                         device=runtime.device, seed=cfg.seed, epoch=epoch, rank=runtime.rank,
                         world_size=runtime.world_size, workers=cfg.workers, channels_last=runtime.channels_last,
                         balanced=cfg.sampler == "balanced", size=train_size(cfg, epoch, run.bundle.image_size))  # fmt: skip
    generator = torch.Generator(device=runtime.device).manual_seed(mix_seed(cfg.seed, epoch, runtime.rank, 7))
    lr_at = partial(lr_multiplier, cfg, run.steps_per_epoch)
    train_loss, train_acc, run.step = train_one_epoch(
        train_model, loader, run.optimizer, runtime, cfg, lr_at, run.step, generator, run.ema,
        desc=f"epoch {epoch + 1}/{cfg.total_epochs}", class_weight=run.class_weight,
    )  # fmt: skip
    train_loss, train_acc = distributed.mean_over_ranks([train_loss, train_acc], runtime.device)
    result = None
    if evaluates(cfg, epoch):
        result = evaluate(run.eval_model, eval_loader, run.bundle.num_classes, runtime, tta=cfg.tta)
    val, test = (result if run.eval_split == "val" else None), (result if run.eval_split == "test" else None)
    row = {
        "epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
        "val_loss": val.loss if val else "", "val_acc": val.top1 if val else "",
        "val_score": val.score(run.monitor) if val else "",
        "test_loss": test.loss if test else "", "test_acc": test.top1 if test else "",
        "lr": default_lr(cfg) * lr_at(max(run.step - 1, 0)), "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    check_finite(run, epoch + 1, row)
    return row, result


def save_epoch(run: Run, row: dict[str, Any], is_best: bool, writer: Any) -> None:
    """Weights (last, and best), metrics and the resumable state, each written atomically (rank 0 only)."""
    weights = run.eval_model.state_dict()
    meta = weights_meta(run.cfg, run.bundle, run.model) | {"epoch": row["epoch"]}
    save_weights(weights, run.dir / "last.safetensors", meta)
    if is_best:
        save_weights(weights, run.dir / "best.safetensors", meta)
    write_metrics(run.dir, run.history.epochs)
    device = run.runtime.device
    save_state(run.dir, {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else {}, "epoch": row["epoch"], "step": run.step,
        "history": run.history.epochs, "best_acc": run.history.best_acc, "rng": torch.get_rng_state(),
        **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
        **({"scaler": run.runtime.scaler.state_dict()} if run.runtime.scaler is not None else {}),
    })  # fmt: skip
    log_epoch(writer, row)


def write_run_files(run: Run) -> None:
    """config.json (the settings as given, so the run can be repeated) and runtime.json (what they resolved
    to on this machine, so a resumed run computes the same way)."""
    atomic_write_text(run.dir / "config.json", run.cfg.to_json())
    resolved = {"device": str(run.runtime.device), "precision": precision_name(run.runtime.amp_dtype),
                "channels_last": run.runtime.channels_last, "compile": run.runtime.compile,
                "cpu_threads": torch.get_num_threads()}  # fmt: skip
    atomic_write_text(run.dir / RUNTIME_FILE, json.dumps(resolved, indent=2))


def describe(run: Run) -> str:
    cfg, runtime, bundle = run.cfg, run.runtime, run.bundle
    fmt = precision_name(runtime.amp_dtype) + (", channels_last" if runtime.channels_last else "")
    val = f"{len(bundle.val)} val / " if bundle.val is not None else ""
    selection = (f"the best epoch by validation {run.monitor}" + (f", early stop after {cfg.early_stop}" if cfg.early_stop else "")
                 if bundle.val is not None else "the last epoch (no validation split: nothing is selected)")  # fmt: skip
    return (f"training {cfg.model} on {bundle.name} ({len(bundle.train)} train / {val}{len(bundle.test)} test images, "
            f"{bundle.num_classes} classes) for {cfg.total_epochs} epochs on {runtime.device} ({fmt}, "
            f"{torch.get_num_threads()} CPU threads) -> {run.dir}; "
            f"the model kept is {selection}")  # fmt: skip


def select(run: Run, row: dict[str, Any], result: EvalResult | None) -> bool:
    """Whether this epoch is the best so far on validation (strictly better: ties keep the earlier one);
    epochs without an evaluation (--eval-every) are never chosen."""
    if run.eval_split != "val" or result is None:
        return False
    score = row["val_score"]
    if run.best_score is not None and score <= run.best_score:
        run.since_best = row["epoch"] - run.history.best_epoch
        return False
    run.best_score, run.since_best = score, 0
    run.history.best_acc, run.history.best_epoch = result.top1, row["epoch"]
    return True


def log_row(run: Run, row: dict[str, Any]) -> None:
    split = run.eval_split
    evaluated = (f"  {split} loss {row[f'{split}_loss']:.4f} acc {100 * row[f'{split}_acc']:.2f}%"
                 if row[f"{split}_loss"] != "" else "")  # fmt: skip
    log(run.cfg, run.runtime, f"epoch {row['epoch']:>3}/{run.cfg.total_epochs}  train loss {row['train_loss']:.4f} acc "
        f"{100 * row['train_acc']:.2f}%{evaluated}  lr {row['lr']:.4f}  {row['seconds']:.0f}s")  # fmt: skip


def eval_loader(run: Run, split: str):  # noqa: ANN201 (a BatchLoader)
    cfg, runtime = run.cfg, run.runtime
    return make_loader(run.bundle, split, max(cfg.batch_size, 256), train=False, device=runtime.device,
                       workers=cfg.workers, channels_last=runtime.channels_last)  # fmt: skip


def finish(run: Run, last: EvalResult) -> None:
    """The final model (best on validation, else the last epoch's) evaluated once on test; for two classes,
    sensitivity and specificity at --threshold and at the threshold Youden's J picks on validation."""
    history, cfg, runtime, bundle = run.history, run.cfg, run.runtime, run.bundle
    if bundle.val is not None and history.best_epoch is not None:
        best = distributed.on_main(partial(load_file, str(run.dir / "best.safetensors")))
        run.eval_model.load_state_dict(best)
        history.val = evaluate(
            run.eval_model, eval_loader(run, "val"), bundle.num_classes, runtime, tta=cfg.tta
        )
        history.final = evaluate(
            run.eval_model, eval_loader(run, "test"), bundle.num_classes, runtime, tta=cfg.tta
        )
    else:
        history.best_epoch, history.final = history.epochs[-1]["epoch"], last
    history.model = run.eval_model
    if bundle.num_classes == 2 and history.final.probs is not None:
        positive = positive_index(cfg, bundle)
        history.operating["threshold"] = history.final.operating_point(positive, cfg.threshold)
        if history.val is not None and history.val.probs is not None:
            chosen = history.val.youden_threshold(positive)
            history.operating["youden"] = history.final.operating_point(positive, chosen)
    if history.final.probs is not None and runtime.world_size == 1:  # (ranks interleave batches: no order)
        history.mistakes = top_losses(history.final.probs, history.final.targets)
    log(cfg, runtime, f"test accuracy {100 * history.final.top1:.2f}% ({len(bundle.test)} images) of the model "
        f"from epoch {history.best_epoch}")  # fmt: skip


def _fit(run: Run) -> History:
    from .report import write_report

    cfg, runtime, history = run.cfg, run.runtime, run.history
    if runtime.is_main:
        write_run_files(run)
    writer = open_writer(run.dir) if runtime.is_main else None  # TensorBoard, when installed
    loader = eval_loader(run, run.eval_split)
    log(cfg, runtime, describe(run))
    if runtime.world_size > 1:
        log(cfg, runtime, f"distributed: {runtime.world_size} processes x batch {cfg.batch_size} = global batch "
            f"{runtime.world_size * cfg.batch_size}, peak lr {default_lr(cfg):g}")  # fmt: skip
    freeze_until = cfg.total_epochs if cfg.freeze else cfg.freeze_epochs
    # rebuilt when freezing changes: DDP syncs the trainable params only
    train_model, frozen, result = run.model, None, None
    try:
        for epoch in range(run.start_epoch, cfg.total_epochs):
            if cfg.early_stop and run.since_best >= cfg.early_stop:
                log(
                    cfg,
                    runtime,
                    f"early stop: validation {run.monitor} has not improved for {run.since_best} epochs",
                )
                break
            if frozen != (epoch < freeze_until):
                frozen = epoch < freeze_until
                set_frozen(run.model, frozen, cfg.train_bn)
                train_model = distributed.wrap(run.model, runtime.device)
                train_model = compile_for_training(train_model, runtime) if runtime.compile else train_model
            row, result = run_epoch(run, epoch, train_model, loader)
            history.epochs.append(row)
            is_best = select(run, row, result)
            log_row(run, row)
            if runtime.is_main:
                save_epoch(run, row, is_best, writer)
    finally:
        if writer is not None:
            writer.close()
    if result is None and run.eval_split == "test" and history.epochs:  # resumed after the last epoch
        result = evaluate(run.eval_model, loader, run.bundle.num_classes, runtime, tta=cfg.tta)
    if history.epochs:
        finish(run, result)
        if runtime.is_main:
            write_results(run.dir, history)
            write_report(run.dir, cfg, run.bundle, history)
    return history


def write_results(run_dir: Path, history: History) -> None:
    """results.json: the final model's numbers for scripts (test, and the validation split that chose it),
    and the commit and command that produced them."""
    commit, dirty = git_state()
    results = {
        "best_epoch": history.best_epoch, "epochs": len(history.epochs), "test": history.final.summary(),
        "val": history.val.summary() if history.val is not None else None,
        "operating": {k: vars(op) for k, op in history.operating.items()},
        "source": {"commit": commit, "dirty": dirty, "command": invocation()},
    }  # fmt: skip
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
