"""The README runs: its Python API is importable as shown, and its examples work as written."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torchvision

import resnets
from resnets.cli import build_parser, main

README = Path(__file__).parents[1] / "README.md"
MAKEFILE = Path(__file__).parents[1] / "Makefile"
FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"
CIFAR = Path(__file__).parent / "fixtures" / "cifar10"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_resnets_train_is_the_package_and_trains_when_called() -> None:
    """`resnets.train(...)` trains (the README's API) and `resnets.train` is the subpackage, so importing
    its modules by any spelling works (a function of that name hid them: `import resnets.train.lr_find as
    lf` failed with "cannot import name 'lr_find' from 'train'"), also in a fresh interpreter."""
    code = """
import inspect, pkgutil, sys
import resnets
import resnets.train.lr_find as lf
package = sys.modules["resnets.train"]
for m in pkgutil.iter_modules(package.__path__, "resnets.train."):
    exec(f"import {m.name}")
assert resnets.train is package and callable(resnets.train) and lf.__name__ == "resnets.train.lr_find"
assert resnets.train.loop.__name__ == "resnets.train.loop" and resnets.train.lr_find is lf
assert list(inspect.signature(resnets.train).parameters) == ["preset", "resume", "overwrite", "options"]
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(ValueError, match="a resumed run keeps its recipe"):
        resnets.train(resume="anywhere", preset="fast")  # the call reaches train()


def blocks(language: str) -> list[str]:
    return [code for kind, code in BLOCK.findall(README.read_text()) if kind == language]


def commands() -> list[list[str]]:
    """Every command of the README's bash blocks as argv: continued lines joined, comments and leading
    environment assignments dropped."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                argv.pop(0)
            if argv:
                found.append(argv)
    return found


def resnets_args(argv: list[str]) -> list[str] | None:
    """The `resnets` arguments of a command (direct, or `-m resnets` under torchrun); None for make."""
    if argv[0] == "make":
        return None
    if argv[0].endswith("/resnets"):
        return argv[1:]
    if argv[0].endswith("/torchrun") and "-m" in argv and argv[argv.index("-m") + 1] == "resnets":
        return argv[argv.index("-m") + 2 :]
    raise AssertionError(f"README command the test does not know: {shlex.join(argv)}")


# README commands that run here for real: offline, a second or two each
RUN = {"list", "summary", "weights"}
# the others are parsed and their command's --help is run, but they are not run, because:
PARSED_ONLY = {
    "train": "trains for minutes, on data it downloads (or resumes runs/<run>, a placeholder)",
    "evaluate": "needs a trained run (runs/<run>) and its data",
    "predict": "needs a trained run, or downloads ImageNet weights, and images the README only names",
    "export": "needs a trained run (runs/<run>)",
    "lr-find": "needs an image folder (./pets) and trains",
    "study": "trains on CIFAR-10 (PATH/cifar10, a placeholder)",
    "experiment": "trains for minutes and downloads Fashion-MNIST",
    "benchmark": "times models for minutes",
}  # `make` targets are only checked to exist: they create a venv, download and train


def test_readme_shows_every_command_and_says_how_each_is_tested() -> None:
    """Each CLI command has a README example (a new one without fails here), and each is either run for real
    or listed with the reason it is only parsed."""
    sub_commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    shown = {args[0] for args in map(resnets_args, commands()) if args is not None}
    assert shown == set(sub_commands.choices)
    assert RUN | PARSED_ONLY.keys() == shown and not RUN & PARSED_ONLY.keys()


def expected_output(args: list[str]) -> list[str]:
    """Patterns the output of a README command in RUN must hold, from torchvision's records: `list` names
    each of our models and each of torchvision's ResNets with a depth; `summary resnet50` (at 224 px, where
    torchvision counts its MACs) and `weights resnet50` show torchvision's parameter count, GMACs and layer
    names, and each weight's ImageNet top-1."""
    if args[0] == "list":
        theirs = [name for name in torchvision.models.list_models(torchvision.models) if "resn" in name]
        return [rf"^{name}\s+\d+\s" for name in sorted({*resnets.list_models(), *theirs})]
    weights = torchvision.models.get_model_weights(args[1])
    if args[0] == "summary":
        assert args[2:] == ["--input-size", "3", "224", "224"], args
        meta = weights.DEFAULT.meta
        return [
            r"^layer4\.2\s",
            re.escape(f"{meta['num_params']:,} parameters"),
            re.escape(f"{meta['_ops']:.3f} GMACs"),
        ]
    rows = []
    for w in weights:
        label = w.name + (" (DEFAULT)" if w is weights.DEFAULT else "")
        top1 = re.escape(f"{w.meta['_metrics']['ImageNet-1K']['acc@1']:.2f}%")
        rows.append(rf"^{args[1]}\s+{re.escape(label)}\s+{top1}")
    return rows


@pytest.mark.parametrize("argv", commands(), ids=shlex.join)
def test_bash_example(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command parses (make: the target exists). Those in RUN run for real and print what torchvision
    records; for the others, their command's --help documents every option the example uses."""
    args = resnets_args(argv)
    if args is None:
        assert all(re.search(rf"^{re.escape(t)}:", MAKEFILE.read_text(), re.MULTILINE) for t in argv[1:]), (
            argv
        )
        return
    try:
        build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"README command does not parse: {shlex.join(argv)}\n{capsys.readouterr().err}")
    if args[0] in RUN:
        assert main(args) == 0
        out = capsys.readouterr().out
        assert [p for p in expected_output(args) if not re.search(p, out, re.MULTILINE)] == [], out[-1000:]
        return
    with pytest.raises(SystemExit) as done:
        main([args[0], "--help"])
    help_text = capsys.readouterr().out
    options = [a.split("=")[0] for a in args if a.startswith("--")]
    assert done.value.code == 0 and [o for o in options if o not in help_text] == [], help_text


QUICK_START = (
    "runs/photos"  # the README's "Your own images": folder -> train -> evaluate -> predict -> Python
)


def test_your_own_images_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "Your own images" commands and Python block as written, on a tiny photos/ folder (two classes of
    CIFAR-10 images, one saved as new.jpg), with a seconds-long budget appended to `train`."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    for c in ("cat", "dog"):
        shutil.copytree(CIFAR / "train" / c, tmp_path / "photos" / c)
    Image.open(next((CIFAR / "test" / "dog").iterdir())).save(tmp_path / "new.jpg")
    budget = [
        "--model",
        "cifar_resnet20",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--workers",
        "0",
    ]
    argvs = [resnets_args(a) for a in commands() if any(QUICK_START in word for word in a)]
    assert [a[0] for a in argvs] == ["train", "evaluate", "predict"]
    for args in argvs:
        assert main(args + budget if args[0] == "train" else args) == 0, args
    (code,) = [code for code in blocks("python") if QUICK_START in code]
    exec(compile(code, str(README), "exec"), {})
    assert (tmp_path / "runs" / "photos" / "best.safetensors").is_file()  # validation selected the model


def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python blocks, run in order in one namespace: the weights file the tour loads is written
    first, and `resnets.train` gets a seconds-long budget (1 epoch, 256 images) and a folder in tmp_path."""
    monkeypatch.chdir(tmp_path)
    torch.save(timm.create_model("resnet50d").state_dict(), tmp_path / "timm_resnet50d.pth")
    real_train, runs = resnets.train, []

    def budgeted(*args: Any, **options: Any) -> resnets.History:
        budget = {"epochs": 1, "limit": 256, "test_limit": 128, "data_root": str(FASHION), "workers": 0}
        runs.append(real_train(*args, **options | budget | {"out": str(tmp_path / "run"), "quiet": True}))
        return runs[-1]

    monkeypatch.setattr(resnets, "train", budgeted)
    namespace: dict[str, Any] = {}
    for code in blocks("python"):
        if QUICK_START not in code:  # (run by test_your_own_images_quick_start_runs, after its commands)
            exec(compile(code, str(README), "exec"), namespace)
    history = namespace["history"]
    assert runs == [history] and history.run_dir == tmp_path / "run" and len(history.epochs) == 1
    assert (history.run_dir / "last.safetensors").is_file()
