"""Who may write a run folder: one process at a time, and never over a finished run unless asked.

Design rule: a run folder is owned by the process that trains into it (rank 0 of a distributed job). It
takes an exclusive `flock` on the folder itself, which the kernel releases when the process ends however it
ends (SIGKILL included), so there is no lock file to go stale. A new run writes a manifest (MANIFEST) listing
the files it owns; only a folder with a manifest and a checkpoint "holds a run", and `--overwrite` (or a re-run
of one that died before its first checkpoint) removes only what the manifest lists. A file a run would write
that no manifest lists is the user's: the run refuses the folder rather than write over it. A second run into
the same folder fails at once, and leftovers of killed writes (our own temporary folders only) are removed
while the lock is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from ..files import atomic_write_text, remove_stale_temps

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are still protected from overwriting
    fcntl = None

# the files a run writes (and `--overwrite` removes); anything else in the folder is the user's
RUN_FILES = ("config.json", "runtime.json", "results.json", "metrics.csv", "last.safetensors", "best.safetensors", "state.pt", "report.md",
             "curves.png", "confusion.png", "roc_pr.png", "top_losses.png")  # fmt: skip
RUN_DIRS = ("tensorboard",)
# written when a run claims its folder: the files it owns. It is what makes a folder "a run" (a user's own
# config.json or report.md does not) and all that --overwrite or a re-run may remove.
MANIFEST = ".resnets-run.json"
CHECKPOINTS = ("state.pt", "last.safetensors")  # a run with none of these died before its first epoch ended

_held: dict[Path, tuple[int, bool]] = {}  # folder -> (descriptor holding its lock, created by this claim)


def owned_files(run_dir: Path) -> list[Path] | None:
    """The paths the run in `run_dir` owns (its manifest's list), or None where no run claimed the folder."""
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text())
        names = [n for n in manifest["files"] + manifest["dirs"] if isinstance(n, str) and "/" not in n]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [run_dir / n for n in names if n not in ("", ".", "..")] + [run_dir / MANIFEST]


def holds_run(run_dir: Path) -> bool:
    """Whether a run claimed `run_dir` and got as far as a checkpoint (one that died before has no results
    worth keeping: a new run may take its place without --overwrite)."""
    return owned_files(run_dir) is not None and any((run_dir / c).exists() for c in CHECKPOINTS)


def owner_of(path: str | Path) -> Path | None:
    """The run folder whose manifest lists `path` (a file a command other than training must not write)."""
    path = Path(os.path.abspath(path))
    for folder in list(path.parents)[:2]:  # the file's own folder, or the run's above tensorboard/
        owned = owned_files(folder)
        if owned and any(path == p or p in path.parents for p in owned):
            return folder
    return None


def claim(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Create and lock `run_dir` for this process, or raise a ValueError that says what to do instead."""
    if resume and not run_dir.is_dir():
        raise FileNotFoundError(f"cannot resume: {run_dir} does not exist")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    lock(run_dir, created)
    try:
        if resume:
            check_resumable(run_dir)
        else:
            take_over(run_dir, overwrite)
    except BaseException:
        release(run_dir)
        raise
    remove_stale_temps(run_dir, older_than=0)


def lock(run_dir: Path, created: bool) -> None:
    """An exclusive flock on the folder itself, held until `release` or the process's end."""
    key = Path(os.path.abspath(run_dir))
    if key in _held:
        return
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


def check_resumable(run_dir: Path) -> None:
    """A run to resume has a checkpoint; a run of a version before manifests gets one now (resuming it says
    it is a run)."""
    if owned_files(run_dir) is None:
        write_manifest(run_dir)
    elif not any((run_dir / c).exists() for c in CHECKPOINTS):
        raise ValueError(f"cannot resume {run_dir}: its run stopped before its first checkpoint; start it again "
                         "with the same command, without --resume")  # fmt: skip


def take_over(run_dir: Path, overwrite: bool) -> None:
    """Make `run_dir` this new run's: refuse a finished run unless `overwrite` and any file a run would
    write that no run owns (the user's); remove only what the old run's manifest lists; write ours."""
    if holds_run(run_dir) and not overwrite:
        raise ValueError(
            f"{run_dir} already holds a run: continue it with --resume {run_dir}, replace it with "
            "--overwrite, or choose another --out"
        )
    owned = owned_files(run_dir) or []
    for path in owned:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    foreign = [n for n in RUN_FILES + RUN_DIRS if (run_dir / n).exists() or (run_dir / n).is_symlink()]
    if foreign:
        raise ValueError(
            f"{run_dir} holds {', '.join(foreign)}, which no resnets run there wrote (no {MANIFEST}): "
            "a run would write over them; choose another --out or move them away"
        )
    write_manifest(run_dir)


def write_manifest(run_dir: Path) -> None:
    atomic_write_text(run_dir / MANIFEST, json.dumps({"files": RUN_FILES, "dirs": RUN_DIRS}) + "\n")


def release(run_dir: Path) -> None:
    """Give up the lock on `run_dir` (nothing to do if this process does not hold it); a folder the claim
    created is removed again if the run failed before writing anything into it."""
    fd, created = _held.pop(Path(os.path.abspath(run_dir)), (None, False))
    if fd is None:
        return
    if created and [p.name for p in run_dir.iterdir()] == [MANIFEST]:
        with contextlib.suppress(OSError):
            (run_dir / MANIFEST).unlink()
            run_dir.rmdir()
    os.close(fd)  # closing the descriptor releases the flock
