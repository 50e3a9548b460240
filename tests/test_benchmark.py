"""The benchmark runs end to end and reports every measurement (speed itself is for docs, not tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnets import timing
from resnets.cli import main
from resnets.timing import median_seconds


def test_short_calls_are_looped_to_the_minimum_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def fn() -> None:  # takes exactly 2 ms of the fake clock
        clock[0] += 0.002

    calls_before = clock[0]
    seconds = median_seconds(fn, torch.device("cpu"), warmup=1, repeats=3, min_time=0.02)
    assert seconds == pytest.approx(0.002)
    assert (clock[0] - calls_before) / 0.002 == pytest.approx(1 + 3 * 10)  # warm-up, then 10 calls a repeat


def test_quick_benchmark_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    argv = ["benchmark", "--quick", "--models", "resnet18", "--image-size", "32", "--batch-size", "2"]
    argv += [
        "--cifar-models",
        "cifar_resnet20",
        "--cifar-batch-size",
        "4",
        "--threads",
        "1",
        "--runtimes",
        "eager",
        "onnxruntime",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    assert torch.get_num_threads() == threads  # restored
    result = json.loads(out.read_text())
    assert set(result) == {"provenance", "machine", "config", "load_average", "ceiling_gflops", "training",
                           "inference"}  # fmt: skip
    source = result["provenance"]
    assert {"commit", "dirty", "command", "machine", "versions"} <= set(source)
    assert "torch" in source["versions"]
    assert source["commit"] == "unknown" or len(source["commit"]) == 40
    assert {"cpu", "cores", "threads", "gpu", "torch"} <= set(result["machine"])
    assert result["machine"]["threads"] == 1 and result["ceiling_gflops"]["fp32"] > 0
    training = {(r["model"], r["impl"], r["variant"]) for r in result["training"]}
    assert {("resnet18", "ours", "fp32-nchw"), ("resnet18", "torchvision", "fp32-nchw")} <= training
    assert ("cifar_resnet20", "ours", "fp32-nchw") in training and len(training) >= 4
    inference = {(r["model"], r["impl"], r["batch_size"]) for r in result["inference"]}
    for impl in ("ours-eager", "torchvision-eager", "deploy-eager", "deploy-onnxruntime"):
        assert {("resnet18", impl, 2), ("resnet18", impl, 1)} <= inference
    assert not any(r["impl"] == "deploy-compiled" for r in result["inference"])  # not asked for
    defaults = {r["impl"] for r in result["inference"] if r["default"]}
    assert defaults == {"deploy-onnxruntime"}  # what prepare_for_inference serves fp32 by, ORT installed
    rows = result["training"] + result["inference"]
    assert all(r["images_per_s"] > 0 and r["fraction_of_peak"] > 0 for r in rows)
    assert "deploy-onnxruntime*" in capsys.readouterr().out


OPENVINO_CHECK = """
import torch
from resnets import create_model
from resnets.bench.inference import openvino_session
from resnets.deploy import fuse_bn
from resnets.deploy.runtimes import PeerRuntime
model = create_model("cifar_resnet20").eval()
served = PeerRuntime(fuse_bn(model), openvino_session)
with torch.no_grad():
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        ref = model(x)
        assert (served(x) - ref).abs().max() < 1e-4 * ref.abs().max(), batch
print("ok")
"""


@pytest.mark.slow  # 9 s, for a peer the benchmark compares with (not a runtime we serve)
def test_the_openvino_peer_gives_the_models_outputs() -> None:
    """The benchmark's OpenVINO runner, in a process of its own: OpenVINO is never loaded next to the rest
    of the test suite (it crashed a run that also held Inductor and forked DataLoader workers)."""
    pytest.importorskip("openvino")
    done = subprocess.run([sys.executable, "-c", OPENVINO_CHECK], capture_output=True, text=True,
                          env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
