"""The run folder: one owner for a run directory's layout, its lock, and every file a run reads or writes.

Design rules:
- One process owns a folder while it trains into it (rank 0 of a distributed job): an exclusive `flock` on
  the folder itself, which the kernel releases however the process ends (SIGKILL included), so no lock file
  goes stale. A second run into the same folder fails at once.
- A new run writes a manifest (MANIFEST) listing the files it owns. Only a folder with a manifest and a
  checkpoint "holds a run"; `--overwrite`, or a re-run of a run that died before its first checkpoint,
  removes only what the manifest lists. A file a run would write that no manifest lists is the user's: the
  run refuses the folder rather than write over it. Other commands (predict's --output) ask `owner_of`
  before writing anywhere.
- Every read happens on rank 0 and every rank gets its result (`distributed.on_main`); every write happens
  on rank 0 only, atomically (`resnets.files`), so a kill never leaves half a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..files import atomic_write_text, remove_stale_temps
from ..models.metadata import WeightsMeta, read_meta
from . import distributed
from .checkpoint import STATE_FILE, load_state, save_state, save_weights
from .config import TrainConfig

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folders are still protected from overwriting
    fcntl = None

CONFIG, RUNTIME, RESULTS, METRICS = "config.json", "runtime.json", "results.json", "metrics.csv"
LAST, BEST, REPORT = "last.safetensors", "best.safetensors", "report.md"
CURVES, CONFUSION, ROC_PR, TOP_LOSSES = "curves.png", "confusion.png", "roc_pr.png", "top_losses.png"
RUN_FILES = (
    CONFIG,
    RUNTIME,
    RESULTS,
    METRICS,
    LAST,
    BEST,
    STATE_FILE,
    REPORT,
    CURVES,
    CONFUSION,
    ROC_PR,
    TOP_LOSSES,
)
RUN_DIRS = ("tensorboard",)
MANIFEST = ".resnets-run.json"
CHECKPOINTS = (STATE_FILE, LAST)  # a run with none of these died before its first epoch ended
# per epoch: validation numbers when there is a validation split (test is then evaluated once, at the end),
# else test numbers, which draw curves but select nothing
METRIC_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_score", "test_loss", "test_acc",
                 "lr", "seconds"]  # fmt: skip

_held: dict[Path, tuple[int, bool]] = {}


class FolderInUse(ValueError):
    """Another process trains into the folder."""  # folder -> (descriptor holding its lock, created by this claim)


def owned_files(path: Path) -> list[Path] | None:
    """The paths the run in folder `path` owns (its manifest's list), or None where no run claimed it."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        names = [n for n in manifest["files"] + manifest["dirs"] if isinstance(n, str) and "/" not in n]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [path / n for n in names if n not in ("", ".", "..")] + [path / MANIFEST]


def has_checkpoint(path: Path) -> bool:
    return any((path / c).exists() for c in CHECKPOINTS)


def holds_run(path: Path) -> bool:
    """Whether a run claimed folder `path` and got as far as a checkpoint (one that died before has no results
    worth keeping: a new run may take its place without --overwrite)."""
    return owned_files(path) is not None and has_checkpoint(path)


def owner_of(path: str | Path) -> Path | None:
    """The run folder whose manifest lists `path` (a file a command other than training must not write)."""
    path = Path(os.path.abspath(path))
    for folder in list(path.parents)[:2]:  # the file's own folder, or the run's above tensorboard/
        owned = owned_files(folder)
        if owned and any(path == p or p in path.parents for p in owned):
            return folder
    return None


def in_use(path: Path) -> bool:
    """Whether a training process holds the run folder `path` (the lock `RunFolder` takes), without taking it."""
    if fcntl is None or not path.is_dir():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RunFolder:
    """One run's directory. `is_main`: this process is rank 0, the only one that writes."""

    path: Path
    is_main: bool = True

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------------------------------ ownership
    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Create and lock the folder for this job (rank 0 does it, every rank learns the outcome), or raise
        a ValueError that says what to do instead."""
        distributed.on_main(partial(self._claim, resume, overwrite))

    def _claim(self, resume: bool, overwrite: bool) -> None:
        if resume and not self.path.is_dir():
            raise FileNotFoundError(f"cannot resume: {self.path} does not exist")
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock(created)
        try:
            self._check_resumable() if resume else self._take_over(overwrite)
        except BaseException:
            self.release()
            raise
        remove_stale_temps(self.path, older_than=0)

    def _lock(self, created: bool) -> None:
        key = Path(os.path.abspath(self.path))
        if key in _held:
            return
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(
                f"{self.path} is in use by another training process; wait for it or choose another --out"
            ) from None
        _held[key] = (fd, created)

    def _check_resumable(self) -> None:
        """A run to resume has a checkpoint; a run of a version before manifests gets one now."""
        if owned_files(self.path) is None:
            self._write_manifest()
        elif not has_checkpoint(self.path):
            raise ValueError(f"cannot resume {self.path}: its run stopped before its first checkpoint; start it "
                             "again with the same command, without --resume")  # fmt: skip

    def _take_over(self, overwrite: bool) -> None:
        """Refuse a finished run unless `overwrite` and any run file no run owns (the user's); remove only
        what the old run's manifest lists; write ours."""
        if holds_run(self.path) and not overwrite:
            raise ValueError(
                f"{self.path} already holds a run: continue it with --resume {self.path}, replace it with "
                "--overwrite, or choose another --out"
            )
        for owned in owned_files(self.path) or []:
            if owned.is_dir() and not owned.is_symlink():
                shutil.rmtree(owned, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    owned.unlink()
        foreign = [
            n for n in RUN_FILES + RUN_DIRS if (self.path / n).exists() or (self.path / n).is_symlink()
        ]
        if foreign:
            raise ValueError(
                f"{self.path} holds {', '.join(foreign)}, which no resnets run there wrote (no {MANIFEST}): "
                "a run would write over them; choose another --out or move them away"
            )
        self._write_manifest()

    def _write_manifest(self) -> None:
        atomic_write_text(self.file(MANIFEST), json.dumps({"files": RUN_FILES, "dirs": RUN_DIRS}) + "\n")

    def release(self) -> None:
        """Give up the lock (nothing to do where this process holds none); a folder the claim created is
        removed again if the run failed before writing anything but its manifest."""
        fd, created = _held.pop(Path(os.path.abspath(self.path)), (None, False))
        if fd is None:
            return
        if created and [p.name for p in self.path.iterdir()] == [MANIFEST]:
            with contextlib.suppress(OSError):
                self.file(MANIFEST).unlink()
                self.path.rmdir()
        os.close(fd)  # closing the descriptor releases the flock

    # ---------------------------------------------------------------------------------------------- reads
    def read_setup(self) -> tuple[TrainConfig, dict[str, Any]]:
        """config.json and what the run resolved at its start (runtime.json; {} in older runs)."""
        return distributed.on_main(self._read_setup)

    def _read_setup(self) -> tuple[TrainConfig, dict[str, Any]]:
        if not self.file(CONFIG).is_file():
            raise FileNotFoundError(f"cannot resume: {self.file(CONFIG)} not found (is it a run folder?)")
        cfg = TrainConfig.load(self.file(CONFIG))
        path = self.file(RUNTIME)
        try:
            resolved = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is damaged ({e}); delete it to resolve the device and format again"
            ) from e
        return cfg, resolved if isinstance(resolved, dict) else {}

    def read_state(self) -> dict[str, Any]:
        """The checkpoint of the last finished epoch (state.pt)."""
        return distributed.on_main(partial(load_state, self.path))

    def check_classes(self, classes: list[str], data: str) -> None:
        """A resumed run's data (maybe moved) must hold the classes its weights trained on, in order."""
        last = self.file(LAST)
        trained = distributed.on_main(lambda: read_meta(last).get("classes") if last.is_file() else None)
        if trained is not None and trained != classes:
            raise ValueError(f"{data} has the classes {', '.join(classes[:5])}, ... but {self.path} trained on "
                             f"{', '.join(trained[:5])}, ...: resume with the data it trained on")  # fmt: skip

    def read_best(self) -> dict[str, torch.Tensor]:
        """The weights of the epoch validation selected (best.safetensors)."""
        return distributed.on_main(partial(load_file, str(self.file(BEST))))

    # --------------------------------------------------------------------------------------------- writes
    def write_setup(self, cfg: TrainConfig, resolved: dict[str, Any]) -> None:
        """config.json (the settings as given, so the run can be repeated) and runtime.json (what they
        resolved to on this machine, so a resumed run computes the same way)."""
        if self.is_main:
            atomic_write_text(self.file(CONFIG), cfg.to_json())
            atomic_write_text(self.file(RUNTIME), json.dumps(resolved, indent=2))

    def write_epoch(
        self,
        weights: dict[str, torch.Tensor],
        meta: WeightsMeta,
        is_best: bool,
        epochs: list[dict[str, Any]],
        state: dict[str, Any],
    ) -> None:
        """An epoch's weights (last, and best), the metrics so far and the resumable state."""
        if not self.is_main:
            return
        save_weights(weights, self.file(LAST), meta)
        if is_best:
            save_weights(weights, self.file(BEST), meta)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(epochs)
        atomic_write_text(self.file(METRICS), buffer.getvalue())
        save_state(self.path, state)

    def write_results(self, results: dict[str, Any]) -> None:
        """results.json: the final model's numbers for scripts, and their source."""
        if self.is_main:
            atomic_write_text(self.file(RESULTS), json.dumps(results, indent=1))


def elastic_resume(cfg: TrainConfig) -> Path | None:
    """The run folder to resume when torchrun restarted the workers (`--max-restarts`) and `cfg.out` holds a
    checkpoint of this same configuration; otherwise None (a fresh run)."""
    if cfg.out is None or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0:
        return None
    path = Path(cfg.out)

    def same_run() -> bool:
        if not (path / STATE_FILE).is_file() or not (path / CONFIG).is_file():
            return False
        saved = asdict(TrainConfig.load(path / CONFIG)) | {"quiet": cfg.quiet, "out": cfg.out}
        for name, unresolved in (("precision", "auto"), ("channels_last", None)):  # resolved when it started
            if getattr(cfg, name) == unresolved:
                saved[name] = unresolved
        return saved == asdict(cfg)

    return path if distributed.on_main(same_run) else None


def claim(cfg: TrainConfig | None, resume: str | Path | None, overwrite: bool) -> RunFolder:
    """The run's folder, claimed: `resume`, else `cfg.out`, else a new runs/<model>-<data>-<time> (with -2, -3,
    ... where another run started in the same second)."""
    is_main = distributed.is_main_process()
    if resume is not None or cfg.out:
        folder = RunFolder(Path(resume if resume is not None else cfg.out), is_main)
        folder.claim(resume=resume is not None, overwrite=overwrite)
        return folder
    stem = distributed.on_main(partial(default_run_dir, cfg))
    for attempt in range(1, 100):
        folder = RunFolder(stem if attempt == 1 else stem.with_name(f"{stem.name}-{attempt}"), is_main)
        try:
            folder.claim(resume=False, overwrite=False)
            return folder
        except FolderInUse:
            continue
        except ValueError:
            if not holds_run(folder.path):
                raise
    raise ValueError(f"could not find a free run folder beside {stem}: choose one with --out")


def default_run_dir(cfg: TrainConfig) -> Path:
    data = cfg.data.split(":", 1)[0] if cfg.data.startswith("folder:") else cfg.data
    return Path("runs") / f"{cfg.model}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"
