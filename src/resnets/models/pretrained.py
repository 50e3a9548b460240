"""Named weights: torchvision's (`"IMAGENET1K_V2"`, `"DEFAULT"`) and timm's (`"timm:ra2_in1k"`), fetched by
the libraries' own checked downloaders into their standard caches (`$TORCH_HOME/hub/checkpoints`, the
Hugging Face cache), with what they expect as data: class names and evaluation preprocessing."""

from __future__ import annotations

import contextlib
import importlib
import math
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from .weights import load_state, read_state_dict

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

    from .resnet import ResNet

TIMM_PREFIX = "timm:"
# weights files on the Hugging Face Hub, in timm's order of preference
HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Pretrained:
    """Named weights: where they come from, where the cache keeps them, and what they expect as input."""

    model: str  # our model name they load into
    name: str  # as `weights=` takes it, aliases resolved: "IMAGENET1K_V2" (not "DEFAULT"), "timm:ra2_in1k"
    source: str  # "torchvision", "timm", or "file" (one of our weights files, its own metadata)
    url: str  # where they download from
    file: Path | None  # the cached file (timm's: None until it is in the Hugging Face cache)
    categories: tuple[str, ...] = field(repr=False)  # class names, index order
    resize: int  # evaluation: short side resized to this, then the centre `crop` (H, W)
    crop: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    accuracy: float | None  # ImageNet-1k top-1 (%) as the library reports it (timm ships none)
    size_mb: float | None  # the file's size in MiB (None where the source does not say)
    repo_id: str | None = None  # the Hugging Face repository (timm's)

    @property
    def cached(self) -> bool:
        return self.file is not None and self.file.is_file()


def is_weights_name(text: str | Path) -> bool:
    """Whether `weights=` names weights ("IMAGENET1K_V1", "DEFAULT", "timm:TAG") rather than a local file."""
    text = str(text)
    return text.startswith(TIMM_PREFIX) or (
        re.fullmatch(r"[A-Z][A-Z0-9_]*", text) is not None and not Path(text).exists()
    )


# ---- torchvision: its weight enums, downloaded by torch.hub into $TORCH_HOME/hub/checkpoints ----


def _torchvision_enum(model: str) -> type[WeightsEnum] | None:
    """torchvision's weights enum for our model of the same name (same architecture and layer names)."""
    import torchvision.models as tvm

    return tvm.get_model_weights(model) if model in tvm.list_models(module=tvm) else None


def _torchvision_record(model: str, weights: WeightsEnum) -> Pretrained:
    transform = weights.transforms()  # torchvision's ImageClassification: resize, centre crop, normalise
    meta = weights.meta
    return Pretrained(
        model=model,
        name=weights.name,
        source="torchvision",
        url=weights.url,
        file=Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name,
        categories=tuple(meta["categories"]),
        resize=transform.resize_size[0],
        crop=(transform.crop_size[0], transform.crop_size[0]),
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        accuracy=meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
        size_mb=meta["_file_size"],
    )


def torchvision_file(model: str, path: Path) -> Pretrained | None:
    """The record of a torchvision weights file of `model`, known by its name ("resnet50-11ad3fa6.pth")."""
    enum = _torchvision_enum(model)
    for weights in enum or ():
        record = _torchvision_record(model, weights)
        if record.file is not None and record.file.name == path.name:
            return replace(record, file=path)
    return None


def imagenet_categories() -> list[str]:
    """ImageNet-1k's 1000 class names in index order ("golden retriever" is 207), from torchvision."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _fetch_torchvision(record: Pretrained) -> dict[str, torch.Tensor]:
    assert record.file is not None
    if record.cached:
        # torch.hub checks the sha256 prefix in the file name when it downloads, never on a cached file; we
        # read that file ourselves as it would (no network), with our weights_only reader and its messages
        return read_state_dict(record.file)
    enum = _torchvision_enum(record.model)
    assert enum is not None
    try:
        return enum[record.name].get_state_dict(progress=True, check_hash=True, weights_only=True)
    except OSError as e:  # urllib's URLError and HTTPError are OSErrors; a wrong hash is a RuntimeError
        raise OSError(
            f"cannot download {record.url} ({_reason(e)}); offline, put that file at {record.file}"
        ) from e


# ---- timm: its pretrained configs, files from the Hugging Face Hub (optional extra) ----


def _optional(module: str) -> ModuleType:
    """Import a package of the `pretrained` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"timm's named weights need {module}: pip install 'resnets[pretrained]'") from e


def timm_arch(model: str) -> str:
    """timm's name for our model: the same, except the pre-activation nets (timm's `resnetv2_*`)."""
    return re.sub(r"^preact_resnet(\d+)$", r"resnetv2_\1", model)


def timm_tags(model: str) -> list[str]:
    """timm's pretrained tags for `model` ("ra2_in1k", ...); none for a model timm does not have."""
    timm = _optional("timm")
    arch = timm_arch(model)
    return [
        name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*") if name.startswith(arch + ".")
    ]


@cache
def _timm_labels(subset: str | None, num_classes: int) -> tuple[str, ...]:
    """Short class names, as torchvision's: ImageNet-1k's are torchvision's list, others timm's first lemma."""
    from timm.data import ImageNetInfo

    if subset == "imagenet-1k":
        return tuple(imagenet_categories())
    if subset is None:
        return tuple(str(i) for i in range(num_classes))
    return tuple(d.split(",")[0] for d in ImageNetInfo(subset).label_descriptions())


def _hf_cached(repo_id: str) -> Path | None:
    """The weights file of `repo_id` in the Hugging Face cache (no network), if there is one."""
    hf = _optional("huggingface_hub")
    for filename in HF_FILES:
        found = hf.try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _timm_record(model: str, tag: str) -> Pretrained:
    timm = _optional("timm")
    from timm.data import infer_imagenet_subset

    tags = timm_tags(model)
    if tag not in tags:
        valid = ", ".join(TIMM_PREFIX + t for t in tags)
        raise ValueError(
            f"timm has no weights {tag!r} for {model}: "
            + (f"it has {valid}" if tags else f"timm has no pretrained {model}")
        )
    cfg = timm.models.get_pretrained_cfg(f"{timm_arch(model)}.{tag}")
    if not cfg.hf_hub_id:
        raise ValueError(f"timm's {model}.{tag} is not on the Hugging Face Hub; download {cfg.url} yourself")
    crop = cfg.input_size[-1]
    hf = _optional("huggingface_hub")
    return Pretrained(
        model=model,
        name=TIMM_PREFIX + tag,
        source="timm",
        url=hf.hf_hub_url(cfg.hf_hub_id, cfg.hf_hub_filename or HF_FILES[0]),
        file=_hf_cached(cfg.hf_hub_id),
        categories=_timm_labels(infer_imagenet_subset(cfg), cfg.num_classes),
        resize=math.floor(crop / cfg.crop_pct),  # timm's eval transform: scale = size / crop_pct
        crop=(crop, crop),
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        accuracy=None,
        size_mb=None,  # timm does not say: registry.named_weights computes it from the model
        repo_id=cfg.hf_hub_id,
    )


def _fetch_timm(record: Pretrained) -> tuple[dict[str, torch.Tensor], Path]:
    """A cached file loads as it is, with no network (as torch.hub's); else `hf_hub_download` fetches it."""
    hf = _optional("huggingface_hub")
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    assert record.repo_id is not None
    path = _hf_cached(record.repo_id)
    for filename in HF_FILES if path is None else ():
        try:
            path = Path(hf.hf_hub_download(record.repo_id, filename))
            break
        except LocalEntryNotFoundError as e:  # offline (HF_HUB_OFFLINE=1) or no connection, and not cached
            repo = Path(constants.HF_HUB_CACHE) / f"models--{record.repo_id.replace('/', '--')}"
            reason = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else _reason(e)
            raise OSError(
                f"cannot download {record.url} ({reason}); offline, put that file at "
                f"{repo / 'snapshots' / 'local' / HF_FILES[0]} and the word local in {repo / 'refs' / 'main'}"
            ) from e
        except EntryNotFoundError:  # the repository has no such file: try timm's other one
            continue
    if path is None:
        raise OSError(f"{record.repo_id} on the Hugging Face Hub holds none of {', '.join(HF_FILES)}")
    return read_state_dict(path), path


def _reason(error: BaseException) -> str:
    """The root cause of a failed download, in short ("[Errno -3] Temporary failure in name resolution")."""
    while isinstance(inner := getattr(error, "reason", None) or error.__cause__, BaseException):
        error = inner  # urllib's URLError keeps it as `reason`, others chain it as the cause
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 100 else text[:97] + "..."


# ---- our own weights files: their metadata is the record ----


def file_record(model: str, path: Path, meta: dict) -> Pretrained | None:
    """What one of our weights files (a run's) says it expects, as a record like the named weights' (timm's
    `pretrained_cfg` in spirit); None for files without our metadata."""
    if "classes" not in meta:
        return None
    height, width = meta["image_size"]
    return Pretrained(
        model=model, name=str(path), source="file", url=path.resolve().as_uri(), file=path,
        categories=tuple(meta["classes"]), resize=meta["resize"], crop=(height, width),
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), accuracy=None, size_mb=path.stat().st_size / 2**20,
    )  # fmt: skip


# ---- one interface for both ----


def named_weights(model: str) -> list[Pretrained]:
    """Every weights name `create_model(model, weights=...)` takes: torchvision's, then timm's (when the
    `pretrained` extra is installed). The DEFAULT alias is not repeated: see `default_weights`."""
    enum = _torchvision_enum(model)
    found = [_torchvision_record(model, w) for w in enum] if enum is not None else []
    with contextlib.suppress(ImportError):  # timm's need the `pretrained` extra
        found += [_timm_record(model, tag) for tag in timm_tags(model)]
    return found


def default_weights(model: str) -> str | None:
    """The name torchvision's DEFAULT stands for with `model` ("IMAGENET1K_V2" for resnet50)."""
    enum = _torchvision_enum(model)
    return enum.DEFAULT.name if enum is not None else None


def pretrained_name(model: str) -> str | None:
    """The weights `pretrained=True` loads into `model`: torchvision's "DEFAULT" where torchvision has it,
    else timm's default tag ("timm:ra2_in1k" for resnet50d); None where neither has weights for it (timm's
    count only with the `pretrained` extra installed). No download."""
    if _torchvision_enum(model) is not None:
        return "DEFAULT"
    with contextlib.suppress(ImportError):
        if tags := timm_tags(model):
            cfg = _optional("timm").models.get_pretrained_cfg(timm_arch(model))
            return TIMM_PREFIX + (cfg.tag if cfg is not None and cfg.tag in tags else tags[0])
    return None


def resolve_weights_name(model: str, name: str) -> Pretrained:
    """The record for weights `name` of `model`, or a ValueError listing the valid names. No download."""
    if name.startswith(TIMM_PREFIX):
        return _timm_record(model, name[len(TIMM_PREFIX) :])
    enum = _torchvision_enum(model)
    if enum is None:
        try:
            tags = timm_tags(model)
        except ImportError:
            raise ValueError(
                f"{model} has no torchvision weights (torchvision has no {model}); for timm's, "
                "pip install 'resnets[pretrained]'"
            ) from None
        if tags:
            raise ValueError(
                f"{model} has no torchvision weights (torchvision has no {model}); "
                f"timm's are {', '.join(TIMM_PREFIX + t for t in tags)}"
            )
        raise ValueError(
            f"{model} has no named weights (neither torchvision nor timm has it): "
            "use a local weights file, or none"
        )
    if name not in enum.__members__:
        names = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ValueError(
            f"unknown weights {name!r} for {model}: torchvision's are {names}; timm's are "
            f"timm:TAG (`resnets weights {model}` lists them), or give a local file"
        )
    return _torchvision_record(model, enum[name])


def cache_dirs() -> dict[str, str]:
    """Where each library keeps its downloads (and where files placed by hand are found)."""
    try:
        from huggingface_hub import constants

        hf = f"{constants.HF_HUB_CACHE} (Hugging Face's cache, $HF_HUB_CACHE)"
    except ImportError:
        hf = "(pip install 'resnets[pretrained]')"
    return {
        "torchvision": f"{Path(torch.hub.get_dir()) / 'checkpoints'} ($TORCH_HOME/hub/checkpoints)",
        "timm": hf,
    }


def load_pretrained(model: ResNet, record: Pretrained) -> Pretrained:
    """Fetch the weights of `record` (from the cache, else downloaded with the library's checks), load them
    into `model` as `load_weights` does (a classifier of another size is re-initialised, with a warning), and
    keep their record (with the file) as `model.pretrained`."""
    if record.source == "torchvision":
        state = _fetch_torchvision(record)
    else:
        state, path = _fetch_timm(record)
        record = replace(record, file=path)
    load_state(model, state, record.name)
    model.pretrained = record
    return record
