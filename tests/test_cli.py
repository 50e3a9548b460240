"""The `resnets` command line end to end on the fixture data: train -> evaluate -> predict, lr-find, list and
summary in real subprocesses, and every kind of bad input named in one line on stderr (a traceback only
with --debug)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from resnets import create_model
from resnets.cli import COMMANDS, build_parser, main
from resnets.data.folder import read_image
from resnets.models.metadata import read_meta

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
CIFAR = FIXTURES / "cifar10"
CLASSES = sorted(p.name for p in (CIFAR / "train").iterdir())
TINY = ["--epochs", "1", "--batch-size", "16", "--limit", "32", "--workers", "0"]
TQDM_BAR = re.compile(r"\d+%\||it/s|batch/s|\r")


def resnets_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `python -m resnets ARGS` (not waiting), with stdout and stderr captured as text."""
    env = (env or dict(os.environ)) | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "resnets", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Subprocess environment with the decoded-image cache in a temporary folder."""
    return os.environ | {"RESNETS_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, cache_env: dict[str, str]) -> Path:
    """One tiny CLI training run on the CIFAR-10 PNG fixture at 16 px, shared by the tests below."""
    out = tmp_path_factory.mktemp("cli") / "run"
    rc, stdout, stderr = finish(resnets_cli(
        "train", "--model", "cifar_resnet20", "--data", "cifar10", "--data-root", str(CIFAR), "--image-size", "16",
        *TINY, "--out", str(out), env=cache_env,
    ))  # fmt: skip
    assert rc == 0, stderr
    assert "epoch   1/1" in stdout and "test accuracy" in stdout and f"report: {out}" in stdout
    assert not TQDM_BAR.search(stderr), f"progress bar written to a non-terminal: {stderr!r}"
    return out


def test_train_evaluate_predict(run_dir: Path, cache_env: dict[str, str], tmp_path: Path) -> None:
    images = [next((CIFAR / "test" / c).iterdir()) for c in ("cat", "truck")]
    gray = tmp_path / "gray.png"  # a grayscale image for the RGB model: converted, not refused
    Image.fromarray(read_image(images[0], 3).float().mean(0).to(torch.uint8).numpy()).save(gray)
    evaluation = resnets_cli(
        "evaluate", str(run_dir), "--data", "cifar10", "--data-root", str(CIFAR), env=cache_env
    )
    prediction = resnets_cli(
        "predict", str(run_dir), *map(str, images), str(gray), "--top-k", "3", env=cache_env
    )

    rc, out, err = finish(evaluation)
    assert rc == 0, err
    logged = float(list(csv.DictReader((run_dir / "metrics.csv").open()))[-1]["test_acc"])
    assert "test (50 images, single view) top-1" in out, out
    tta = out.split("with flip TTA")[1].splitlines()[0]
    assert f"top-1 {100 * logged:.2f}%" in tta, out  # as logged in training, which evaluated with flip TTA
    assert "top-5" in out and "precision" in out and "confusion matrix" in out
    assert all(c in out for c in CLASSES)

    rc, out, err = finish(prediction)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, path in zip(lines, [*images, gray], strict=True):
        assert line.startswith(f"{path}: ")
        top = re.findall(r"(\w+) (\d+\.\d)%", line.split(": ", 1)[1])
        assert len(top) == 3 and all(name in CLASSES for name, _ in top)
        probs = [float(p) for _, p in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.05


def test_list_and_summary() -> None:
    listing, summary = resnets_cli("list"), resnets_cli("summary", "resnet50")
    rc, out, err = finish(listing)
    assert rc == 0, err
    names = [line.split()[0] for line in out.splitlines()]
    assert {"resnet18", "resnet50", "cifar_resnet20", "plain18"} <= set(names) and names == sorted(names)
    rc, out, err = finish(summary)
    assert rc == 0, err
    assert "25,557,032 parameters" in out and "fc" in out


def test_lr_find_command(tmp_path: Path) -> None:
    plot = tmp_path / "plots" / "lr.png"
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "lr-find", "--data-root", str(FASHION), "--image-size", "8",
         "--limit", "64", "--batch-size", "16", "--workers", "0", "--steps", "8", "--start", "1e-3",
         "--end", "1", "--out", str(plot)],
        cwd=work, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    suggestion = float(re.search(r"suggested lr: (\S+)", proc.stdout)[1])
    assert 1e-3 <= suggestion <= 1
    assert "tried 8 learning rates" in proc.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(work.iterdir()) == [], "lr-find wrote a run folder"


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    args = ("train", "--data", f"folder:{missing}", *TINY)
    plain, debug = resnets_cli(*args), resnets_cli(*args, "--debug")
    rc, out, err = finish(plain)
    assert rc == 2 and out == ""
    assert err.strip() == f"resnets train: error: data folder not found: {missing}; check the path (expected " \
        "<class>/<image> folders)"  # fmt: skip
    rc, out, err = finish(debug)
    assert rc != 0 and "Traceback (most recent call last)" in err and "DataError" in err


def copy_cifar(tmp_path: Path) -> Path:
    root = tmp_path / "cifar10"
    shutil.copytree(CIFAR, root)
    return root


def emptied_class(tmp_path: Path) -> Path:
    root = copy_cifar(tmp_path)
    for image in (root / "train" / "cat").iterdir():
        image.unlink()
    return root


def two_class_folder(tmp_path: Path) -> Path:
    root = tmp_path / "two"
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            shutil.copytree(CIFAR / split / c, root / split / c)
    return root


def not_an_image(path: Path) -> Path:
    path.write_bytes(b"not a png")
    return path


def resnet32_weights(tmp: Path) -> Path:
    torch.save(create_model("cifar_resnet32").state_dict(), tmp / "r32.pth")
    return tmp / "r32.pth"


# (sub-command arguments given tmp_path and the trained run, expected text in the one error line)
BAD_INPUTS: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "missing data path": (
        lambda tmp, run: ["train", "--data-root", str(tmp / "nowhere"), *TINY],
        "fashion-mnist not found in {tmp}/nowhere",
    ),
    "empty class folder": (
        lambda tmp, run: ["train", "--data", f"folder:{emptied_class(tmp)}", *TINY],
        "class folder {tmp}/cifar10/train/cat holds no images",
    ),
    "unknown model": (lambda tmp, run: ["train", "--model", "resnet19", *TINY], "unknown model 'resnet19'"),
    "zero epochs": (lambda tmp, run: ["train", "--epochs", "0"], "epochs must be >= 1, got 0"),
    "negative lr": (lambda tmp, run: ["train", "--lr", "-1"], "lr must be > 0"),
    "missing weights": (
        lambda tmp, run: ["train", "--data-root", str(FASHION), "--weights", str(tmp / "w.pth"), *TINY],
        "weights file not found: {tmp}/w.pth",
    ),
    "resume a non-run folder": (lambda tmp, run: ["train", "--resume", str(tmp)], "config.json not found"),
    "class-count mismatch": (
        lambda tmp, run: ["evaluate", str(run), "--data", f"folder:{two_class_folder(tmp)}"],
        "predicts 10 classes but folder:{tmp}/two has 2",
    ),
    "evaluate missing weights": (lambda tmp, run: ["evaluate", str(tmp / "nope")], "{tmp}/nope"),
    "predict missing image": (lambda tmp, run: ["predict", str(run), str(tmp / "x.png")], "image not found"),
    "predict a non-image": (
        lambda tmp, run: ["predict", str(run), str(not_an_image(tmp / "x.png"))],
        "cannot decode {tmp}/x.png",
    ),
    "garbage safetensors": (
        lambda tmp, run: ["evaluate", str(not_an_image(tmp / "w.safetensors"))],
        "{tmp}/w.safetensors is not a readable .safetensors file",
    ),
    "weights of another architecture": (
        lambda tmp, run: [
            "train",
            "--data-root",
            str(FASHION),
            "--weights",
            str(resnet32_weights(tmp)),
            *TINY,
        ],
        "{tmp}/r32.pth does not fit this model: Error(s) in loading state_dict for ResNet: Unexpected key(s)",
    ),
    "lr-find bad range": (
        lambda tmp, run: ["lr-find", "--start", "1", "--end", "0.1", "--data-root", str(FASHION)],
        "need 0 < start < end",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_named_in_one_line(
    case: str, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process `main` (the same code the subprocess test above runs): exit 2, one line, no traceback."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    make_args, expected = BAD_INPUTS[case]
    argv = make_args(tmp_path, run_dir)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"resnets {argv[0]}: error: ") and "Traceback" not in err
    assert expected.format(tmp=tmp_path) in lines[0]
    assert len(lines[0]) <= 450 + len(str(tmp_path)), "an error line should be readable, not a dump"


def test_corrupt_and_grayscale_images(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncated PNG is skipped with a warning and counted in the report (an error with --strict-data);
    grayscale PNGs among RGB ones are converted for the RGB model."""
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    root = copy_cifar(tmp_path)
    broken = sorted((root / "train" / "dog").iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:100])
    for image in sorted((root / "train" / "cat").iterdir())[:3]:
        Image.fromarray(read_image(image, 3)[0].numpy()).save(image)  # one channel
    assert Image.open(image).mode == "L"
    args = ["train", "--data", "cifar10", "--data-root", str(root), "--image-size", "8", "--quiet", *TINY]
    with pytest.warns(UserWarning, match=r"skipped 1 corrupt or truncated image\(s\).*dog"):
        assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out == ""  # --quiet
    assert "1 corrupt images skipped" in (tmp_path / "run" / "report.md").read_text()
    assert read_meta(tmp_path / "run" / "last.safetensors")["in_channels"] == 3

    assert main([*args, "--strict-data", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnets train: error: corrupt or truncated image: ") and str(broken) in err
    assert "\n" not in err


def test_evaluate_normalises_like_training(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A CIFAR-trained model evaluated on the same images as a plain folder keeps its CIFAR statistics
    (a folder alone would get ImageNet's)."""
    import resnets.data

    seen = []
    make_loader = resnets.data.make_loader

    def spy(bundle, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(bundle)
        return make_loader(bundle, *args, **kwargs)

    monkeypatch.setattr(resnets.data, "make_loader", spy)
    assert main(["evaluate", str(run_dir), "--data", f"folder:{CIFAR}"]) == 0
    meta = read_meta(run_dir / "last.safetensors")
    assert [tuple(seen[0].mean), tuple(seen[0].std)] == [tuple(meta["mean"]), tuple(meta["std"])]
    assert seen[0].mean[0] == pytest.approx(0.4914)
    assert "top-1" in capsys.readouterr().out


def test_every_command_has_help_and_every_train_option_explains_itself(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 (argparse keeps them there only)
    assert len(commands) == len(COMMANDS)
    for name in commands:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0, name
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    silent = [
        f"{name} {a.option_strings[0]}"
        for name, command in commands.items()
        for a in command._actions  # noqa: SLF001
        if a.option_strings and not a.help
    ]
    assert silent == [] and "--limit INT" in text and "balanced over classes" in text
    # lr-find offers the training flags that change its test, not those of a whole run
    lr_find = {o for a in commands["lr-find"]._actions for o in a.option_strings}  # noqa: SLF001
    assert {"--batch-size", "--weight-decay", "--freeze", "--mixup", "--precision"} <= lr_find
    assert not lr_find & {"--epochs", "--lr", "--schedule", "--early-stop", "--monitor", "--tta", "--ema"}
