"""End-to-end training throughput, data pipeline included: our default path against the naive loop of the
tutorials, side by side in one process.

naive: eager fp32 NCHW, per-image torchvision transforms (random crop with padding, flip, to float,
       normalise) in a DataLoader with worker processes, as most tutorials write it.
ours:  what `resnets train` does: uint8 images in memory, augmented per batch, in the format the CPU search
       picks (fp32/bf16 autocast x NCHW/channels_last).
Both run the same `train_one_epoch` (SGD, Nesterov, label smoothing) on the same model and data.

    python benchmarks/training_loop.py --data cifar10 --data-root ../shared/data/cifar10 --model cifar_resnet20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from itertools import islice

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from resnets.data import AugmentConfig, load_dataset, make_loader
from resnets.machine import cpu_has_bf16, cpu_model
from resnets.models import create_model
from resnets.provenance import invocation, provenance
from resnets.train import TrainConfig, train_one_epoch
from resnets.train.autotune import fastest_cpu_format
from resnets.train.optim import make_optimizer
from resnets.train.runtime import Runtime, precision_name


class PerImage(Dataset):
    """The tutorials' pipeline: one Python call chain per image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int, mean, std) -> None:
        self.images, self.labels = images, labels
        side = images.shape[-1]
        self.transform = v2.Compose([
            v2.RandomCrop(side, padding=padding), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def images_per_s(cfg: TrainConfig, model, runtime: Runtime, batches, steps: int) -> float:
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    train_one_epoch(model, islice(batches, steps), optimizer, runtime, cfg, lambda s: 1.0, 0, generator)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="cifar_resnet20")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--steps", type=int, default=60, help="timed steps per repeat (after 5 warm-up steps)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the naive loop")
    parser.add_argument("--crop-padding", type=int, default=4, help="random-crop padding, in both loops")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    cfg = TrainConfig(model=args.model, data=args.data, batch_size=args.batch_size, quiet=True)
    bundle = load_dataset(args.data, args.data_root)
    images, labels = bundle.train.images, bundle.train.labels
    model = create_model(args.model, num_classes=bundle.num_classes, in_channels=bundle.channels)
    shape = (args.batch_size, bundle.channels, *bundle.image_size)
    candidates = [None, torch.bfloat16] if cpu_has_bf16() else [None]
    best, _ = fastest_cpu_format(model, shape, bundle.num_classes, candidates, [False, True])
    ours_runtime = Runtime(torch.device("cpu"), best.amp_dtype, best.channels_last)
    naive_runtime = Runtime(torch.device("cpu"), None, False)
    augment = AugmentConfig(crop_padding=args.crop_padding, flip=True)  # the naive loop's, batched

    def naive_batches():
        dataset = PerImage(images, labels, args.crop_padding, bundle.mean, bundle.std)
        loader = DataLoader(dataset, args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
                            persistent_workers=args.workers > 0)  # fmt: skip
        while True:
            yield from loader

    def our_batches():
        epoch = 0
        while True:
            yield from make_loader(bundle, "train", args.batch_size, train=True, augment=augment, epoch=epoch,
                                   channels_last=best.channels_last)  # fmt: skip
            epoch += 1

    results: dict[str, list[float]] = {"naive": [], "ours": []}
    streams = {"naive": naive_batches(), "ours": our_batches()}
    layout = torch.channels_last if best.channels_last else torch.contiguous_format
    twin = create_model(args.model, num_classes=bundle.num_classes, in_channels=bundle.channels)
    nets = {"naive": model, "ours": twin.to(memory_format=layout)}
    runtimes = {"naive": naive_runtime, "ours": ours_runtime}
    for name in results:  # warm-up: oneDNN kernels, worker start
        images_per_s(cfg, nets[name], runtimes[name], streams[name], 5)
    # interleaved in alternating order, so drifts in machine load hit both alike
    for r in range(args.repeats):
        for name in list(results) if r % 2 == 0 else list(results)[::-1]:
            results[name].append(images_per_s(cfg, nets[name], runtimes[name], streams[name], args.steps))
    naive, ours = (statistics.median(results[k]) for k in ("naive", "ours"))
    fmt = f"{precision_name(best.amp_dtype)} {'channels_last' if best.channels_last else 'NCHW'}"
    print(
        f"{cpu_model()}, {torch.get_num_threads()} threads; {args.model} on {bundle.name}, batch {args.batch_size}"
    )
    print(f"naive (fp32 NCHW, per-image transforms, {args.workers} workers): {naive:.0f} img/s")
    print(f"ours ({fmt}, batched in-memory augmentation): {ours:.0f} img/s  -> {ours / naive:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "provenance": provenance(invocation(), torch.device("cpu")),
                    "args": vars(args),
                    "format": fmt,
                    "runs": results,
                    "naive": naive,
                    "ours": ours,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
