"""Where a result came from: the source commit (and whether the tree had uncommitted changes), the command,
the machine and the library versions. Experiment reports and benchmark results both record it."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from .machine import describe

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("resnets", "torch", "torchvision", "numpy", "onnxruntime")


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=20, check=True
    ).stdout.strip()


def git_state() -> tuple[str, bool | None]:
    """(HEAD's sha, whether tracked files differ from it) of the repository this package's source is part of;
    ("unknown", None) without git, outside a checkout (an installed wheel or sdist) or on any git error."""
    try:
        _git("ls-files", "--error-unmatch", "__init__.py")  # the package source is tracked by this repository
        return _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def versions() -> dict[str, str]:
    """Python's and the installed libraries' versions (torch's as torch reports it, with its CUDA tag)."""
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in LIBRARIES:
        try:
            found.setdefault(name, metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return found


def invocation() -> str:
    """This process's command line as a shell command, `resnets ...` for the command-line tool."""
    argv = list(sys.argv) or ["python"]
    if Path(argv[0]).name in ("resnets", "__main__.py"):
        argv[0] = "resnets"
    return shlex.join(argv)


def provenance(command: str, device: torch.device) -> dict[str, object]:
    """Commit, dirty flag, command, machine and versions of a result computed now on `device`."""
    commit, dirty = git_state()
    return {
        "commit": commit,
        "dirty": dirty,
        "command": command,
        "machine": describe(device),
        "versions": versions(),
    }
