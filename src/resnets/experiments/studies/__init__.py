"""Full-scale studies of the seeds' claims: resumable units (one net, one seed) recorded as they finish, and
reports regenerated from whatever units exist (see `runner`)."""

from __future__ import annotations

from pathlib import Path

from .figure6 import FIGURE6, FIGURE7, RESNET110, SCHEDULE
from .recipes import D2L, FASTBOOK, SHORTCUTS, XRAY
from .runner import Study, Where, park, run_study

# the paper's claims first (Figure 6 leads), then the other seeds'; the index lists them in this order
STUDIES: dict[str, Study] = {
    s.name: s for s in (FIGURE6, FIGURE7, SCHEDULE, RESNET110, SHORTCUTS, D2L, FASTBOOK, XRAY)
}


def where(name: str, out: str | None, work: str | None, data_root: str | None, device: str = "auto",
          loader_workers: int = 0) -> Where:  # fmt: skip
    """A study's folders: `out` (default runs/studies/NAME) holds report.md and units/, `work` (default
    OUT/runs) the units' run folders; a study that reads another's units finds them beside its own folder."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    folder = Path(out) if out else Path("runs") / "studies" / name
    reads = STUDIES[name].reads
    units = folder.parent / reads / "units" if reads else None
    run_dirs = Path(work) if work else folder / "runs"
    return Where(folder, run_dirs, data_root, device, units, loader_workers, tuple(STUDIES))


__all__ = ["STUDIES", "Study", "Where", "park", "run_study", "where"]
