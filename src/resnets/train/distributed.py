"""Data-parallel training over several processes (DistributedDataParallel), launched by torchrun.

torchrun starts one process per GPU (or per CPU share) and sets RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. `fit` then joins the group (`process_group`), each rank
trains on its own shard of every batch, DDP averages the gradients, and only rank 0 writes files.
Anything rank 0 reads from disk (a checkpoint to resume, a run's config) it broadcasts (`on_main`), so
the other ranks, possibly on other machines, never read the run folder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..machine import set_threads
from .metrics import MetricAccumulator

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """torchrun (and any launcher using its variables) sets RANK and WORLD_SIZE for every process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain single process; readable before and after the group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes training together (1 outside a distributed job)."""
    return dist.get_world_size() if dist.is_initialized() else 1


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Join the torchrun job for the duration of a run (nothing to do outside torchrun).

    CUDA machines get NCCL for GPU tensors and gloo for CPU ones, each process on GPU LOCAL_RANK;
    CPU-only machines get gloo; the processes on a machine share its idle cores (`machine.set_threads`).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    set_threads(processes=local_world)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def on_main(read: Callable[[], T]) -> T:
    """Call `read` on rank 0 only and hand its result (or its exception) to every rank.

    One reader of the run folder: other ranks never read a file rank 0 is writing, and ranks on other
    machines need no shared file system.
    """
    if not dist.is_initialized():
        return read()
    box: list[tuple[bool, object] | None] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = (True, read())
        except Exception as e:  # re-raised on every rank below, so none waits forever
            box[0] = (False, e)
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def mean_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """Average per-rank numbers (e.g. training loss over equal shards) across the job."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def reduce_metrics(acc: MetricAccumulator, device: torch.device) -> MetricAccumulator:
    """Sum every rank's evaluation counts into `acc`, so all ranks get the full test set's result."""
    sums = torch.tensor([acc.loss_sum, acc.count, acc.top5_hits], dtype=torch.float64)
    packed = torch.cat([sums, acc.confusion.flatten().double()]).to(device)
    dist.all_reduce(packed)
    packed = packed.cpu()
    acc.loss_sum, acc.count, acc.top5_hits = packed[0].item(), int(packed[1]), int(packed[2])
    acc.confusion = packed[3:].round().long().view_as(acc.confusion)
    if acc.keep_scores:  # every rank's probabilities (for AUCs), concatenated rank by rank
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (acc.probs, acc.targets))
        acc.probs = [p for probs, _ in gathered for p in probs]
        acc.targets = [t for _, targets in gathered for t in targets]
    return acc


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with autograd: every rank's output depends on every rank's input, so the gradient
    reaching each input is the sum of the output gradients of all ranks."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch across ranks, on any device.

    PyTorch's SyncBatchNorm runs on GPUs only; this one all-reduces (with autograd) the sum, then the
    squared deviations, so CPU/gloo jobs train exactly like one process with the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in fp32 at least
        dims = [0, 2, 3]
        local_count = torch.tensor([xf.numel() / xf.size(1)], device=x.device)
        sums = _SumOverRanks.apply(torch.cat([xf.sum(dims), local_count]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centered = xf - mean[None, :, None, None]
        var = _SumOverRanks.apply((centered * centered).sum(dims)) / count
        y = centered * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * count / (count - 1).clamp(min=1), factor)
        return y.to(x.dtype)


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """`--sync-bn`: BatchNorm statistics over the global batch (PyTorch's SyncBatchNorm on GPUs,
    `AllReduceBatchNorm2d` elsewhere); a single process keeps its plain BatchNorm."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                          child.track_running_stats)  # fmt: skip
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(synced, key, getattr(child, key))  # the same tensors: dtype, device and identity kept
            setattr(model, name, synced.train(child.training))
        else:
            sync_batch_norm(child, device)
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` in a distributed job (it broadcasts rank 0's weights, so every rank starts equal,
    and averages gradients); the model itself otherwise. DDP syncs the parameters trainable now, so wrap
    again after freezing or unfreezing layers."""
    if world_size() == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def launch(nproc: int, argv: list[str]) -> int:
    """`resnets train --nproc N`: run `python -m resnets <argv>` as N processes on this machine under
    torchrun (standalone rendezvous on a free local port); returns torchrun's exit code."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if launched_by_torchrun():
        raise ValueError("--nproc starts torchrun itself; under torchrun leave it out")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "resnets", *argv]  # fmt: skip
    return subprocess.run(command, check=False).returncode
