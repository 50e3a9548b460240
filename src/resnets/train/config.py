"""Typed training configuration, the named presets, and how unset fields get their defaults."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ..data import AugmentConfig
from ..data.augment import INCEPTION_CROP_RATIO, INCEPTION_CROP_SCALE
from ..data.folder import EVAL_RESIZE
from ..models.registry import get_entry, resolve_name
from ..typecheck import has_type, type_name

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def option(default: Any, help: str) -> Any:
    """A TrainConfig field with its `--help` text beside it (`resnets train --help` is built from these)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; saved as `config.json` in the run folder. None means "derive it".
    Frozen: a run's settings never change under it (`dataclasses.replace` makes a changed copy); sequences
    are tuples. Types are checked on construction (`check_types`), ranges by `validate`."""

    model: str = option("cifar_resnet20", "model name (`resnets list`)")
    data: str = option("fashion-mnist", "fashion-mnist, cifar10, cifar100, imagenette or folder:PATH")
    data_root: str | None = option(
        None, "where the data set lies (default: $RESNETS_DATA and standard places)"
    )
    epochs: int = option(5, "training epochs (after --freeze-epochs, if any)")
    batch_size: int = option(
        128, "images per step and process: a distributed job's global batch is this x its processes"
    )
    optimizer: Literal["sgd", "adamw"] = option("sgd", "sgd or adamw")
    lr: float | None = option(
        None, "peak learning rate (default: 0.1 x global batch / 128 for SGD, 1e-3 for AdamW)"
    )
    momentum: float = option(0.9, "SGD momentum (0: plain SGD)")
    nesterov: bool = option(True, "Nesterov momentum (the paper used plain heavy-ball momentum)")
    weight_decay: float = option(5e-4, "weight decay, not applied to BatchNorm and biases")
    adam_beta2: float = option(
        0.999, "AdamW's beta2, the decay of its squared-gradient average (fastai: 0.99)"
    )
    adam_eps: float = option(1e-8, "AdamW's epsilon (fastai: 1e-5)")
    schedule: Literal["onecycle", "cosine", "step", "constant", "fastai"] = option(
        "onecycle",
        "after the warm-up: onecycle (linear decay to 0), cosine (to 0), step (x gamma at each "
        "milestone), constant; fastai: fastai's fit_one_cycle (cosine from lr/25 up to lr over the warm-up, "
        "cosine down to lr/1e5, the momentum - SGD's, Adam's beta1 - cycled 0.95, 0.85, 0.95 against it)",
    )
    milestones: tuple[float, ...] | None = option(
        None,
        "step schedule: fractions of the training length where the LR is multiplied by --gamma "
        "(None: 0.5 0.75, the paper's)",
    )
    gamma: float = option(0.1, "step schedule: the LR is multiplied by this at each milestone")
    warmup_epochs: float = option(1.0, "epochs of linear LR warm-up")
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy loss")
    crop_padding: int | None = option(
        None,
        "random crops after padding this many px (default: 4 for CIFAR as the paper, 0 for the rest; "
        "in-memory data sets)",
    )
    crop_scale: float = option(
        INCEPTION_CROP_SCALE,
        "image folders: the smallest random-resized crop, as a fraction of the image's area (Inception's and "
        "torchvision's 0.08; fastai's aug_transforms take 0.5)",
    )
    crop_ratio: float = option(
        INCEPTION_CROP_RATIO,
        "image folders: the random-resized crop's aspect ratio lies between 1/this and this (Inception's 4/3; "
        "fastai's aug_transforms crop squares: 1)",
    )
    eval_resize: float = option(
        EVAL_RESIZE,
        "image folders: evaluation resizes the short side to this x the image size, then keeps the centre crop "
        "(1.14: 255 px for 224, about torchvision's 256; fastai's 1: the whole centre square)",
    )
    normalize: bool = option(
        True,
        "normalise inputs by the data set's mean and std (ImageNet's for folders); --no-normalize feeds pixels "
        "in [0, 1], as d2l's data loaders do",
    )
    flip: bool = option(True, "random horizontal flips")
    rotate: float = option(
        0.0,
        "random rotations of up to this many degrees, to 3 images in 4 (fastai's aug_transforms: 10; 0: off)",
    )
    zoom: float = option(
        1.0, "random zoom in by up to this factor at a random centre, to 3 images in 4 (fastai: 1.1; 1: off)"
    )
    warp: float = option(
        0.0,
        "random perspective warps of up to this magnitude along x and along y, each to 3 images in 4 "
        "(fastai: 0.2; 0: off)",
    )
    lighting: float = option(
        0.0,
        "random brightness and contrast changes of up to this size, each to 3 images in 4 (fastai: 0.2; 0: off)",
    )
    cutout: int = option(0, "cutout: a random square of this side set to zero (0: off)")
    mixup: float = option(0.0, "mixup's Beta(alpha, alpha) (0: off)")
    weights: str | None = option(
        None,
        "start from a local .pth/.safetensors file (ours, torchvision's or timm's layout) or from named "
        "weights: torchvision's (DEFAULT, IMAGENET1K_V1, ...) or timm's (timm:TAG); `resnets weights` lists them",
    )
    freeze: bool = option(
        False, "train only the classifier (and BatchNorm unless --no-train-bn) for all epochs"
    )
    freeze_epochs: int = option(
        0,
        "fastai's fine_tune: N head-only epochs first (a one-cycle peaking at their end), then --epochs more with "
        "all layers at half the LR, the optimizer's state cleared (N + epochs in all); without --weights nothing "
        "is frozen, as in fastai's Learner with one parameter group: two one-cycle phases over all layers",
    )
    train_bn: bool = option(True, "keep BatchNorm trainable while the body is frozen, as fastai does")
    lr_ratio: float = option(
        10.0, "after unfreezing, the first layers train at lr / lr_ratio (discriminative LRs)"
    )
    in_channels: int | None = option(
        None, "input channels (default: the data's, 1 for Fashion-MNIST; 3 with ImageNet weights)"
    )
    image_size: int | None = option(None, "image side in px (default: the data's own size, 224 for folders)")
    progressive_from: int = option(
        0,
        "progressive resizing (fast.ai, FFCV): train the first epoch at this image side, growing linearly to "
        "the full size by 3/4 of the epochs, the rest at full size; evaluation always at full size (0: off)",
    )
    drop_rate: float = option(0.0, "dropout before the classifier")
    stochastic_depth: float = option(
        0.0, "stochastic depth: the last block's drop probability (linear in depth)"
    )
    zero_init_residual: bool = option(
        False, "start each block's last BatchNorm at zero (each block the identity)"
    )
    shortcut: Literal["A", "B", "C"] | None = option(
        None,
        "override the model's skip connection: A zero-pad, B projection where the shape changes, C everywhere",
    )
    spec_overrides: dict[str, Any] | None = option(
        None, 'ResNetSpec fields to change, as a JSON object, e.g. {"stem": "cifar"}'
    )
    precision: Precision = option(
        "auto",
        "auto (GPUs: bf16 from capability 8.0, else fp16 with loss scaling; CPUs: fp32 or bf16, timed), "
        "fp32, bf16 or fp16",
    )
    channels_last: bool | None = option(
        None, "channels_last memory layout (default: on for CUDA; on a CPU the faster, timed)"
    )
    compile: bool | None = option(
        None,
        "train through torch.compile; unset: a CPU run estimated at 30+ minutes times its step compiled "
        "and keeps it when it saves at least twice the compile time (GPUs: off unless asked; on one GPU it records "
        "CUDA graphs, 2.2-2.6x for small images, docs/gpu.md)",
    )
    ema: float = option(0.0, "decay of an exponential moving average of the weights, e.g. 0.999 (0: off)")
    grad_clip: float = option(0.0, "clip the gradients' total norm to this (0: off)")
    val_split: float = option(
        0.0, "carve this fraction of the training images (per class, seeded) as the validation split"
    )
    monitor: Literal["loss", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc"] | None = option(
        None,
        "what picks best.safetensors on the validation split (default accuracy); needs one. The test "
        "split never selects anything",
    )
    early_stop: int = option(
        0, "stop after N epochs without a better validation score (0: off); needs a validation split"
    )
    eval_every: int = option(
        1,
        "evaluate every N epochs and after the last one (Keras' validation_freq): a shorter run when the "
        "per-epoch curve is not needed; the best epoch is chosen among the evaluated ones",
    )
    positive: str | None = option(None, "two classes: the class sensitivity refers to (default: the second)")
    threshold: float = option(
        0.5, "two classes: probability of --positive from which an image is called positive"
    )
    class_weights: Literal["balanced"] | None = option(
        None, "balanced: weigh each class's loss by n / (classes x its images), for imbalanced data"
    )
    sampler: Literal["random", "balanced"] = option(
        "random", "balanced: draw every epoch with replacement, each class equally likely (seeded)"
    )
    limit: int | None = option(
        None, "use at most this many training images, balanced over classes (quick runs)"
    )
    test_limit: int | None = option(None, "evaluate on at most this many test images (quick runs)")
    strict_data: bool = option(
        False, "refuse unreadable images instead of leaving them out (and listing them)"
    )
    workers: int = option(2, "data-loading processes for image folders")
    tta: bool = option(True, "average with the mirrored image in evaluation (--no-tta: single view)")
    seed: int = option(0, "random seed (weights, data order, augmentation)")
    deterministic: bool = option(False, "deterministic algorithms only (slower)")
    out: str | None = option(None, "run folder (default: runs/<model>-<data>-<time>)")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    quiet: bool = option(False, "no progress bar or log lines")
    sync_bn: bool = option(False, "synchronise BatchNorm statistics across processes (distributed jobs)")

    def __post_init__(self) -> None:
        hints = get_type_hints(TrainConfig)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list) and _tuple_hint(hints[f.name]):  # JSON and argparse give lists
                object.__setattr__(self, f.name, tuple(value))
        check_types(self, hints)
        if "." in self.model:  # timm's tagged name, "resnet50d.ra2_in1k": that model with those weights
            model, weights = resolve_name(self.model, self.weights)
            object.__setattr__(self, "model", model)
            object.__setattr__(self, "weights", None if weights is None else str(weights))

    @property
    def frozen_epochs(self) -> int:
        """Epochs whose body is frozen: all with --freeze; the first --freeze-epochs on pretrained weights; none
        on a net trained from scratch (fastai's `fine_tune` on a Learner whose model has one parameter group
        freezes nothing: both phases train every layer)."""
        if self.freeze:
            return self.total_epochs
        return self.freeze_epochs if self.weights is not None else 0

    @property
    def total_epochs(self) -> int:
        """Epochs the run trains: `freeze_epochs` head-only ones and then `epochs` (fastai's `fine_tune`)."""
        return self.freeze_epochs + self.epochs

    def augment(self) -> AugmentConfig:
        """The batch augmentation. Random crops pad 4 px on CIFAR, as the paper; on other in-memory sets
        (Fashion-MNIST) the default is flips only, which reached 93.3% in the 5-epoch default recipe against
        92.8% with 2 px crops and 93.0% with 1 px (docs/benchmarks.md): short runs underfit, so augmentation
        that slows learning costs more than it regularises. Ask for --crop-padding in longer runs."""
        padding = self.crop_padding
        if padding is None:
            padding = 4 if self.data.startswith("cifar") else 0
        return AugmentConfig(
            crop_padding=padding, flip=self.flip, cutout=self.cutout, crop_scale=self.crop_scale,
            crop_ratio=self.crop_ratio, rotate=self.rotate, zoom=self.zoom, warp=self.warp, lighting=self.lighting,
        )  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a saved config.json), rejecting unknown keys and wrong types by name."""
        if not isinstance(values, dict):
            raise ValueError(f"a training configuration is a JSON object, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """A config.json written by a run; a damaged or hand-broken file gives a ValueError naming it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); restore it or start a new run") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def validate(self) -> None:
        """Reject impossible values with messages that say what to change (the types are checked already)."""
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.test_limit is None or self.test_limit >= 1, f"test_limit must be >= 1: {self.test_limit}"),
            (self.limit is None or self.limit >= 1, f"limit must be >= 1: {self.limit}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 turns it off), got {self.grad_clip}"),
            (self.cutout >= 0, f"cutout is a patch side in pixels, >= 0, got {self.cutout}"),
            (
                0 < self.crop_scale <= 1,
                f"crop_scale is a fraction of the image's area in (0, 1], got {self.crop_scale}",
            ),
            (
                self.crop_ratio >= 1,
                f"crop_ratio is the widest aspect ratio, >= 1 (1: square), got {self.crop_ratio}",
            ),
            (
                0 <= self.rotate <= 180,
                f"rotate is the largest angle in degrees, in [0, 180], got {self.rotate}",
            ),
            (1 <= self.zoom <= 10, f"zoom is the largest zoom factor, in [1, 10] (1: off), got {self.zoom}"),
            (
                0 <= self.warp <= 0.4,
                f"warp is a fraction of the half side in [0, 0.4] (beyond, part of the image is warped through "
                f"infinity; fastai's default is 0.2), got {self.warp}",
            ),
            (0 <= self.lighting < 1, f"lighting is a change in [0, 1), got {self.lighting}"),
            (
                1 <= self.eval_resize <= 4,
                f"eval_resize is the resize over the crop, in [1, 4], got {self.eval_resize}",
            ),
            (
                self.crop_padding is None or self.crop_padding >= 0,
                f"crop_padding must be >= 0: {self.crop_padding}",
            ),
            (
                self.lr_ratio > 0,
                f"lr_ratio divides the first layers' lr, so it must be > 0, got {self.lr_ratio}",
            ),
            (self.image_size is None or self.image_size >= 1, f"image_size must be >= 1: {self.image_size}"),
            (
                self.progressive_from == 0 or self.progressive_from >= 8,
                f"progressive_from is the first epoch's image side, >= 8 px (0: off), got {self.progressive_from}",
            ),
            (self.in_channels in (None, 1, 3), f"in_channels must be 1 or 3, got {self.in_channels}"),
            (0 <= self.val_split < 1, f"val_split is a fraction in [0, 1), got {self.val_split}"),
            (0 <= self.drop_rate < 1, f"drop_rate is a probability in [0, 1), got {self.drop_rate}"),
            (
                0 <= self.stochastic_depth < 1,
                f"stochastic_depth is a probability in [0, 1), got {self.stochastic_depth}",
            ),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}"),
            (self.early_stop >= 0, f"early_stop is a patience in epochs, >= 0, got {self.early_stop}"),
            (self.eval_every >= 1, f"eval_every is a number of epochs, >= 1, got {self.eval_every}"),
            (0 <= self.threshold <= 1, f"threshold is a probability in [0, 1], got {self.threshold}"),
            (self.freeze_epochs >= 0, f"freeze_epochs must be >= 0, got {self.freeze_epochs}"),
            (not (self.freeze and self.freeze_epochs), "use either --freeze (head only) or --freeze-epochs"),
            (
                self.weights is not None or not self.freeze,
                "--freeze trains the classifier on top of pretrained features: give --weights (on a random body "
                "the head learns from noise)",
            ),
            (0 <= self.adam_beta2 < 1, f"adam_beta2 is a decay in [0, 1), got {self.adam_beta2}"),
            (self.adam_eps > 0, f"adam_eps must be > 0, got {self.adam_eps}"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.ema < 1, "ema is a decay in [0, 1), e.g. 0.999"),
            (self.mixup >= 0, "mixup alpha must be >= 0"),
            (
                self.milestones is None
                or list(self.milestones) == sorted(self.milestones)
                and all(0 < m < 1 for m in self.milestones),
                f"milestones are increasing fractions of the training length in (0, 1), got {self.milestones}",
            ),
            (0 < self.gamma <= 1, f"gamma multiplies the LR at each milestone, in (0, 1], got {self.gamma}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        get_entry(self.model)  # an unknown name fails here, before any data is looked for


# Named recipes; docs/benchmarks.md has their measured curves and times. `default` (the TrainConfig defaults)
# is what `resnets train` runs with no options: ResNet-20 on Fashion-MNIST, 93.3% in 5 epochs (7.5 min on
# 2 cores). `fast` aims at 94% in 10 min on 2 cores: 13 epochs, the first ones smaller (progressive resizing
# from 16 px), evaluated once; chosen on a 55k/5k validation split over 12 full-size epochs (94.12 +- 0.09%
# test, 3 seeds, in 10.8-12.2 min on an AMD EPYC: budget missed) and 12 progressive ones
# (docs/time-to-accuracy/fast-selection); on test, 3 seeds: 94.01 +- 0.10% in 9.0-9.6 min on that EPYC
# (docs/time-to-accuracy/fast). `cifar-fast` aims at the paper's 91.25% for ResNet-20 on CIFAR-10 in 30 min:
# the paper's 45k/5k split, the best epoch by validation accuracy, 40 epochs with progressive resizing from
# 16 px, chosen on that validation split (seed 0: 92.22% in 27.3 min, against 90.74% for 30 full-size epochs,
# whose 3 seeds gave 90.72 +- 0.37% on test in 25.4 min; docs/time-to-accuracy/cifar-fast-selection); its own
# 3 seeds: 91.36 +- 0.15% on test in 28.0-29.8 min (met, without margin; docs/time-to-accuracy/cifar-fast).
# `best` aims at 95% and needs hours of CPU time (not measured yet).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"epochs": 13, "crop_padding": 2, "eval_every": 13, "progressive_from": 16},
    "cifar-fast": {"model": "cifar_resnet20", "data": "cifar10", "epochs": 40, "crop_padding": 4, "val_split": 0.1,
                   "eval_every": 2, "progressive_from": 16},
    "best": {"model": "cifar_resnet56", "epochs": 40, "crop_padding": 2, "cutout": 8},
    # He et al. 2016, section 4.2: ResNet-20 on CIFAR-10, SGD lr 0.1 (momentum 0.9, not Nesterov), weight
    # decay 1e-4, batch 128, lr / 10 at 32k and 48k iterations, stop at 64k (182 epochs of 45k images at 352
    # iterations each: the milestones fall at epochs 91 and 136), 45k/5k train/val split, 4 px crops and flips,
    # single-view test, no warm-up (the paper warms up only ResNet-110). One difference remains: our weight
    # decay skips BatchNorm parameters and biases.
    "paper": {"model": "cifar_resnet20", "data": "cifar10", "epochs": 182, "batch_size": 128, "lr": 0.1,
              "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "schedule": "step",
              "milestones": [0.5, 0.75], "gamma": 0.1, "warmup_epochs": 0.0, "label_smoothing": 0.0,
              "crop_padding": 4, "flip": True, "cutout": 0, "mixup": 0.0, "tta": False, "val_split": 0.1},
    # d2l.ai section 8.6.4 "Residual Networks" as our users read it: ResNet18(lr=0.01) on FashionMNIST(batch_size
    # =128, resize=(96, 96)), 10 epochs, plain SGD (d2l.Classifier: no momentum, no weight decay) at a constant
    # lr, no augmentation, pixels in [0, 1] (d2l.FashionMNIST: Resize and ToTensor, no Normalize); it reports
    # 0.906 (`resnets study d2l`). (The 0.17 edition, section 7.6, used lr 0.05 and batch 256.)
    "d2l": {"model": "d2l_resnet18", "data": "fashion-mnist", "image_size": 96, "epochs": 10, "batch_size": 128,
            "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "warmup_epochs": 0.0,
            "label_smoothing": 0.0, "crop_padding": 0, "flip": False, "cutout": 0, "mixup": 0.0, "tta": False,
            "normalize": False},
}  # fmt: skip


# What `--resume` may change: more epochs (the schedule stretches to the new length), where the data lies now,
# the device, and output/loader settings. Anything else would make the resumed run another run.
RESUMABLE = ("epochs", "data_root", "device", "quiet", "workers")


def resume_config(saved: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """`saved` with `changes` applied; a change to any other setting is refused by name, never dropped.

    A folder data set that moved is found again with `--data folder:NEW` or `--data-root NEW` (the run then
    checks that its classes are the ones it trained on)."""
    changes = dict(changes)
    moved = saved.data.startswith("folder:") and (changes.get("data") or "folder:").startswith("folder:")
    if moved and changes.get("data_root") and changes.get("data", saved.data) == saved.data:
        changes["data"] = "folder:" + str(changes.pop("data_root"))  # the path lives in --data for folders
    allowed = RESUMABLE + (("data",) if moved else ())
    refused = sorted(k for k, v in changes.items() if k not in allowed and getattr(saved, k, None) != v)
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        raise ValueError(
            f"--resume continues a run as it was configured: {flags} cannot change (only "
            f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} can); start a new run to change them"
        )
    return replace(saved, **changes)


def check_types(cfg: TrainConfig, hints: dict[str, Any]) -> None:
    """Every field's value against its type hint, named in the error (a JSON file or a Python caller may
    pass anything)."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not has_type(value, hints[f.name]):
            raise ValueError(f"training option {f.name!r} is {value!r}; expected {type_name(hints[f.name])}")


def _tuple_hint(hint: Any) -> bool:
    return any(
        get_origin(h) is tuple
        for h in (get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,))
    )


def apply_preset(name: str, overrides: dict[str, Any]) -> TrainConfig:
    """A preset's values, then the caller's explicit overrides on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], **overrides})
