"""The README runs: its Python API is importable as shown, and its examples work as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import resnets
from resnets.cli import build_parser, main

README = Path(__file__).parents[1] / "README.md"
MAKEFILE = Path(__file__).parents[1] / "Makefile"
FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_resnets_train_stays_the_function_after_importing_the_subpackage() -> None:
    """`resnets.train` is the training function even after `import resnets.train.<module>` loads the
    subpackage's other modules for the first time (in a fresh interpreter)."""
    code = """
import pkgutil, sys
import resnets
package = sys.modules["resnets.train"]
fresh = [m.name for m in pkgutil.iter_modules(package.__path__, "resnets.train.") if m.name not in sys.modules]
for name in fresh:
    exec(f"import {name}")
from resnets.train import fit, loop
from resnets.train.config import TrainConfig
assert callable(resnets.train) and resnets.train.__module__ == "resnets.train", (fresh, resnets.train)
assert resnets.TrainConfig is TrainConfig and resnets.fit is fit and loop.__name__ == "resnets.train.loop"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(resnets.train) and resnets.History.__name__ == "History"


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


def test_readme_has_examples() -> None:
    assert len(blocks("python")) >= 2 and len(commands()) >= 15


@pytest.mark.parametrize("argv", commands(), ids=shlex.join)
def test_bash_example_parses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every command parses (make: the target exists); the cheap ones (list, summary) run for real."""
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
    if args[0] in ("list", "summary"):
        assert main(args) == 0
        out = capsys.readouterr().out
        expected = resnets.list_models() if args[0] == "list" else ["layer4.2", "GMACs"]
        assert all(word in out for word in expected), out[-500:]


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
        exec(compile(code, str(README), "exec"), namespace)
    history = namespace["history"]
    assert runs == [history] and history.run_dir == tmp_path / "run" and len(history.epochs) == 1
    assert (history.run_dir / "last.safetensors").is_file()
