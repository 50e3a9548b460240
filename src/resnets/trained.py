"""Using a trained model: find its weights from a run folder or file, rebuild it, and predict on images."""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from .data.bundle import convert_stats
from .data.folder import IMAGE_SUFFIXES, eval_preprocess, eval_resize, glob_files, read_image, regular_files
from .data.load import IMAGENET_STATS
from .deploy import prepare_for_inference
from .deploy.runtimes import InferenceRuntime
from .files import atomic_write
from .interpret import grad_cam, overlay
from .models import ResNet, create_model
from .models.metadata import read_meta
from .models.pretrained import (
    Pretrained,
    imagenet_categories,
    is_weights_name,
    resolve_weights_name,
    torchvision_file,
)
from .models.weights import classifier_size, load_state, read_state_dict
from .typecheck import checked


@dataclass
class Trained:
    """A model rebuilt from a weights file, with what is needed to feed it: classes and input format."""

    model: ResNet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]  # the centre crop the model sees
    resize: int  # the short side images are resized to before that crop
    path: Path

    def transform(self, image: str | Path | Any) -> torch.Tensor:
        """One image (a file, a PIL image, or a uint8 (C, H, W) tensor) as the model's (C, H, W) float input:
        converted to its channels, short side resized, centre-cropped and normalised as in training's
        evaluation (torchvision's `weights.transforms()` in spirit). Stack them for a batch."""
        if isinstance(image, (str, Path)):
            return load_image(image, self)
        if not isinstance(image, torch.Tensor):  # PIL
            image = TF.pil_to_tensor(image.convert("L" if self.model.in_channels == 1 else "RGB"))
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != self.model.in_channels:
            raise ValueError(f"expected a uint8 ({self.model.in_channels}, H, W) image tensor, got "
                             f"{image.dtype} {tuple(image.shape)}")  # fmt: skip
        image = eval_preprocess(image, self.resize, self.image_size)
        return TF.normalize(image.float() / 255, list(self.mean), list(self.std))

    def preprocessing(self) -> dict[str, object]:
        """The one evaluation preprocessing, as data: what `predict` does and what an exported model needs."""
        return {"resize": self.resize, "crop": list(self.image_size), "mean": list(self.mean),
                "std": list(self.std), "channels": self.model.in_channels, "classes": self.classes}  # fmt: skip


@checked
def load(path: str | Path) -> Trained:
    """The way back from a run to Python: the model a run folder or weights file holds (its trained head,
    in evaluation mode), its classes, and `transform` for one's own images.

        trained = resnets.load("runs/x")
        probs = trained.model(trained.transform("cat.png")[None]).softmax(1)
        trained.classes[probs.argmax()]
    """
    return load_trained(path)


def resolve_weights(path: str | Path) -> Path:
    """A run folder means its model: best.safetensors (selected on validation), else last.safetensors (runs
    without a validation split keep the last epoch); a file means itself."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in ("best.safetensors", "last.safetensors") if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(
                f"{path} holds no best.safetensors or last.safetensors: is it a run folder?"
            )
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a run folder or a weights file")
    return path


@checked
def load_trained(
    path: str | Path, model: str | None = None, num_classes: int | None = None, in_channels: int | None = None
) -> Trained:
    """Rebuild the model a run trained. Our .safetensors carry their model name, classes and input format;
    for foreign weights give `model` (and `in_channels` when not 3); the class count is the classifier's.
    With `model`, `path` may instead name weights ("IMAGENET1K_V2", "timm:ra2_in1k"; `resnets weights` lists
    them), which bring their own classes and preprocessing, as does a torchvision download (by file name).
    Other foreign 1000-class weights are taken for ImageNet's: its class names, torchvision's preprocessing."""
    if is_weights_name(path):
        return _load_named(str(path), model, num_classes, in_channels)
    path = resolve_weights(path)
    meta = read_meta(path)
    name = model or meta.get("model")
    if name is None:
        raise ValueError(f"{path} does not say which model it holds: pass --model NAME")
    state = read_state_dict(path)
    n = num_classes or meta.get("num_classes") or classifier_size(state)
    channels = in_channels or meta.get("in_channels", 3)
    net = create_model(name, num_classes=n, in_channels=channels, shortcut=meta.get("shortcut"),
                       spec_overrides=meta.get("spec_overrides"))  # fmt: skip
    load_state(
        net, state, str(path), new_head=False
    )  # outside `train`, a classifier is loaded, never re-initialised
    bad = [k for k, t in net.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"{path} holds non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
                         "the run that wrote them diverged; use an earlier checkpoint or train again")  # fmt: skip
    known = None if "classes" in meta else torchvision_file(name, path)
    if known is not None:
        net.pretrained = known
        return _with_pretrained(net, known)
    classes = meta.get("classes") or [str(i) for i in range(net.num_classes)]
    if "classes" not in meta and net.num_classes == 1000:  # foreign weights for ImageNet's 1000 classes
        classes = imagenet_categories()
    side = net.spec.default_input_size
    # foreign weights (torchvision, timm) were trained on ImageNet: normalise as they were
    mean, std = (convert_stats(stats, net.in_channels) for stats in IMAGENET_STATS)
    size = tuple(meta.get("image_size", (side, side)))
    # weights from runs before "resize" was stored, and foreign ones: in-memory sets (CIFAR, Fashion-MNIST)
    # and CIFAR nets take the image whole; ImageNet weights expect torchvision's resize-256, crop-224
    data = meta.get("data", "")
    streamed = data.startswith("folder:") or data == "imagenette"
    in_memory = not streamed if "image_size" in meta else net.spec.stem == "cifar"
    default_resize = max(size) if in_memory else eval_resize(size)
    return Trained(
        net.eval(),
        classes,
        tuple(meta.get("mean", mean)),
        tuple(meta.get("std", std)),
        size,
        meta.get("resize", default_resize),
        path,
    )


def _load_named(weights: str, model: str | None, num_classes: int | None, in_channels: int | None) -> Trained:
    """`load_trained` for named weights: fetched (or read from the cache) with their classes and preprocessing."""
    if model is None:
        raise ValueError(
            f"{weights} names weights: say whose with --model NAME (`resnets weights` lists them)"
        )
    classes = len(resolve_weights_name(model, weights).categories)
    if num_classes not in (None, classes):
        raise ValueError(
            f"{weights} predicts {classes} classes, not {num_classes}: leave out --num-classes or fine-tune "
            "with `train`"
        )
    net = create_model(model, in_channels=in_channels or 3, weights=weights)
    assert net.pretrained is not None
    return _with_pretrained(net, net.pretrained)


def _with_pretrained(net: ResNet, weights: Pretrained) -> Trained:
    """A model with named weights, fed as they were evaluated: their classes, resize, crop, mean and std."""
    assert weights.file is not None
    return Trained(
        net.eval(),
        list(weights.categories),
        convert_stats(weights.mean, net.in_channels),
        convert_stats(weights.std, net.in_channels),
        weights.crop,
        weights.resize,
        weights.file,
    )


def eval_image(path: str | Path, trained: Trained) -> torch.Tensor:
    """Decode an image file as training's evaluation saw its images: uint8 (C, H, W) in the model's channels,
    short side resized, centre-cropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = read_image(path, trained.model.in_channels, min_side=trained.resize)
    return eval_preprocess(image, trained.resize, trained.image_size)


def load_image(path: str | Path, trained: Trained) -> torch.Tensor:
    """`eval_image`, normalised as in training: the (C, H, W) float the model takes."""
    return TF.normalize(eval_image(path, trained).float() / 255, list(trained.mean), list(trained.std))


def write_cam(path: str | Path, trained: Trained, target: Path) -> Path:
    """Grad-CAM of the predicted class over the image as the model saw it, as a PNG at `target`."""
    image = eval_image(path, trained)
    x = TF.normalize(image.float() / 255, list(trained.mean), list(trained.std))[None]
    picture = overlay(image, grad_cam(trained.model, x)[0])
    from PIL import Image

    return atomic_write(target, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))


def cam_names(paths: list[Path]) -> dict[Path, str]:
    """A CAM file name per image, `<name>.cam.png` where that is unique, else with as many of the path's
    folders as make every name unique (`a/x.png`, `b/x.png` -> `a_x.cam.png`, `b_x.cam.png`)."""
    parts = {p: Path(os.path.abspath(p)).with_suffix("").parts[1:] for p in paths}
    for depth in range(1, max(map(len, parts.values()), default=1) + 1):
        names = {p: "_".join(q[-depth:]) + ".cam.png" for p, q in parts.items()}
        owners: dict[str, set[str]] = {}
        for p, name in names.items():
            owners.setdefault(name, set()).add(os.path.abspath(p))
        if all(len(files) == 1 for files in owners.values()):
            break
    return names


def expand_images(inputs: list[str | Path]) -> list[Path]:
    """Image files from files, folders (every image below them, sorted) and quoted glob patterns, in order.
    A name that is none of these is kept, so that reading it reports the problem for that name. Folders and
    globs list regular files only, each real file once: a link back up the tree cannot loop or repeat."""
    found: list[Path] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in regular_files(path) if p.suffix.lower() in IMAGE_SUFFIXES)
        elif not path.exists() and glob.has_magic(item):
            found += sorted(glob_files(item))
        else:
            found.append(path)
    return found


Prediction = list[tuple[str, float]]


@torch.no_grad()
def predict(
    trained: Trained,
    images: list[str | Path],
    top_k: int = 5,
    batch_size: int = 64,
    runtime: InferenceRuntime = "auto",
) -> Iterator[tuple[Path, Prediction | Exception]]:
    """(image, top-k (class, probability)) for each image, in order, computed in batches by the deploy path
    (BN folded) served by `runtime` (see `prepare_for_inference`; "auto": ONNX Runtime on a CPU when it is
    installed). An image that cannot be read yields its exception instead, so one bad file does not hide
    the answers for the others."""
    model = prepare_for_inference(trained.model, runtime=runtime)
    k = min(top_k, trained.model.num_classes)
    paths = expand_images(images)  # (folders and globs; files stay as given)
    for start in range(0, len(paths), batch_size):
        loaded: list[tuple[Path, torch.Tensor | Exception]] = []
        for path in paths[start : start + batch_size]:
            try:
                loaded.append((path, load_image(path, trained)))
            except (OSError, ValueError) as e:  # DataError is a ValueError
                loaded.append((path, e))
        good = [x for _, x in loaded if isinstance(x, torch.Tensor)]
        rows = iter([])
        if good:
            batch = torch.stack(good).contiguous(memory_format=torch.channels_last)
            probs = model(batch).float().softmax(1)
            if not torch.isfinite(probs).all():  # an answer of "nan%" is no answer
                raise ValueError(f"{trained.path} gave non-finite outputs for {loaded[0][0]} and the rest of its "
                                 "batch: the weights or the runtime are broken")  # fmt: skip
            values, indices = probs.topk(k, 1)
            rows = iter(zip(values.tolist(), indices.tolist(), strict=True))
        for path, x in loaded:
            if isinstance(x, Exception):
                yield path, x
            else:
                v, i = next(rows)
                yield path, [(trained.classes[c], p) for p, c in zip(v, i, strict=True)]


def predictions_csv(answers: list[tuple[Path, Prediction]]) -> str:
    """One row per image: its path, then class and probability for each of the top k."""
    k = max((len(top) for _, top in answers), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image"] + [f"{kind}{i + 1}" for i in range(k) for kind in ("class", "probability")])
    for path, top in answers:
        writer.writerow([str(path)] + [v for name, p in top for v in (name, f"{p:.6f}")])
    return buffer.getvalue()
