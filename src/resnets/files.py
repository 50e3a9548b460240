"""The one way this project writes a file: atomically, durably, with the user's permissions.

Design rule (stated once, followed everywhere): every file is written to a temporary name in its own folder,
flushed to disk (`fsync`), then renamed over the target, and the folder is synced. A reader therefore sees
the old file or the new one, never half of one; a crash or a full disk loses at most the file being written;
the temporary is removed when the write fails, and one left by a killed process is removed later
(`remove_stale_temps`). This module imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

STALE_SECONDS = 3600.0  # a temporary this old belongs to a process that died (a live write takes seconds)


def cache_dir() -> Path:
    """The folder for downloads, decoded data and compiled or exported models: $RESNETS_CACHE, else
    ~/.cache/resnets."""
    return Path(os.environ.get("RESNETS_CACHE") or Path.home() / ".cache" / "resnets").expanduser()


def _temp_name(path: Path) -> tuple[str, str]:
    """(prefix, suffix) of `path`'s temporaries: hidden, and ending in the real suffix so that writers which
    infer the format from it (matplotlib, numpy, torch.export) still do."""
    return f".{path.name}.", f".tmp{path.suffix}"


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
    remove_stale_temps(path.parent, path.name)
    prefix, suffix = _temp_name(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, _user_mode())
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory; the rename stands
        _fsync(path.parent, directory=True)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def remove_stale_temps(folder: Path, name: str | None = None, older_than: float = STALE_SECONDS) -> int:
    """Delete temporaries that `atomic_write` left in `folder` (only those of `name`, if given) when their
    process was killed, if older than `older_than` seconds (0: all, for a folder this process owns)."""
    removed, now = 0, time.time()
    pattern = f".{name}.*.tmp*" if name else ".*.tmp*"
    for tmp in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if tmp.is_file() and now - tmp.stat().st_mtime >= older_than:
                tmp.unlink()
                removed += 1
    return removed
