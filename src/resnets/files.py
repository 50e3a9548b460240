"""The one way this project writes a file: atomically, durably, with the user's permissions.

Design rule (stated once, followed everywhere): every file is written in a private temporary folder beside
it (named `.resnets-tmp-*`, a prefix nothing else uses), flushed to disk (`fsync`), then renamed over the
target, and the folder is synced. A reader therefore sees the old file or the new one, never half of one; a
crash or a full disk loses at most the file being written; the temporary folder is removed when the write
fails, and one left by a killed process is removed later (`remove_stale_temps`), with whatever temporaries
the writing library put in it. A user's own hidden or `.tmp` files are never touched. This module imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

STALE_SECONDS = 3600.0  # a temporary this old belongs to a process that died (a live write takes seconds)


def cache_dir() -> Path:
    """The folder for downloads, decoded data and compiled or exported models: $RESNETS_CACHE, else
    ~/.cache/resnets."""
    return Path(os.environ.get("RESNETS_CACHE") or Path.home() / ".cache" / "resnets").expanduser()


TEMP_PREFIX = (
    ".resnets-tmp-"  # the only names this project sweeps: a user's own ".x.tmp" files are never touched
)


def _temp_dir(folder: Path) -> Path:
    """A private folder beside the target (same file system, so the final rename is atomic) that holds the
    temporary and whatever temporaries the library writing it makes (safetensors, torch.export): everything
    a killed write leaves is inside one folder with our prefix."""
    return Path(tempfile.mkdtemp(dir=folder, prefix=TEMP_PREFIX))


def _fsync(path: str | Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _user_mode() -> int:
    """0o666 less the process umask: what `open(path, "w")` would have given the file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to fill a temporary beside `path`, then sync and rename it onto `path`.

    Any exception (an OSError for a full disk included) propagates after the temporary is removed, and
    `path` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    private = _temp_dir(path.parent)
    tmp = private / path.name  # the real name and suffix: writers that infer the format from it still do
    try:
        write(tmp)
        os.chmod(tmp, _user_mode())
        _fsync(tmp)
        os.replace(tmp, path)
    except Exception as e:
        if (full := _disk_full(e, path)) is None:
            raise
        raise full from e
    finally:
        shutil.rmtree(private, ignore_errors=True)
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory; the rename stands
        _fsync(path.parent, directory=True)
    return path


def _disk_full(error: Exception, path: Path) -> OSError | None:
    """A failed write on a full disk, said as such whatever layer raised it (torch.save says "unexpected
    pos", safetensors and matplotlib their own words); None for any other error."""
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    with contextlib.suppress(OSError):
        full = full or shutil.disk_usage(path.parent).free < 1 << 20
    if not full:
        return None
    return OSError(errno.ENOSPC, f"No space left on device while writing {path} (the previous file, if any, is "
                   "intact): free some space and run the command again (a training run: --resume)")  # fmt: skip


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`text` as UTF-8; names that were not UTF-8 on disk (surrogate-escaped by Python) keep their own bytes."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", errors="surrogateescape"))


def printable(name: str) -> str:
    """`name` as text any font can draw: bytes of a file name that were not UTF-8 (kept surrogate-escaped in
    memory and in files) shown as U+FFFD, for plots only."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def remove_stale_temps(folder: Path, older_than: float = STALE_SECONDS) -> int:
    """Delete the private temporary folders `atomic_write` left in `folder` when their process was killed, if
    older than `older_than` seconds (0: all, for a folder this process owns). Nothing without our prefix is
    touched."""
    removed, now = 0, time.time()
    for tmp in folder.glob(f"{TEMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink() and now - tmp.stat().st_mtime >= older_than:
                shutil.rmtree(tmp)
                removed += 1
    return removed
