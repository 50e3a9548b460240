"""Setting up a training job, shared by `fit` and `lr_find`: the validated config, the runtime resolved on
this machine (the CPU format timed when left to "auto"), the data, the model, its optimizer, the weights'
moving average and the class weights."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import nn

from ..data import DataBundle
from ..data.load import available_memory
from ..data.loader import balanced_class_weights, steps_per_epoch
from ..files import cache_dir
from ..machine import bf16_native
from ..models import ResNet
from . import distributed
from .autotune import COMPILE_MIN_SECONDS, Candidate, fastest_cpu_format, machine_format, time_compiled
from .config import TrainConfig
from .loop import build_model, load_data, log
from .optim import make_optimizer
from .runtime import Runtime, resolve_runtime, seed_everything


@dataclass
class Setup:
    """Everything a job trains with, built once by `prepare`."""

    cfg: TrainConfig
    runtime: Runtime
    bundle: DataBundle
    model: ResNet
    optimizer: torch.optim.Optimizer
    ema: nn.Module | None
    steps_per_epoch: int  # per process, full batches only
    class_weight: torch.Tensor | None  # --class-weights balanced, on the device


def prepare(cfg: TrainConfig, resolved: dict[str, Any] | None = None) -> Setup:
    """Validate `cfg`, resolve its runtime (`resolved`: the precision, layout and compile choice a resumed run
    made at its start; otherwise chosen now), seed, load the data and build the model and optimizer."""
    cfg.validate()
    known = {k: v for k, v in (resolved or {}).items() if k in ("precision", "channels_last", "compile")}
    runtime = resolve_runtime(replace(cfg, **known))
    seed_everything(cfg.seed, cfg.deterministic)
    bundle = load_data(cfg)
    steps = steps_per_epoch(len(bundle.train), cfg.batch_size, runtime.world_size)
    if steps == 0:  # full batches only: none would be left
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {len(bundle.train)} training images "
                         f"({runtime.world_size} process(es)): lower it or use more data")  # fmt: skip
    check_against_data(cfg, bundle)
    runtime, model, optimizer, ema = build_training(cfg, runtime, bundle, tune=not known)
    check_memory(cfg, model, bundle, runtime.device)
    class_weight = None
    if cfg.class_weights == "balanced":
        class_weight = balanced_class_weights(bundle.train, bundle.num_classes).to(runtime.device)
    return Setup(cfg, runtime, bundle, model, optimizer, ema, steps, class_weight)


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


PROBE_SIDE = 32  # activations are measured at this size and scaled by area


def activation_bytes(model: ResNet, channels: int, size: tuple[int, int]) -> int:
    """Bytes of the activations one image keeps for the backward pass at `size` (fp32): every leaf module's
    output, counted with forward hooks at PROBE_SIDE px on a CPU copy's shapes and scaled by the area."""
    counted = [0]
    leaves = [m for m in model.modules() if not any(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: counted.__setitem__(0, counted[0] + out.numel()))
             for m in leaves]  # fmt: skip
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, channels, PROBE_SIDE, PROBE_SIDE, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(4 * counted[0] * size[0] * size[1] / PROBE_SIDE**2)


def check_memory(cfg: TrainConfig, model: ResNet, bundle: DataBundle, device: torch.device) -> None:
    """Refuse a batch whose activations cannot fit in the memory available (the GPU's, else the machine's),
    before the first step allocates them: a run at --image-size 3000 is refused here, not killed later."""
    available = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    per_image = activation_bytes(model, bundle.channels, bundle.image_size)
    if available is None or per_image * cfg.batch_size <= available:
        return
    fits = available // per_image
    raise ValueError(
        f"{cfg.model} at {bundle.image_size[0]}x{bundle.image_size[1]} px keeps about {per_image / 1e9:,.2f} GB "
        f"of activations per image, {per_image * cfg.batch_size / 1e9:,.0f} GB for --batch-size {cfg.batch_size}, "
        f"but {available / 1e9:,.1f} GB is available: lower --batch-size (at most {fits}) or --image-size"
    )


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
    padding = cfg.augment().crop_padding
    if padding >= min(bundle.image_size):
        raise ValueError(f"--crop-padding {padding} is not smaller than the images ({bundle.image_size[0]}x"
                         f"{bundle.image_size[1]} px): crops would be mostly padding; the paper pads 4 of 32 px")  # fmt: skip
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
    precisions = (
        [None, torch.bfloat16]
        if cfg.precision == "auto" and bf16_native(runtime.device)
        else [runtime.amp_dtype]
    )
    layouts = [False, True] if cfg.channels_last is None else [cfg.channels_last]
    if runtime.device.type != "cpu" or len(precisions) * len(layouts) == 1:
        return runtime
    steps = cfg.total_epochs * steps_per_epoch(len(bundle.train), cfg.batch_size, runtime.world_size)
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
    images = (
        cfg.total_epochs
        * steps_per_epoch(len(bundle.train), cfg.batch_size, runtime.world_size)
        * cfg.batch_size
    )
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
