"""Image decoding and folder loading: Pillow (resnets' `read_image`) against torchvision's `decode_image`, and
today's folder pipeline against a baseline version of `resnets/data/folder.py`, interleaved in one process.

    git show 5e8640b:src/resnets/data/folder.py > /tmp/folder_before.py
    python benchmarks/image_decoding.py --data-root PATH/chest_xray --baseline /tmp/folder_before.py

The large-image cases enlarge a quarter of the files (--scale), where JPEG draft decoding can help. Each round
times every case once over the same files, in an order that alternates between rounds; the table
gives the median round and the ratio of medians. On a shared machine, trust the ratios more than the rates.
Prints a Markdown section (command, commit, CPU, versions, table) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import PIL
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from resnets.data import folder
from resnets.data.folder import read_image, scan_classes


def load_baseline(path: Path) -> ModuleType:
    """Import another version of resnets/data/folder.py under its own name, beside today's."""
    spec = importlib.util.spec_from_file_location("folder_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def interleaved(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per round for each case; every round runs each case once, the order reversed every other round."""
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():  # warm-up: page cache, first-call costs
        run()
    for r in range(rounds):
        for name in list(cases)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            cases[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def torchvision_decode(paths: list[Path], channels: int) -> None:
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    for path in paths:
        decode_image(str(path), mode=mode)


def pillow_decode(paths: list[Path], channels: int) -> None:
    for path in paths:
        read_image(path, channels)


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


def table(results: dict[str, list[float]], pairs: list[tuple[str, str, str]], count: dict[str, int]) -> str:
    rows = [
        "| what | baseline | new | baseline img/s | new img/s | new / baseline time |",
        "|---|---|---|---:|---:|---:|",
    ]
    for what, before, after in pairs:
        b, a = statistics.median(results[before]), statistics.median(results[after])
        n = count[what]
        rows.append(f"| {what} ({n} files) | {before} | {after} | {n / b:.0f} | {n / a:.0f} | {a / b:.3f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", type=Path, required=True, help="an image folder tree (e.g. chest_xray)"
    )
    parser.add_argument("--baseline", type=Path, required=True, help="an older resnets/data/folder.py")
    parser.add_argument("--files", type=int, default=800, help="images per decode round (every k-th file)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scale", type=int, default=4, help="the large-image cases enlarge files this much")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*decod.*deprecated", category=DeprecationWarning)
    baseline = load_baseline(args.baseline)
    everything = sorted(p for split in ("train", "test", "val") if (args.data_root / split).is_dir()
                        for files in scan_classes(args.data_root / split).values() for p in files)  # fmt: skip
    step = max(1, len(everything) // args.files)
    paths = everything[::step][: args.files]
    samples = [(p, i % 2) for i, p in enumerate(paths)]
    every = [(p, 0) for p in everything]
    large_dir = tempfile.TemporaryDirectory()
    large = enlarge(paths[: len(paths) // 4], Path(large_dir.name), args.scale)
    cases = {
        "torchvision RGB": lambda: torchvision_decode(paths, 3),
        "Pillow RGB": lambda: pillow_decode(paths, 3),
        "torchvision gray": lambda: torchvision_decode(paths, 1),
        "Pillow gray": lambda: pillow_decode(paths, 1),
        "baseline eval items": lambda: split_pass(baseline, samples, train=False),
        "new eval items": lambda: split_pass(folder, samples, train=False),
        "baseline train items": lambda: split_pass(baseline, samples, train=True),
        "new train items": lambda: split_pass(folder, samples, train=True),
        "baseline large eval items": lambda: split_pass(baseline, large, train=False),
        "new large eval items": lambda: split_pass(folder, large, train=False),
        "baseline large train items": lambda: split_pass(baseline, large, train=True),
        "new large train items": lambda: split_pass(folder, large, train=True),
        "baseline scan": lambda: baseline.drop_incomplete(every, strict=False),
        "new scan": lambda: folder.drop_incomplete(every, strict=False),
    }
    results = interleaved(cases, args.rounds)
    side = Image.open(large[0][0]).size[0]
    large_dir.cleanup()
    n, total = len(paths), len(everything)
    pairs = [
        ("decode to RGB", "torchvision RGB", "Pillow RGB"),
        ("decode to gray", "torchvision gray", "Pillow gray"),
        ("FolderSplit eval item", "baseline eval items", "new eval items"),
        ("FolderSplit train item", "baseline train items", "new train items"),
        (f"FolderSplit eval item, {side} px", "baseline large eval items", "new large eval items"),
        (f"FolderSplit train item, {side} px", "baseline large train items", "new large train items"),
        ("scan and check files", "baseline scan", "new scan"),
    ]
    count = {what: n for what, _, _ in pairs} | {what: len(large) for what, _, _ in pairs if " px" in what}
    count["scan and check files"] = total
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                text=True).stdout.splitlines() if line.startswith("Model name")), platform.processor())  # fmt: skip
    spread = {name: f"{min(s):.3f}-{max(s):.3f}" for name, s in results.items()}
    print(f"Command: `python {' '.join(sys.argv)}`; commit {commit}; CPU {cpu}; 1 torch thread; "
          f"Python {platform.python_version()}, Pillow {PIL.__version__}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}; {args.rounds} interleaved rounds, medians.\n")  # fmt: skip
    print(table(results, pairs, count))
    print("\nRound times, min-max s: " + ", ".join(f"{name} {s}" for name, s in spread.items()))


if __name__ == "__main__":
    main()
