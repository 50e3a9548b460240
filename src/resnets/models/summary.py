"""Layer table, parameters and multiply-accumulates, measured with `torch.utils.flop_counter`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..typecheck import checked
from .resnet import ResNet


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass(frozen=True)
class ModelSummary:
    rows: list[LayerRow]
    params: int
    macs: int  # multiply-accumulates for one image ("FLOPs" in the paper's tables)
    input_size: tuple[int, int, int]

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        lines = [f"{'layer':<24}{'type':<18}{'output shape':<22}{'params':>12}", "-" * 76]
        for r in self.rows:
            shape = "x".join(str(s) for s in r.output_shape)
            lines.append(f"{r.name:<24}{r.kind:<18}{shape:<22}{r.params:>12,}")
        lines += [
            "-" * 76,
            f"input {'x'.join(map(str, self.input_size))}: {self.params:,} parameters "
            f"({self.params / 1e6:.2f} M), {self.macs / 1e9:.3f} GMACs",
        ]
        return "\n".join(lines)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@checked
def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs for one image of `input_size` (C, H, W): FlopCounterMode counts 2 FLOPs per multiply-add."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2


def _summary_modules(model: ResNet) -> list[tuple[str, nn.Module]]:
    """What the table shows: stem parts, each residual block, pooling and classifier."""
    top = ["conv1", "bn1", "maxpool"]
    mods = [(n, getattr(model, n)) for n in top if not isinstance(getattr(model, n), nn.Identity)]
    for i, stage in enumerate(model.stages, start=1):
        mods += [(f"layer{i}.{j}", block) for j, block in enumerate(stage)]
    if not isinstance(model.final_bn, nn.Identity):
        mods.append(("final_bn", model.final_bn))
    return mods + [("avgpool", model.avgpool), ("fc", model.fc)]


@checked
def summarize(model: ResNet, input_size: tuple[int, int, int] | None = None) -> ModelSummary:
    """Output shape and parameters of each block, and totals, for one image of `input_size` (C, H, W)."""
    if input_size is None:
        side = model.spec.default_input_size
        input_size = (model.in_channels, side, side)
    shapes: dict[str, tuple[int, ...]] = {}
    modules = _summary_modules(model)
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=name: shapes.__setitem__(n, tuple(out.shape[1:])))
        for name, m in modules
    ]
    try:
        macs = count_macs(model, input_size)
    finally:
        for h in hooks:
            h.remove()
    rows = [LayerRow(n, type(m).__name__, shapes[n], count_params(m)) for n, m in modules]
    return ModelSummary(rows, count_params(model), macs, input_size)
