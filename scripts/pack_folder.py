"""Pack a folder data set (e.g. Imagenette's train/ and val/ class folders) into uncompressed tar chunks of at
most --chunk-mib each, every file kept byte for byte, so that a data set larger than one device call carries
(~64 MiB with the source tree) travels over several calls; scripts/gpu_study.py stashes the chunks and
unpacks them on the GPU machine. (CIFAR-10's PNGs pack far smaller with scripts/pack_cifar.py.)

    python scripts/pack_folder.py ../data/imagenette gpu_data/imagenette --chunk-mib 50   # three chunks
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

MIB = 2**20
BLOCK, RECORD = 512, 10240  # tar writes 512-byte blocks and pads the archive to a whole 10 KiB record


def tar_size(f: Path) -> int:
    """What `f` adds to a ustar archive: one header block and its data padded to whole blocks."""
    return BLOCK + -(-f.stat().st_size // BLOCK) * BLOCK


def groups(files: list[Path], limit: float) -> list[list[Path]]:
    """Consecutive runs of `files` whose tar stays under `limit` bytes (its end blocks and padding included)."""
    runs: list[list[Path]] = [[]]
    size, limit = 0, limit - 2 * RECORD
    for f in files:
        n = tar_size(f)
        if n > limit:
            raise ValueError(f"{f} alone ({n / MIB:.1f} MiB) is larger than a chunk: raise --chunk-mib")
        if size + n > limit:
            runs.append([])
            size = 0
        runs[-1].append(f)
        size += n
    return [r for r in runs if r]


def pack(src: Path, dest: Path, chunk_mib: float) -> list[Path]:
    """`dest`/NAME-K.tar, each holding NAME/<path> of some of `src`'s files (NAME: src's folder name)."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no files under {src}")
    dest.mkdir(parents=True, exist_ok=True)
    chunks = []
    for k, run in enumerate(groups(files, chunk_mib * MIB)):
        path = dest / f"{src.name}-{k}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:  # no pax headers: sizes known
            for f in run:
                tar.add(f, arcname=f"{src.name}/{f.relative_to(src).as_posix()}")
        chunks.append(path)
    return chunks


def unpack(chunks: list[Path], dest: Path) -> Path:
    """Extract every chunk into `dest` (refusing links and paths that leave it); returns dest/NAME."""
    names = set()
    for chunk in chunks:
        with tarfile.open(chunk) as tar:
            names |= {m.name.split("/", 1)[0] for m in tar.getmembers()}
            # the "data" filter (Python 3.11.4+) refuses links and paths outside dest; older Pythons, as a
            # lent GPU's may be, extract our own chunks as they are
            tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    if len(names) != 1:
        raise ValueError(f"the chunks hold {len(names)} data sets ({', '.join(sorted(names))}), not one")
    return dest / names.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="the data set's folder (its name names the chunks)")
    parser.add_argument("dest", type=Path, help="where the chunks go (e.g. gpu_data/imagenette)")
    parser.add_argument("--chunk-mib", type=float, default=55.0, help="largest chunk (default 55 MiB)")
    args = parser.parse_args()
    paths = pack(args.src, args.dest, args.chunk_mib)
    total = sum(p.stat().st_size for p in paths) / MIB
    print(f"{len(paths)} chunk(s), {total:.1f} MiB in all, in {args.dest}")


if __name__ == "__main__":
    main()
