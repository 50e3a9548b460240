"""Data-parallel training under torchrun on CPU (gloo, 2 processes): the same weights as one process with
the global batch, files from rank 0 only, a killed worker resumed by torchrun, two "nodes" on loopback.

Run as a script (by torchrun), this file is the worker of `test_ddp_steps_equal_one_process_in_float64`.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file

from resnets.cli import build_parser
from resnets.data import load_dataset, make_loader
from resnets.models import create_model
from resnets.train import TrainConfig, fit
from resnets.train.distributed import process_group, sync_batch_norm, world_size, wrap
from resnets.train.folder import elastic_resume
from resnets.train.optim import make_optimizer

FIXTURE = Path(__file__).parent / "fixtures" / "fashion-mnist"
# fp32, no augmentation, no dropout, 16 px: 2 epochs x 1 step of a global batch of 64 (2 ranks x 32)
TINY = dict(data_root=str(FIXTURE), limit=64, epochs=2, image_size=16, precision="fp32", crop_padding=0,
            flip=False, workers=0, device="cpu", seed=3)  # fmt: skip
TINY_FLAGS = ["--data-root", str(FIXTURE), "--limit", "64", "--epochs", "2", "--image-size", "16",
              "--precision", "fp32", "--crop-padding", "0", "--no-flip", "--workers", "0", "--device", "cpu",
              "--seed", "3", "--batch-size", "32", "--sync-bn"]  # fmt: skip
RUN_FILES = {".resnets-run.json", "config.json", "runtime.json", "results.json", "metrics.csv", "last.safetensors", "state.pt",
             "report.md", "curves.png", "confusion.png", "roc_pr.png", "tensorboard"}  # fmt: skip


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "resnets", "train", *TINY_FLAGS]


def clean_env() -> dict[str, str]:
    """This environment without any torchrun variables a surrounding job may have set."""
    launcher = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    return {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("TORCHELASTIC")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=1e-4, msg=name)


def train_float64() -> dict[str, torch.Tensor]:
    """3 SGD steps (3 epochs x 1) of a global batch of 64 split over this job's ranks, with --sync-bn and the
    default LR, in float64 so that rounding cannot hide a wrong gradient; the final state dict."""
    cpu = torch.device("cpu")
    bundle = load_dataset("fashion-mnist", str(FIXTURE), limit=64, image_size=16)
    with process_group():
        ranks = world_size()
        rank = dist.get_rank() if ranks > 1 else 0
        torch.manual_seed(3)
        model = sync_batch_norm(create_model("cifar_resnet20", num_classes=10, in_channels=1).double(), cpu)
        ddp = wrap(model, cpu)
        optimizer = make_optimizer(model, TrainConfig(batch_size=64 // ranks))  # lr 0.1 x 64 / 128
        for epoch in range(3):
            for x, y in make_loader(bundle, "train", 64 // ranks, train=True, seed=3, epoch=epoch, rank=rank,
                                    world_size=ranks):  # fmt: skip
                loss = F.cross_entropy(ddp(x.double()), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return {k: v.clone() for k, v in model.state_dict().items()}


def test_ddp_steps_equal_one_process_in_float64(tmp_path: Path) -> None:
    # rank r's batch i is perm[i*64 + r :: 2][:32], so the shards together are the single batch i; DDP
    # averages the gradients, AllReduceBatchNorm2d pools the statistics, and the default LR follows 2 x 32
    out = tmp_path / "ddp.pt"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        __file__,
        str(out),
    ]
    done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ddp, single = torch.load(out), train_float64()
    assert ddp.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-10, rtol=1e-10, msg=name)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process with the whole global batch of 64."""
    out = tmp_path_factory.mktemp("single") / "run"
    fit(TrainConfig(**TINY, batch_size=64, out=str(out), quiet=True))
    return out


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two torchrun "nodes" of one process each, meeting on 127.0.0.1, each in its own working folder and
    writing to the default (relative) run folder, so a write by rank 1 would land in its own folder. Each
    node gets one core, so its worker computes like one of `--nproc-per-node 2` on this machine."""
    homes = [tmp_path_factory.mktemp(f"node{i}") for i in range(2)]
    cores = sorted(os.sched_getaffinity(0))
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for rank, home in enumerate(homes):
        command = torchrun("--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                           "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "test")  # fmt: skip
        core = {cores[rank % len(cores)]}
        nodes.append(subprocess.Popen(command + ["--quiet"], cwd=home, env=clean_env(), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      preexec_fn=lambda core=core: os.sched_setaffinity(0, core)))  # fmt: skip
    for node in nodes:
        output, _ = node.communicate(timeout=300)
        assert node.returncode == 0, output
    return homes[0], homes[1]


def test_two_nodes_finish_and_only_rank0_writes(two_nodes: tuple[Path, Path]) -> None:
    written = [home for home in two_nodes if any(home.iterdir())]
    assert len(written) == 1, "exactly one node (the one running rank 0) writes files"
    runs = list((written[0] / "runs").iterdir())
    assert len(runs) == 1 and {p.name for p in runs[0].iterdir()} == RUN_FILES
    assert TrainConfig.load(runs[0] / "config.json").batch_size == 32  # the per-process batch is saved


def test_ddp_run_matches_one_process_with_the_global_batch(
    two_nodes: tuple[Path, Path], single: Path
) -> None:
    # the whole command in fp32: the first step's loss (sync-bn statistics, sharding) and the test loss after
    # it (gradients, LR) agree; later fp32 rounding grows (see the float64 test for exact equality)
    ddp_run = next(next(home / "runs" for home in two_nodes if (home / "runs").exists()).iterdir())
    ddp_epoch, single_epoch = (
        next(csv.DictReader((run / "metrics.csv").open())) for run in (ddp_run, single)
    )
    assert float(ddp_epoch["train_loss"]) == pytest.approx(
        float(single_epoch["train_loss"]), rel=1e-6
    )  # step 1
    assert float(ddp_epoch["test_loss"]) == pytest.approx(
        float(single_epoch["test_loss"]), rel=1e-4
    )  # after it


@pytest.mark.slow  # 15 s; `make test-slow` (the restart decision itself is unit-tested below)
def test_killed_worker_is_restarted_and_resumes(tmp_path: Path, two_nodes: tuple[Path, Path]) -> None:
    out = tmp_path / "run"
    command = torchrun(
        "--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.1"
    )
    env = clean_env() | {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # pytorch/pytorch#135712, see README
    job = subprocess.Popen(command + ["--out", str(out)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        while not (out / "state.pt").exists():  # epoch 1 is checkpointed: kill a worker during epoch 2
            assert job.poll() is None, job.communicate()[0]
            time.sleep(0.02)
        workers = Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()
        os.kill(int(workers[-1]), signal.SIGKILL)
        output, _ = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, output
    assert "resuming" in output and "after epoch 1/2" in output, output
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + epochs 1 and 2, once each
    uninterrupted = next(next(home / "runs" for home in two_nodes if (home / "runs").exists()).iterdir())
    assert_same_weights(out / "last.safetensors", uninterrupted / "last.safetensors", atol=1e-6)


def test_elastic_resume_only_after_a_restart_of_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = TrainConfig(out=str(tmp_path), epochs=3)
    (tmp_path / "config.json").write_text(cfg.to_json())
    (tmp_path / "state.pt").write_bytes(b"")
    assert elastic_resume(cfg) is None  # first attempt: a fresh run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic_resume(cfg) == tmp_path
    assert elastic_resume(TrainConfig(out=str(tmp_path), epochs=4)) is None  # another run's folder
    (tmp_path / "state.pt").unlink()
    assert elastic_resume(cfg) is None  # killed before the first checkpoint: start over


def test_nproc_relaunches_the_same_command_without_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each torchrun worker parses to exactly the options of the same command given without --nproc."""
    options = ["--preset", "fast", "--batch-size", "32", "--no-flip", "--sync-bn", "--lr", "0.05",
               "--epochs", "3"]  # fmt: skip
    args = build_parser().parse_args(["train", "--nproc", "2", *options])
    launched: list[list[str]] = []

    def run(command: list[str], check: bool) -> subprocess.CompletedProcess:
        launched.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    assert args.handler(args) == 0
    command = launched[0]
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    worker_argv = command[command.index("resnets") + 1 :]
    assert worker_argv[0] == "train" and not any(a.startswith("--nproc") for a in worker_argv)
    worker = vars(build_parser().parse_args(worker_argv))
    direct = vars(build_parser().parse_args(["train", *options]))
    assert worker == direct
    assert (worker["preset"], worker["batch_size"], worker["flip"], worker["lr"]) == ("fast", 32, False, 0.05)


if __name__ == "__main__":  # a torchrun worker of test_ddp_steps_equal_one_process_in_float64
    state = train_float64()
    if int(os.environ["RANK"]) == 0:
        torch.save(state, sys.argv[1])
