"""Image decoding and folder loading: today's `resnets/data/folder.py` against a baseline version of it (and
optionally a previous one), decode alone and whole `FolderSplit` items, interleaved in one process.

    git show 5e8640b:src/resnets/data/folder.py > /tmp/folder_torchvision.py  # torchvision's decode_image
    git show 49d7105:src/resnets/data/folder.py > /tmp/folder_pillow.py  # Pillow for every format
    python benchmarks/image_decoding.py --data-root PATH/chest_xray \\
        --baseline /tmp/folder_torchvision.py --previous /tmp/folder_pillow.py

The large-image cases enlarge a quarter of the files (--scale), where JPEG DCT scaling can help. Every
round times each case once over the same files (`resnets.timing.median_seconds_each`: the order alternates
between rounds); the table gives medians and their ratios. On a shared machine, trust the ratios more than
the rates. A second table times the steps of one item (read, decode by each library, Pillow's image to
array, the eval and train transforms) in the same rounds. Prints Markdown (command, commit, CPU, load,
versions, tables) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import PIL
import simplejpeg
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from resnets.data import folder
from resnets.data.folder import eval_preprocess, eval_resize, scan_classes
from resnets.machine import cpu_model
from resnets.timing import median_seconds_each

CPU = torch.device("cpu")


def load_version(path: Path, name: str) -> ModuleType:
    """Import another version of resnets/data/folder.py under its own name, beside today's."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def decode_pass(module: ModuleType, paths: list[Path], channels: int) -> None:
    """Decode every file with `module.read_image` (full size)."""
    for path in paths:
        module.read_image(path, channels)


def split_pass(module: ModuleType, samples: list[tuple[Path, int]], train: bool) -> None:
    """Every item of a FolderSplit at 224 px (decode, resize or random-resized crop) from `module`."""
    split = module.FolderSplit(samples, ["0", "1"], 3, (224, 224), train=train)
    for i in range(len(split)):
        split[i]


def enlarge(paths: list[Path], folder: Path, scale: int) -> list[tuple[Path, int]]:
    """Bicubic `scale`x copies as quality-90 JPEGs: the size of photos and scans before anyone shrank them."""
    samples = []
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            big = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.BICUBIC)
        big.save(folder / f"{i}.jpg", quality=90)
        samples.append((folder / f"{i}.jpg", i % 2))
    return samples


def cases_for(
    module: ModuleType, paths: list[Path], large: list[tuple[Path, int]], every: list[tuple[Path, int]]
) -> dict[str, tuple[int, Callable[[], object]]]:
    """The timed cases for one version of folder.py: name -> (files per pass, one pass)."""
    samples = [(p, i % 2) for i, p in enumerate(paths)]
    side = Image.open(large[0][0]).size[0]
    return {
        "decode to RGB": (len(paths), lambda: decode_pass(module, paths, 3)),
        "decode to gray": (len(paths), lambda: decode_pass(module, paths, 1)),
        "FolderSplit eval item": (len(paths), lambda: split_pass(module, samples, train=False)),
        "FolderSplit train item": (len(paths), lambda: split_pass(module, samples, train=True)),
        f"FolderSplit eval item, {side} px": (len(large), lambda: split_pass(module, large, train=False)),
        f"FolderSplit train item, {side} px": (len(large), lambda: split_pass(module, large, train=True)),
        "scan and check files": (len(every), lambda: module.drop_incomplete(every, strict=False)),
    }


def parts(paths: list[Path]) -> dict[str, Callable[[], object]]:
    """The steps of one 224 px item, each over all `paths` from bytes or tensors already in memory."""
    data = [p.read_bytes() for p in paths]
    images = [folder.read_image(p, 3) for p in paths]
    loaded = []
    for d in data:
        with Image.open(io.BytesIO(d)) as image:
            image.load()
            loaded.append(image.copy())
    split = folder.FolderSplit([], [], 3, (224, 224), train=True)
    size = eval_resize(split.image_size)
    return {
        "read the file": lambda: [p.read_bytes() for p in paths],
        "torchvision decode_jpeg to RGB (deprecated)": lambda: [
            decode_jpeg(torch.frombuffer(bytearray(d), dtype=torch.uint8), mode=ImageReadMode.RGB)
            for d in data
        ],
        "Pillow open + decode to RGB": lambda: [Image.open(io.BytesIO(d)).load() for d in data],
        "Pillow RGB image to array (tobytes 4 -> 3 bytes a pixel, copy)": lambda: [
            np.asarray(image).copy() for image in loaded
        ],
        "Pillow open + decode to gray (draft L)": lambda: [_pillow_gray(d) for d in data],
        "simplejpeg decode to RGB": lambda: [simplejpeg.decode_jpeg(d) for d in data],
        "simplejpeg decode to gray": lambda: [simplejpeg.decode_jpeg(d, colorspace="GRAY") for d in data],
        "eval transform (resize to 256, centre crop 224)": lambda: [
            eval_preprocess(image, size, split.image_size) for image in images
        ],
        "train transform (random-resized crop, flip)": lambda: [
            split._transform(image, i)  # the item's own transform
            for i, image in enumerate(images)
        ],
    }


def _pillow_gray(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.draft("L", None)
        image.load()


def table(seconds: dict[str, dict[str, float]], files: dict[str, int]) -> str:
    """One row per case: images per second for each version, and each version's time over the baseline's."""
    versions = list(seconds)
    rows = [
        "| what | " + " | ".join(f"{v} img/s" for v in versions) + " | "
        + " | ".join(f"{v} / {versions[0]} time" for v in versions[1:]) + " |",
        "|---|" + "---:|" * (2 * len(versions) - 1),
    ]  # fmt: skip
    for what, n in files.items():
        rates = " | ".join(f"{n / seconds[v][what]:.0f}" for v in versions)
        ratios = " | ".join(f"{seconds[v][what] / seconds[versions[0]][what]:.3f}" for v in versions[1:])
        rows.append(f"| {what} ({n} files) | {rates} | {ratios} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", type=Path, required=True, help="an image folder tree (e.g. chest_xray)"
    )
    parser.add_argument("--baseline", type=Path, required=True, help="an older resnets/data/folder.py")
    parser.add_argument("--previous", type=Path, help="another older folder.py, timed as a third version")
    parser.add_argument("--files", type=int, default=800, help="images per decode round (every k-th file)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scale", type=int, default=4, help="the large-image cases enlarge files this much")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    warnings.filterwarnings("ignore", message=".*decod.*deprecated", category=DeprecationWarning)
    versions = {"baseline": load_version(args.baseline, "folder_baseline")}
    if args.previous:
        versions["previous"] = load_version(args.previous, "folder_previous")
    versions["new"] = folder
    everything = sorted(p for split in ("train", "test", "val") if (args.data_root / split).is_dir()
                        for files in scan_classes(args.data_root / split).values() for p in files)  # fmt: skip
    step = max(1, len(everything) // args.files)
    paths = everything[::step][: args.files]
    every = [(p, 0) for p in everything]
    with tempfile.TemporaryDirectory() as large_dir:
        large = enlarge(paths[: len(paths) // 4], Path(large_dir), args.scale)
        cases = {v: cases_for(module, paths, large, every) for v, module in versions.items()}
        whats = list(cases["new"])
        runs = [cases[v][what][1] for what in whats for v in versions]  # a case's versions side by side
        steps = parts(paths)
        runs += steps.values()
        medians = iter(median_seconds_each(runs, CPU, warmup=1, repeats=args.rounds, min_time=0.0))
        seconds: dict[str, dict[str, float]] = {v: {} for v in versions}
        for what in whats:
            for v in versions:
                seconds[v][what] = next(medians)
    files = {what: n for what, (n, _) in cases["new"].items()}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cpu = cpu_model()
    print(f"Command: `python {' '.join(sys.argv)}`; commit {commit}; CPU {cpu} ({os.cpu_count()} cores, load "
          f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after); 1 torch thread; Python {platform.python_version()}, "
          f"Pillow {PIL.__version__}, simplejpeg {simplejpeg.__version__}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}; {args.rounds} interleaved rounds, medians.\n")  # fmt: skip
    print(table(seconds, files))
    print(
        f"\nThe steps of one {Image.open(paths[0]).size[0]} px item, us per image (medians, same rounds):\n"
    )
    print("| step | us |\n|---|---:|")
    for step, s in zip(steps, medians, strict=True):
        print(f"| {step} | {s / len(paths) * 1e6:.0f} |")


if __name__ == "__main__":
    main()
