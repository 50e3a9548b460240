"""A whole run (`fit`): the story of one training job around the epoch functions of `loop`. `fit` claims
the run folder (`RunFolder` owns its files), `open_run` settles the configuration and the set-up
(`setup.prepare`, shared with `lr_find`), `restore` continues from a checkpoint, `run_epoch` trains and
evaluates one epoch, `Selection` says which epoch is the model, and `save_epoch` hands it to the folder."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import make_loader
from ..data.errors import DataError
from ..data.seeds import mix_seed
from ..interpret import top_losses
from . import distributed
from .config import TrainConfig, resume_config
from .folder import RunFolder, claim, elastic_resume
from .loop import evaluate, log, set_frozen, train_one_epoch
from .metrics import EvalResult
from .optim import blow_up_hint, default_lr
from .records import History, resolved_record, results_record, weights_meta
from .runtime import compile_for_training, precision_name
from .schedule import evaluates, lr_multiplier, momentum_at, train_size
from .selection import Selection
from .setup import Setup, positive_index, prepare
from .tboard import log_epoch, open_writer


@dataclass
class Run:
    """A run in progress: its set-up, its folder, where it is, and which epoch is best so far."""

    setup: Setup
    folder: RunFolder
    history: History
    selection: Selection
    start_epoch: int = 0
    step: int = 0

    cfg = property(lambda self: self.setup.cfg)
    runtime = property(lambda self: self.setup.runtime)
    bundle = property(lambda self: self.setup.bundle)
    model = property(lambda self: self.setup.model)
    dir = property(lambda self: self.folder.path)

    @property
    def monitor(self) -> str:
        return self.cfg.monitor or "accuracy"

    @property
    def eval_split(self) -> str:
        return "val" if self.bundle.val is not None else "test"

    @property
    def eval_model(self) -> nn.Module:
        return self.setup.ema.module if self.setup.ema is not None else self.model


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
        if cfg is not None and (elastic := elastic_resume(cfg)) is not None:
            cfg, resume, changes = None, elastic, {"quiet": cfg.quiet}  # torchrun restarted this worker
        folder = claim(cfg, resume, overwrite)
        try:
            return _fit(open_run(cfg, folder, changes or {}))
        finally:
            folder.release()


def open_run(cfg: TrainConfig | None, folder: RunFolder, changes: Mapping[str, Any]) -> Run:
    """Settle the config (a copy) and the set-up; restore a resumed run's state from its folder."""
    resolved: dict[str, Any] = {}
    resuming = cfg is None
    if resuming:
        saved, resolved = folder.read_setup()
        cfg = resume_config(saved, changes)
        if "device" in changes:
            resolved = {}  # another device: resolve precision and layout for it anew
    try:
        setup = prepare(replace(cfg, out=str(folder.path)), resolved)
    except DataError as e:
        if resuming and cfg.data.startswith("folder:") and "not found" in str(e):
            raise DataError(
                f"{e}; if it moved, resume with --data-root NEW_PATH (Python: changes=...)"
            ) from e
        raise
    run = Run(setup, folder, History(folder.path, config=setup.cfg), Selection(setup.cfg.early_stop))
    if resuming:
        folder.check_classes(setup.bundle.classes, cfg.data)
        restore(run, folder.read_state())
    return run


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue `run` from a checkpoint written by `save_epoch`: weights, optimizer, EMA, RNG, history, and
    which epoch is best so far."""
    setup = run.setup
    try:
        setup.model.load_state_dict(state["model"])
        setup.optimizer.load_state_dict(state["optimizer"])
        if setup.ema is not None:
            setup.ema.load_state_dict(state["ema"])
        if setup.runtime.scaler is not None and "scaler" in state:  # fp16: the loss scale goes on as it was
            setup.runtime.scaler.load_state_dict(state["scaler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{run.dir}/state.pt does not match the run's config.json ({e})") from None
    run.start_epoch, run.step = state["epoch"], state["step"]
    if run.start_epoch > run.cfg.total_epochs:
        need = (
            "--epochs"
            if not run.cfg.freeze_epochs
            else f"--freeze-epochs ({run.cfg.freeze_epochs}) + --epochs"
        )
        raise ValueError(
            f"{run.dir} has already trained {run.start_epoch} epochs: {need} must be at least that"
        )
    run.history.epochs = state["history"]
    run.selection = Selection.restore(run.cfg.early_stop, state["history"], state["best_acc"])
    torch.set_rng_state(state["rng"])
    if run.runtime.device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], run.runtime.device)
    log(run.cfg, run.runtime, f"resuming {run.dir} after epoch {run.start_epoch}/{run.cfg.total_epochs}")


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
    setup = run.setup
    lr_at = partial(lr_multiplier, cfg, setup.steps_per_epoch)
    train_loss, train_acc, run.step = train_one_epoch(
        train_model, loader, setup.optimizer, runtime, cfg, lr_at, run.step, generator, setup.ema,
        desc=f"epoch {epoch + 1}/{cfg.total_epochs}", class_weight=setup.class_weight,
        momentum_at=partial(momentum_at, cfg, setup.steps_per_epoch),
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
    """Weights (last, and best), metrics and the resumable state, handed to the folder (rank 0 writes)."""
    setup, device = run.setup, run.runtime.device
    state = {
        "model": setup.model.state_dict(), "optimizer": setup.optimizer.state_dict(),
        "ema": setup.ema.state_dict() if setup.ema is not None else {}, "epoch": row["epoch"], "step": run.step,
        "history": run.history.epochs, "best_acc": run.selection.accuracy, "rng": torch.get_rng_state(),
        **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
        **({"scaler": run.runtime.scaler.state_dict()} if run.runtime.scaler is not None else {}),
    }  # fmt: skip
    meta = weights_meta(run.cfg, run.bundle, run.model, row["epoch"])
    run.folder.write_epoch(run.eval_model.state_dict(), meta, is_best, run.history.epochs, state)
    log_epoch(writer, row)


def describe(run: Run) -> str:
    cfg, runtime, bundle = run.cfg, run.runtime, run.bundle
    fmt = precision_name(runtime.amp_dtype) + (", channels_last" if runtime.channels_last else "")
    val = f"{len(bundle.val)} val / " if bundle.val is not None else ""
    selection = (f"the best epoch by validation {run.monitor}" + (f", early stop after {cfg.early_stop}" if cfg.early_stop else "")
                 if bundle.val is not None else "the last epoch (no validation split: nothing is selected)")  # fmt: skip
    phases = ""
    if cfg.freeze_epochs:
        first = "head only" if cfg.frozen_epochs else "all layers: no pretrained weights, nothing to freeze"
        phases = f" (fastai's fine_tune: {cfg.freeze_epochs} epoch{'s' if cfg.freeze_epochs != 1 else ''} {first}; then {cfg.epochs} at half the LR)"
    return (f"training {cfg.model} on {bundle.name} ({len(bundle.train)} train / {val}{len(bundle.test)} test images, "
            f"{bundle.num_classes} classes; {bundle.roles}) for {cfg.total_epochs} epoch{'s' if cfg.total_epochs != 1 else ''}{phases} on {runtime.device} ({fmt}, "
            f"{torch.get_num_threads()} CPU threads) -> {run.dir}; "
            f"the model kept is {selection}")  # fmt: skip


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
        run.eval_model.load_state_dict(run.folder.read_best())
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
    run.folder.write_setup(cfg, resolved_record(runtime))
    writer = open_writer(run.dir) if runtime.is_main else None  # TensorBoard, when installed
    loader = eval_loader(run, run.eval_split)
    log(cfg, runtime, describe(run))
    if runtime.world_size > 1:
        log(cfg, runtime, f"distributed: {runtime.world_size} processes x batch {cfg.batch_size} = global batch "
            f"{runtime.world_size * cfg.batch_size}, peak lr {default_lr(cfg):g}")  # fmt: skip
    # rebuilt when freezing changes: DDP syncs the trainable params only
    train_model, frozen, result = run.model, None, None
    try:
        for epoch in range(run.start_epoch, cfg.total_epochs):
            if run.selection.stop:
                log(cfg, runtime, f"early stop: validation {run.monitor} has not improved for "
                    f"{run.selection.since} epochs")  # fmt: skip
                break
            if frozen != (epoch < cfg.frozen_epochs):
                frozen = epoch < cfg.frozen_epochs
                set_frozen(run.model, frozen, cfg.train_bn)
                train_model = distributed.wrap(run.model, runtime.device)
                train_model = compile_for_training(train_model, runtime) if runtime.compile else train_model
            if epoch == cfg.freeze_epochs > 0:  # fastai's unfreeze: the optimizer starts afresh (clear_state)
                run.setup.optimizer.state.clear()
            row, result = run_epoch(run, epoch, train_model, loader)
            history.epochs.append(row)
            # epochs without an evaluation (--eval-every) are never chosen; the test split never selects
            evaluated_val = result is not None and run.eval_split == "val"
            is_best = evaluated_val and run.selection.update(row["epoch"], row["val_score"], result.top1)
            log_row(run, row)
            if row["epoch"] == 1 and (hint := blow_up_hint(row, run.eval_split, run.bundle.num_classes, cfg)):
                warnings.warn(hint, stacklevel=3) if cfg.quiet else log(cfg, runtime, hint)
            save_epoch(run, row, is_best, writer)
    finally:
        if writer is not None:
            writer.close()
    if result is None and run.eval_split == "test" and history.epochs:  # resumed after the last epoch
        result = evaluate(run.eval_model, loader, run.bundle.num_classes, runtime, tta=cfg.tta)
    history.best_epoch, history.best_acc = run.selection.epoch, run.selection.accuracy
    if history.epochs:
        finish(run, result)
        run.folder.write_results(results_record(history))
        if runtime.is_main:
            write_report(run.dir, cfg, run.bundle, history)
    return history
