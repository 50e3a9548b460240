"""`resnets benchmark RUN` times the model a run trained, at the input it recorded: its architecture, head and
channels, and its image size unless a flag says otherwise (speed itself is for docs, not tests)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from resnets.bench import BenchConfig, run_benchmark
from resnets.bench.models import ours, run_net
from resnets.cli import main
from resnets.models import count_macs
from resnets.models.metadata import read_meta
from resnets.train import TrainConfig, fit
from resnets.trained import load_trained

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
TINY = {"epochs": 1, "batch_size": 16, "limit": 32, "workers": 0, "quiet": True}


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-channel, 10-class run trained at 24 x 24 (the zoo's CIFAR nets default to 32)."""
    out = tmp_path_factory.mktemp("bench") / "cifar"
    fit(TrainConfig(data=f"folder:{FIXTURES / 'cifar10'}", image_size=24, out=str(out), **TINY))
    return out


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-channel 28 x 28 run: its inputs must have one channel."""
    out = tmp_path_factory.mktemp("bench") / "fashion"
    with warnings.catch_warnings():  # one epoch on 32 images: "learning rate too high" is no news here
        warnings.simplefilter("ignore", UserWarning)
        fit(TrainConfig(data="fashion-mnist", data_root=str(FASHION), out=str(out), **TINY))
    return out


def quick(run: Path, **changes: object) -> dict:
    base = {"run": str(run), "runtimes": ("eager",), "training": False, "batch_size": 2, "threads": 1}
    return run_benchmark(BenchConfig.quick(**{**base, **changes}))


def test_a_run_is_timed_with_its_own_model_head_and_input(cifar_run: Path) -> None:
    trained = load_trained(cifar_run)
    net = run_net(cifar_run)
    assert (net.name, net.weights) == (read_meta(trained.path)["model"], trained.path)
    assert net.input_shape == (3, 24, 24) and trained.model.num_classes == 10
    with torch.no_grad():  # the trained head, not the zoo's
        assert ours(net).eval()(net.inputs(2, torch.device("cpu"))).shape == (2, 10)
    result = quick(cifar_run, training=True, cifar_batch_size=4)
    macs = count_macs(trained.model, (3, 24, 24))
    rows = result["inference"] + result["training"]
    assert {(r["model"], r["weights"], r["channels"], r["image_size"]) for r in rows} == {
        (net.name, str(trained.path), 3, 24)
    }
    assert all(r["gmacs_per_image"] == macs / 1e9 for r in rows)
    assert {r["impl"] for r in result["inference"]} == {"ours-eager", "deploy-eager"}  # no torchvision twin
    assert {r["batch_size"] for r in result["inference"]} == {2, 1}
    # a CIFAR-stem run gets the CIFAR nets' rows: naive fp32 NCHW against the other training formats
    assert {r["variant"] for r in result["training"]} >= {"fp32-nchw", "fp32-nhwc"}
    assert {(r["impl"], r["batch_size"]) for r in result["training"]} == {("ours", 4)}


def test_a_one_channel_run_is_fed_one_channel(fashion_run: Path) -> None:
    result = quick(fashion_run)
    assert {(r["channels"], r["image_size"]) for r in result["inference"]} == {(1, 28)}
    macs = count_macs(load_trained(fashion_run).model, (1, 28, 28))
    assert all(r["gmacs_per_image"] == macs / 1e9 for r in result["inference"])


def test_flags_override_what_the_run_recorded(
    cifar_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    weights = cifar_run / "last.safetensors"  # a weights file works as its folder does
    argv = ["benchmark", str(weights), "--quick", "--no-training", "--runtimes", "eager", "--threads", "1"]
    assert main([*argv, "--image-size", "32", "--batch-size", "3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["training"] == [] and result["config"]["run"] == str(weights)
    assert {(r["image_size"], r["channels"]) for r in result["inference"]} == {(32, 3)}
    assert {r["batch_size"] for r in result["inference"]} == {3, 1}
    assert f"run {weights}: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "nowhere", "not found: give a run folder"),
        (lambda tmp: tmp, "is not a run folder (no best.safetensors or last.safetensors): give a run folder"),
        (lambda tmp: (tmp / "w.pth").write_bytes(b"") or tmp / "w.pth", "is not a weights file of a run"),
    ],
)
def test_what_is_not_a_run_is_refused_with_what_to_give(
    make, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["benchmark", str(make(tmp_path)), "--quick", "--no-training"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnets benchmark: error: ") and message in err and err.count("\n") == 1


def test_a_run_and_zoo_models_are_not_mixed(cifar_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", str(cifar_run), "--models", "resnet18"]) == 2
    assert "not both" in capsys.readouterr().err
