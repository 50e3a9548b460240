"""Who may write a run folder: one process at a time, and never over a finished run unless asked.

Design rule: a run folder is owned by the process that trains into it (rank 0 of a distributed job). It
takes an exclusive `flock` on the folder itself, which the kernel releases when the process ends however it
ends (SIGKILL included), so there is no lock file to go stale. A second run into the same folder fails at
once, a new run into a folder that holds a run fails unless `--overwrite` (which first removes the old
run's files) or `--resume`, and leftovers of killed writes are removed while the lock is held.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..files import remove_stale_temps

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are still protected from overwriting
    fcntl = None

# the files a run writes (and `--overwrite` removes); anything else in the folder is the user's
RUN_FILES = ("config.json", "runtime.json", "results.json", "metrics.csv", "last.safetensors", "best.safetensors", "state.pt", "report.md",
             "curves.png", "confusion.png", "roc_pr.png", "top_losses.png")  # fmt: skip
RUN_DIRS = ("tensorboard",)

_held: dict[Path, tuple[int, bool]] = {}  # folder -> (descriptor holding its lock, created by this claim)


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` has any file a run writes."""
    return any((run_dir / name).exists() for name in RUN_FILES + RUN_DIRS)


def claim(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Create and lock `run_dir` for this process, or raise a ValueError that says what to do instead."""
    if resume and not run_dir.is_dir():
        raise FileNotFoundError(f"cannot resume: {run_dir} does not exist")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    key = Path(os.path.abspath(run_dir))
    if key not in _held:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(
                f"{run_dir} is in use by another training process; wait for it or choose another --out"
            ) from None
        _held[key] = (fd, created)
    if not resume and holds_run(run_dir):
        if not overwrite:
            release(run_dir)
            raise ValueError(
                f"{run_dir} already holds a run: continue it with --resume {run_dir}, replace it with "
                "--overwrite, or choose another --out"
            )
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (run_dir / name).unlink()
        for name in RUN_DIRS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
    remove_stale_temps(run_dir, older_than=0)


def release(run_dir: Path) -> None:
    """Give up the lock on `run_dir` (nothing to do if this process does not hold it); a folder the claim
    created is removed again if the run failed before writing anything into it."""
    fd, created = _held.pop(Path(os.path.abspath(run_dir)), (None, False))
    if fd is None:
        return
    if created:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only succeeds when empty
    os.close(fd)  # closing the descriptor releases the flock
