"""The deploy path: BN folding is exact, bf16/int8 stay close to fp32, exports reload with a free batch size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from resnets import machine
from resnets.cli import main
from resnets.deploy import export_model, fuse_bn, load_exported, prepare_for_inference, runtimes
from resnets.deploy.prepare import FrozenCompiled
from resnets.deploy.runtimes import PeerRuntime, onnxruntime_session
from resnets.files import cache_dir
from resnets.models import create_model
from resnets.train.checkpoint import save_weights


def trained_like(name: str, side: int) -> nn.Module:
    """Random affine BN parameters and running statistics gathered from data, as after training."""
    model = create_model(name)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.momentum = None  # cumulative average over the batches below
        model.train()
        model(torch.randn(8, 3, side, side, generator=g))
    return model.eval()


NETS = {  # one of each kind: basic, bottleneck + deep stem + avg-down, grouped, option A, plain, pre-activation
    "cifar_resnet20": 32,
    "resnet18": 32,
    "resnet50d": 32,
    "resnext50_32x4d": 32,
    "cifar_plain20": 32,
    "preact_resnet18": 32,
}


@pytest.mark.parametrize("name", NETS)
def test_fused_model_gives_the_same_outputs(name: str) -> None:
    side = NETS[name]
    model = trained_like(name, side)
    fused = fuse_bn(model)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        ref = model(x)
        assert (fused(x) - ref).abs().max() < 1e-4 * ref.abs().max()  # fp32 rounding over 50 layers
        # in float64 the fold is exact up to rounding, which shows it is the same function
        exact = (fuse_bn(model.double())(x.double()) - model(x.double())).abs().max()
    assert exact < 1e-9
    bns = [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if model.spec.preact:  # only the BNs no conv precedes: each block's first and the final one
        assert bns and all(n.endswith(".bn1") or n == "final_bn" for n in bns)
    else:
        assert bns == []
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_bf16_predicts_the_same_classes() -> None:
    model = trained_like("cifar_resnet20", 32)
    x = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = prepare_for_inference(model, dtype="bf16")(x)
    assert out.dtype == torch.float32
    agree = (out.argmax(1) == ref.argmax(1)).float().mean()
    assert agree > 0.95
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_eager_fp32_is_channels_last() -> None:
    model = trained_like("cifar_resnet20", 32)
    fp32 = prepare_for_inference(model, runtime="eager")
    assert fp32.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        assert (fp32(x) - ref).abs().max() < 1e-4 * ref.abs().max()
    with pytest.raises(ValueError, match="dtype"):
        prepare_for_inference(model, dtype="fp16")


@pytest.mark.parametrize("runtime", ["compiled", "onnxruntime"])
def test_every_runtime_gives_the_models_outputs(runtime: str) -> None:
    model = trained_like("resnet18", 32)
    served = prepare_for_inference(model, runtime=runtime)
    shapes = [(1, 3, 32, 32), (5, 3, 32, 32), (2, 3, 40, 48)]  # batch sizes, and another image size
    with torch.no_grad():
        for shape in shapes if runtime == "onnxruntime" else shapes[:2]:  # (each compile costs seconds)
            x = torch.randn(*shape)
            ref = model(x)
            assert (served(x) - ref).abs().max() < 1e-4 * ref.abs().max()
            x = x.contiguous(memory_format=torch.channels_last)  # as predict passes it
            assert (served(x) - ref).abs().max() < 1e-4 * ref.abs().max()


def test_auto_serves_fp32_by_onnx_runtime_and_else_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    model = create_model("cifar_resnet20")
    assert isinstance(prepare_for_inference(model), PeerRuntime)
    assert prepare_for_inference(model).opener is onnxruntime_session
    assert isinstance(prepare_for_inference(model, dtype="bf16"), nn.Module)  # bf16: eager
    assert not isinstance(prepare_for_inference(model, dtype="bf16"), PeerRuntime | FrozenCompiled)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    assert isinstance(prepare_for_inference(model), FrozenCompiled)
    with pytest.raises(ImportError, match=r"pip install 'resnets\[export\]'"):
        prepare_for_inference(model, runtime="onnxruntime")


def test_peer_runtimes_refuse_what_they_cannot_serve() -> None:
    model = create_model("cifar_resnet20")
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        prepare_for_inference(model, dtype="bf16", runtime="onnxruntime")
    with pytest.raises(ValueError, match="runtime must be one of"):
        prepare_for_inference(model, runtime="tensorrt")
    with pytest.raises(ValueError, match="int8"):
        prepare_for_inference(model, dtype="int8", runtime="eager", calibration=[torch.randn(2, 3, 32, 32)])


def test_onnx_exports_are_cached_and_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    model = create_model("cifar_resnet20")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = prepare_for_inference(model)(x)
        monkeypatch.setattr(runtimes, "export_model", lambda *a: pytest.fail("exported again"))
        assert torch.equal(prepare_for_inference(model)(x), first)  # a second predict: from the cache
        monkeypatch.undo()
        monkeypatch.setattr(runtimes, "KEEP_EXPORTS", 2)
        for side in (16, 20, 24):  # three more exports: only the two most recent stay
            prepare_for_inference(model)(torch.randn(1, 3, side, side))
    assert len(list((cache_dir() / "onnx").glob("*.onnx"))) == 2


def test_int8_runs_every_conv_as_an_int8_kernel_and_stays_close() -> None:
    pytest.importorskip("torchao")
    from torch._dynamo.utils import counters

    model = trained_like("cifar_resnet20", 32)
    g = torch.Generator().manual_seed(2)
    int8 = prepare_for_inference(
        model, dtype="int8", calibration=[torch.randn(8, 3, 32, 32, generator=g) for _ in range(4)]
    )
    x = torch.randn(8, 3, 32, 32, generator=g)
    counters.clear()
    with torch.no_grad():
        ref, out = model(x), int8(x)
    # Inductor lowered each conv (with its ReLU, or residual add + ReLU) to a oneDNN int8 kernel: without
    # freezing it would run dequantize -> fp32 conv -> quantize, slower than fp32
    lowered = (
        counters["inductor"]["qconv_unary_lower_count"] + counters["inductor"]["qconv2d_binary_lower_count"]
    )
    assert lowered == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert out.dtype == torch.float32 and (out - ref).abs().max() < 0.1 * ref.abs().max()
    with pytest.raises(ValueError, match="calibration"):
        prepare_for_inference(model, dtype="int8")
    with pytest.raises(ValueError, match="layout"):
        prepare_for_inference(model, dtype="int8", channels_last=True, calibration=[x])


def test_int8_without_torchao_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e.quantize_pt2e", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'resnets\[int8\]'"):
        prepare_for_inference(
            create_model("cifar_resnet20"), dtype="int8", calibration=[torch.randn(2, 3, 32, 32)]
        )


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_reloads_with_any_batch_size(fmt: str, tmp_path: Path) -> None:
    model = fuse_bn(trained_like("cifar_resnet20", 32))
    run = load_exported(export_model(model, tmp_path / f"net.{fmt}", fmt, (3, 32, 32)))
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            assert (run(x) - model(x)).abs().max() < 1e-4


def test_export_refuses_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="onnx, pt2"):
        export_model(create_model("cifar_resnet20"), tmp_path / "x", "tflite", (3, 32, 32))
    with pytest.raises(ValueError, match="TorchScript is deprecated"):
        export_model(create_model("cifar_resnet20"), tmp_path / "x.ts", "torchscript", (3, 32, 32))


def test_cli_exports_a_weights_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "w.safetensors"
    save_file(
        {k: v.contiguous() for k, v in create_model("cifar_resnet20").state_dict().items()}, str(weights)
    )
    done = subprocess.run(
        [sys.executable, "-m", "resnets", "export", str(weights), "--model", "cifar_resnet20"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w.onnx").is_file() and "max |diff|" in done.stdout
    assert main(["export", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_exports_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = create_model("cifar_resnet20", num_classes=7, in_channels=1)
    meta = {"model": "cifar_resnet20", "num_classes": 7, "in_channels": 1, "image_size": [28, 28]}
    save_weights(model.state_dict(), tmp_path / "best.safetensors", meta)
    assert main(["export", str(tmp_path), "--format", "pt2", "--out", str(tmp_path / "out/net.pt2")]) == 0
    assert "input N x 1 x 28 x 28" in capsys.readouterr().out
    preprocessing = json.loads((tmp_path / "out/net.pt2.json").read_text())  # what a serving runtime needs
    assert (
        preprocessing["crop"] == [28, 28] and preprocessing["resize"] == 28 and preprocessing["channels"] == 1
    )
    run = load_exported(tmp_path / "out/net.pt2")
    assert run(torch.randn(3, 1, 28, 28)).shape == (3, 7)


@pytest.fixture
def recorded_sessions(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The SessionOptions of every ONNX Runtime session opened (sessions open as before)."""
    ort = pytest.importorskip("onnxruntime")
    seen: list[object] = []
    real = ort.InferenceSession

    def recording(path: str, options: object, **kwargs: object) -> object:
        seen.append(options)
        return real(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    return seen


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int, float], None]]:
    """Sets the load `machine` measures: (cores, cores' worth busy with other work). No thread count was
    chosen before (no $OMP_NUM_THREADS, no earlier `set_threads`); PyTorch starts on 4 threads."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(machine, "_applied", None, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(4)

    def measured(cores: int, busy: float) -> None:
        monkeypatch.setattr(machine, "free_cores", lambda: (machine.idle_cores(busy, cores), cores, busy))

    yield measured
    torch.set_num_threads(before)


def spinning(options: object) -> tuple[str, str]:
    return tuple(
        options.get_session_config_entry(f"session.{p}.allow_spinning") for p in ("intra_op", "inter_op")
    )


def test_onnx_runtime_takes_the_idle_cores_and_spins_only_on_an_idle_machine(
    recorded_sessions: list[object], load: Callable[[int, float], None]
) -> None:
    model = create_model("cifar_resnet20")
    x = torch.randn(2, 3, 32, 32)
    load(4, 3.0)  # three of four cores busy with other work: one thread, and it must not spin
    with torch.no_grad():
        prepare_for_inference(model)(x)
        load(4, 0.1)  # idle: every core, spinning as ONNX Runtime does by default
        prepare_for_inference(model)(x)
        load(4, 1.0)  # an explicit count wins, but still no spinning beside other work
        prepare_for_inference(model, threads=4)(x)
    assert [o.intra_op_num_threads for o in recorded_sessions] == [1, 4, 4]
    assert [spinning(o) for o in recorded_sessions] == [("0", "0"), ("1", "1"), ("0", "0")]
    assert torch.get_num_threads() == 4  # ONNX Runtime has its own threads: PyTorch's count is left alone


def test_the_count_set_threads_chose_is_kept_and_pytorch_runtimes_follow_the_policy(
    recorded_sessions: list[object], load: Callable[[int, float], None]
) -> None:
    model = create_model("cifar_resnet20")
    load(2, 1.0)
    machine.set_threads(2)  # as a benchmark's --threads 2 does: the caller's choice, kept
    with torch.no_grad():
        prepare_for_inference(model)(torch.randn(1, 3, 32, 32))
    assert recorded_sessions[-1].intra_op_num_threads == 2 and spinning(recorded_sessions[-1]) == ("0", "0")
    torch.set_num_threads(4)  # no longer what set_threads chose: the policy decides again
    load(4, 3.0)
    prepare_for_inference(model, runtime="eager")
    assert torch.get_num_threads() == 1  # PyTorch's threads are per process: set, as `resnets predict` does
    prepare_for_inference(model, runtime="eager", threads=3)
    assert torch.get_num_threads() == 3
    with pytest.raises(ValueError, match="threads"):
        prepare_for_inference(model, threads=0)
