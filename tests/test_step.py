"""The one training step, the precision each device gets, and fp16's GradScaler (driven on the CPU)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets import machine
from resnets.machine import busy_cores, set_threads
from resnets.train import fit
from resnets.train import runtime as runtime_module
from resnets.train.checkpoint import load_state
from resnets.train.config import TrainConfig
from resnets.train.runtime import (
    AMP_DTYPES,
    Runtime,
    choose_precision,
    compile_for_training,
    resolve_runtime,
    set_cudnn_autotune,
)
from resnets.train.step import MixedTargets, classification_loss, training_step

FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 2, 2, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)


# ---- precision: a pure function of the device's facts


@pytest.mark.parametrize(
    ("device", "native", "expected"),
    [
        ("cuda", False, "fp16"),
        ("cuda", True, "bf16"),
        ("cpu", True, "bf16"),
        ("cpu", False, "fp32"),
        ("mps", False, "fp32"),
    ],  # fmt: skip
)
def test_auto_precision_follows_native_bf16(device: str, native: bool, expected: str) -> None:
    assert choose_precision(device, "auto", native) == expected


@pytest.mark.parametrize("requested", ["fp32", "bf16", "fp16"])
def test_explicit_precision_is_honoured_on_any_gpu(requested: str) -> None:
    for native in (False, True):
        assert choose_precision("cuda", requested, native) == requested


@pytest.mark.parametrize("requested", ["fp32", "bf16"])
def test_explicit_precision_is_honoured_on_a_cpu(requested: str) -> None:
    assert choose_precision("cpu", requested, False) == requested


def test_fp16_is_refused_off_cuda_and_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="fp16 training needs a CUDA GPU"):
        choose_precision("cpu", "fp16", True)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        choose_precision("cuda", "fp8", True)


def test_a_runs_cpu_precision_is_the_machines_bf16_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_runtime asks machine.bf16_native, the one place the rule is written (patched both ways)."""
    for native, dtype in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(runtime_module, "bf16_native", lambda device, native=native: native)
        assert resolve_runtime(TrainConfig(device="cpu")).amp_dtype == dtype


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU's flags from /proc/cpuinfo")
def test_cpu_bf16_fact_is_the_cpus_own_flags() -> None:
    """The fact itself, against the kernel's word: native bf16 exactly when the CPU has AVX-512 bf16 or AMX."""
    flags = set().union(*(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("flags")))  # fmt: skip
    assert machine.bf16_native(torch.device("cpu")) == bool(flags & {"avx512_bf16", "amx_tile"})


@pytest.mark.parametrize(
    ("capability", "native"), [((6, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)]
)
def test_gpu_bf16_is_native_from_ampere_on(monkeypatch: pytest.MonkeyPatch, capability, native: bool) -> None:
    """What the benchmark reports and measures bf16 by: the capability, not is_bf16_supported()."""
    monkeypatch.setattr(machine, "cuda_capability", lambda device: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as on a T4
    assert machine.bf16_native(torch.device("cuda")) is native


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_runtime_has_no_scaler(precision: str) -> None:
    runtime = resolve_runtime(TrainConfig(device="cpu", precision=precision))
    assert runtime.scaler is None and runtime.amp_dtype == AMP_DTYPES[precision]


def test_cpu_runtime_refuses_fp16() -> None:
    with pytest.raises(ValueError, match="fp16 training needs a CUDA GPU"):
        resolve_runtime(TrainConfig(device="cpu", precision="fp16"))


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_runtime sees one bf16 GPU (only its facts: nothing here runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime_module, "bf16_native", lambda device: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after


@pytest.mark.usefixtures("one_gpu")
def test_cudnn_autotune_is_on_for_gpu_runs_unless_deterministic() -> None:
    for deterministic in (False, True, False):
        resolve_runtime(TrainConfig(device="cuda", deterministic=deterministic))
        assert torch.backends.cudnn.benchmark is not deterministic
    for setting in (True, False):  # a CPU run leaves cuDNN alone
        set_cudnn_autotune(setting)
        resolve_runtime(TrainConfig(device="cpu", deterministic=setting))
        assert torch.backends.cudnn.benchmark is setting


@pytest.mark.parametrize(
    ("device", "world_size", "mode"),
    [("cuda", 1, "reduce-overhead"), ("cuda", 2, None), ("cpu", 1, None)],
)
def test_compile_uses_cuda_graphs_on_one_gpu_only(
    monkeypatch: pytest.MonkeyPatch, device: str, world_size: int, mode: str | None
) -> None:
    """--compile on one GPU records CUDA graphs (small images are launch-bound there, docs/gpu.md); DDP's
    gradient hooks and CPUs keep Inductor's default mode. Without --compile nothing is graphed."""
    asked = []
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: asked.append(mode) or model)
    runtime = Runtime(torch.device(device), None, False, world_size=world_size, compile=True)
    model = nn.Linear(2, 2)
    assert compile_for_training(model, runtime) is model and asked == [mode]
    assert runtime.cuda_graphs == (mode == "reduce-overhead")


@pytest.mark.usefixtures("one_gpu")
@pytest.mark.parametrize(
    ("device", "compile", "graphs"), [("cuda", True, True), ("cuda", False, False), ("cpu", True, False)]
)
def test_the_compile_option_decides_cuda_graphs(device: str, compile: bool, graphs: bool) -> None:
    """From the option to the runtime the loop reads: only --compile on a GPU trains through CUDA graphs."""
    runtime = resolve_runtime(TrainConfig(device=device, compile=compile))
    assert (runtime.compile, runtime.cuda_graphs) == (compile, graphs)


# ---- the step


def test_step_is_one_sgd_update_on_the_cross_entropy_gradient() -> None:
    net, x, y = tiny_net(), *batch()
    reference = copy.deepcopy(net)
    loss, logits = training_step(net, torch.optim.SGD(net.parameters(), lr=0.5), x, y)
    expected_loss = F.cross_entropy(reference(x), y)
    grads = torch.autograd.grad(expected_loss, list(reference.parameters()))
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-12)
    assert torch.allclose(logits, reference(x))
    assert not loss.requires_grad and not logits.requires_grad
    for p, q, g in zip(net.parameters(), reference.parameters(), grads, strict=True):
        assert torch.allclose(p, q - 0.5 * g)


def test_stale_gradients_are_cleared_before_backward() -> None:
    net, x, y = tiny_net(), *batch()
    for p in net.parameters():
        p.grad = torch.full_like(p, 100.0)
    reference = copy.deepcopy(net)
    training_step(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y)
    grads = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))
    for p, g in zip(net.parameters(), grads, strict=True):
        assert torch.allclose(p.grad, g)


def test_label_smoothing_and_mixup_targets() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    y_a, y_b = torch.tensor([0, 1]), torch.tensor([2, 0])
    # smoothing 0.3 over 3 classes: target 0.8 on the label, 0.1 elsewhere
    log_p = logits.log_softmax(1)
    smoothed = -(0.8 * log_p[[0, 1], y_a] + 0.1 * (log_p.sum(1) - log_p[[0, 1], y_a])).mean()
    assert classification_loss(logits, y_a, 0.3).item() == pytest.approx(smoothed.item())
    plain_a, plain_b = (-log_p[[0, 1], t].mean().item() for t in (y_a, y_b))
    mixed = classification_loss(logits, y_a, 0.0, MixedTargets(y_a, y_b, 0.25))
    assert mixed.item() == pytest.approx(0.25 * plain_a + 0.75 * plain_b)


def test_grad_clip_bounds_the_update() -> None:
    net, x, y = tiny_net(), *batch()
    before = [p.detach().clone() for p in net.parameters()]
    training_step(net, torch.optim.SGD(net.parameters(), lr=1.0), x, y * 0, grad_clip=1e-3)
    update = torch.cat([(p - b).flatten() for p, b in zip(net.parameters(), before, strict=True)])
    assert update.norm().item() == pytest.approx(1e-3, rel=1e-6)


def test_bf16_autocast_runs_the_forward_in_bf16() -> None:
    net = nn.Linear(4, 2)
    seen = []
    net.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    training_step(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.randn(3, 4), torch.tensor([0, 1, 0]),
                  amp_dtype=torch.bfloat16)  # fmt: skip
    assert seen == [torch.bfloat16] and net.weight.dtype == torch.float32


# ---- GradScaler: PyTorch's own, which also runs on the CPU, through the same code path as on a GPU


def float_net() -> nn.Module:
    return tiny_net().float()


def test_scaled_step_equals_the_unscaled_one_and_clips_true_gradients() -> None:
    x, y = (t.float() if t.is_floating_point() else t for t in batch())
    plain, scaled = float_net(), float_net()
    training_step(plain, torch.optim.SGD(plain.parameters(), lr=0.5), x, y, grad_clip=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    loss, _ = training_step(scaled, torch.optim.SGD(scaled.parameters(), lr=0.5), x, y, scaler=scaler,
                            grad_clip=0.05)  # fmt: skip
    assert loss.item() == pytest.approx(F.cross_entropy(float_net()(x), y).item(), rel=1e-6)  # not scaled
    for p, q in zip(plain.parameters(), scaled.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)
    assert scaler.get_scale() == 2048.0  # a finite step grows the scale (every step, at this interval)


def test_overflowing_step_is_skipped_and_the_scale_backs_off() -> None:
    net = float_net()
    x, y = batch()
    before = [p.detach().clone() for p in net.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)  # scaled gradients overflow float32, as fp16's do
    training_step(net, torch.optim.SGD(net.parameters(), lr=0.5), 100 * x.float(), y, scaler=scaler)
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, b)
    assert scaler.get_scale() == pytest.approx(1.5e38)


def test_grad_scaler_state_round_trips() -> None:
    """What a checkpoint of an fp16 run saves: the scale and growth tracker come back as they were."""
    net = float_net()
    x, y = batch()
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        training_step(net, optimizer, x.float(), y, scaler=scaler)
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(scaler.state_dict())
    assert restored.get_scale() == 256.0 and restored.state_dict()["_growth_tracker"] == 2
    training_step(net, optimizer, x.float(), y, scaler=restored)
    assert restored.get_scale() == 512.0  # the third finite step in a row grows it, as it would have


def test_fp16_loss_scale_is_checkpointed_and_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with a GradScaler (fp16 on a GPU; PyTorch's CPU scaler here) saves its scale with every epoch and
    a resumed run goes on from it: with growth every finite step, the scale counts the steps taken."""
    from resnets.train import setup as train_setup

    def runtime_with_scaler(cfg: TrainConfig) -> Runtime:
        scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1)
        return Runtime(torch.device("cpu"), None, False, scaler=scaler)

    monkeypatch.setattr(train_setup, "resolve_runtime", runtime_with_scaler)
    out = tmp_path / "run"
    cfg = TrainConfig(model="cifar_resnet20", data="fashion-mnist", data_root=str(FASHION), epochs=1, batch_size=16,
                      limit=48, test_limit=16, image_size=8, precision="fp32", channels_last=False, out=str(out),
                      quiet=True, workers=0)  # fmt: skip
    fit(cfg)
    steps = 48 // 16
    assert load_state(out)["scaler"]["scale"] == 2.0**steps
    fit(resume=out, changes={"epochs": 2})  # a fresh scaler at 1.0, unless the checkpoint's is loaded
    assert load_state(out)["scaler"]["scale"] == 2.0 ** (2 * steps)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins processes to a core (Linux)")
def test_busy_cores_sees_a_busy_process_on_its_own_core() -> None:
    """A spinning process pinned to the one core this thread may use: that core is busy, exactly one core's
    worth (cores outside the affinity mask, however busy, do not count)."""
    before = os.sched_getaffinity(0)
    core = min(before)
    hog = subprocess.Popen(
        [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"]
    )
    try:
        os.sched_setaffinity(0, {core})
        time.sleep(0.3)
        assert busy_cores(0.5) == pytest.approx(1.0, abs=0.1)
    finally:
        os.sched_setaffinity(0, before)
        hog.kill()


def test_threads_leave_busy_cores_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(machine, "core_count", lambda: 4)
        monkeypatch.setattr(machine, "busy_cores", lambda: 1.2)
        assert set_threads() == "3 CPU threads: 1.2 of 4 cores busy with other work"
        assert torch.get_num_threads() == 3
        monkeypatch.setattr(machine, "busy_cores", lambda: 7.0)  # more load than cores: still one thread
        assert set_threads().startswith("1 CPU threads") and torch.get_num_threads() == 1
        monkeypatch.setattr(machine, "busy_cores", lambda: 0.3)  # idle: every core, nothing to say
        assert set_threads() is None and torch.get_num_threads() == 4
        assert set_threads(processes=3) is None and torch.get_num_threads() == 1  # 4 idle cores, 3 processes
        assert set_threads(processes=2) is None and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert set_threads() is None and torch.get_num_threads() == 2
        assert set_threads(3) is None and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
