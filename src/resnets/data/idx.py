"""Minimal reader for the IDX format used by (Fashion-)MNIST, so no extra dependency is needed.

The header declares the array's shape; that size is checked (against `MAX_BYTES` and against what the file
can hold) before anything is allocated or decompressed, and a gzip stream is read only up to it, so a small
.gz that inflates to gigabytes costs nothing."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from resnets.data.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_BYTES = 4 << 30  # the largest IDX array read (4 GiB; EMNIST's largest is 0.55 GB): raise it to read more
_DEFLATE_RATIO = 1032  # deflate never inflates one byte to more than ~1032: a bound from the .gz file's size
_FIX = "delete it and let it be fetched again"
_CHUNK = 16 << 20  # bytes read (inflated) at a time, so a .gz never holds a second copy of the array


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a numpy array of its declared shape and type.

    Refused, naming the file: a bad header, a declared size over `MAX_BYTES` or more than the file could
    hold, and data shorter or longer than declared (read at most one byte past it)."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            stored = os.fstat(file.fileno()).st_size
            if path.suffix != ".gz":
                return _read(path, file, lambda header: stored - header)
            with gzip.GzipFile(fileobj=file) as stream:
                return _read(path, stream, lambda header: stored * _DEFLATE_RATIO)
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {e}; {_FIX}") from e


def _read(path: Path, stream: BinaryIO, room: Callable[[int], int]) -> np.ndarray:
    """The array in `stream`: header, size checks, then exactly the declared bytes. `room(header_bytes)` is
    the most data bytes the file can hold."""
    dtype, dims = _header(path, stream)
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    header = 4 + 4 * len(dims)
    if expected > MAX_BYTES:
        raise DataError(f"IDX file {path} declares {dims} = {expected:,} bytes, over the limit of "
                        f"{MAX_BYTES:,} (resnets.data.idx.MAX_BYTES): {_FIX}, or raise the limit")  # fmt: skip
    if expected > room(header):
        raise DataError(f"IDX file {path} is truncated: it declares {dims} = {expected:,} data bytes but is "
                        f"too small to hold them; {_FIX}")  # fmt: skip
    data = bytearray(expected)
    got = _fill(stream, memoryview(data))
    if got < expected or stream.read(1):
        what = f"truncated: {got:,}" if got < expected else "padded: more than"
        raise DataError(f"IDX file {path} is {what} data bytes, expected {expected:,}; {_FIX}")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _header(path: Path, stream: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    """The element type and shape an IDX header declares, or a DataError naming the file."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); {_FIX}")
    raw = stream.read(4 * magic[3])
    if len(raw) < 4 * magic[3]:
        raise DataError(f"IDX file {path} is truncated inside its header; {_FIX}")
    dims = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))
    return np.dtype(_DTYPES[magic[2]]), dims


def _fill(stream: BinaryIO, view: memoryview) -> int:
    """Read into `view` until it is full or the stream ends; the number of bytes read."""
    got = 0
    while got < len(view):
        n = stream.readinto(view[got : got + _CHUNK])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got
