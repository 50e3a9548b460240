"""The study runner: a study is a set of units (one arm, one seed), each trained and evaluated on its own and
recorded in `units/<unit>.json` the moment it finishes, so a study can run for days, over several sessions
and machines, and any number of workers can share it.

Design rules:
- A unit's record holds everything its numbers need: the training settings that define it, per-epoch
  history, final test numbers, measurements (e.g. Figure 7's responses), seconds, and the source (commit,
  command, machine, versions). Rerunning a study skips finished units; a record whose settings differ from
  the study's is refused by name, never silently mixed in or overwritten.
- A unit trains into its own run folder under the work folder; a unit killed mid-way resumes from its last
  checkpoint, and a unit another worker is training (its folder is locked) is skipped.
- Units made at another commit than the ones already recorded are refused unless `mixed_commits` is set,
  and then the report lists every commit.
- The report is regenerated from the units that exist and says how many are missing.
- A work folder rarely outlives a session or a machine, so a half-trained unit can be parked: its resumable
  files copied to `parked/<unit>/` beside `units/` and committed with them. A worker resumes parked units
  first, from the parked copy where it has trained further than the worker's own run folder (usually there
  is none); the parked copy goes when the unit's record is written.
- A unit is defined by its settings: one that another study recorded with identical settings is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data.augment import INCEPTION_CROP_RATIO, INCEPTION_CROP_SCALE
from ...data.folder import EVAL_RESIZE
from ...files import atomic_write, atomic_write_text
from ...machine import set_threads
from ...provenance import generated_by, git_state, invocation, provenance
from ...train import History, TrainConfig, fit
from ...train.checkpoint import STATE_FILE, load_state
from ...train.folder import BEST, CONFIG, METRICS, RUNTIME, FolderInUse

# what resuming a unit needs, state last (a unit with its state parked is whole); best only where validation
# selects; the metrics so that a resumed unit's folder shows its epochs (`study_workers.py status`) at once
PARKED_FILES = (CONFIG, RUNTIME, BEST, METRICS, STATE_FILE)
PARKED_NOTE = "parked.json"

# settings that make a unit's numbers what they are; speed knobs (precision, layout, compile), paths and
# logging are recorded in the unit's `runtime` but do not define it
MACHINE_FIELDS = frozenset({"data_root", "out", "device", "quiet", "workers", "precision", "channels_last",
                            "compile"})  # fmt: skip
# training options added after units were recorded, each with the value every earlier unit trained with (the
# behaviour before the option existed): a record that lacks one is read with that value
ADDED_OPTIONS = {"crop_scale": INCEPTION_CROP_SCALE, "adam_beta2": 0.999, "adam_eps": 1e-8,  # (torch's AdamW)
                 "crop_ratio": INCEPTION_CROP_RATIO, "rotate": 0.0, "zoom": 1.0, "warp": 0.0, "lighting": 0.0,
                 "eval_resize": EVAL_RESIZE, "normalize": True}  # fmt: skip


@dataclass(frozen=True)
class Arm:
    """One net or variant of a study: a label and the training settings it adds to the study's recipe."""

    label: str
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class Unit:
    """One arm trained with one seed: the smallest piece of a study that runs and is recorded on its own."""

    arm: Arm
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arm.label}-seed{self.seed}"


@dataclass(frozen=True)
class Study:
    """A claim, the recipe every unit shares, the arms compared and how many seeds each gets; `measure`
    adds numbers read off a unit's trained model, and `report` turns the recorded units into a report."""

    name: str
    title: str
    claim: str
    recipe: Mapping[str, Any]
    arms: tuple[Arm, ...]
    seeds: int
    report: Callable[[StudyResults], Report]
    measure: Callable[[History], dict[str, Any]] | None = None
    reads: str | None = None  # report on this other study's units (same recipe and arms), training nothing
    beside: Study | None = None  # the report also gets this study's units (`StudyResults.beside`) to compare
    first: tuple[str, ...] = ()  # arms whose units all come before the others' (those the verdicts need most)

    def units(self, seeds: int | None = None, arms: Sequence[str] | None = None) -> list[Unit]:
        """The order workers take units in: the arms in `first` before the others, seed-major within each
        group, so every arm of a group gets its first seed before any gets a second."""
        chosen = [a for a in self.arms if not arms or a.label in arms]
        units = [Unit(a, s) for s in range(seeds or self.seeds) for a in chosen]
        return sorted(units, key=lambda u: u.arm.label not in self.first)  # stable: seed-major in each group

    def settings(self, unit: Unit) -> dict[str, Any]:
        """The training settings that define `unit` (machine-independent fields only)."""
        values = {**self.recipe, **unit.arm.changes, "seed": unit.seed}
        return {k: v for k, v in values.items() if k not in MACHINE_FIELDS}


@dataclass(frozen=True)
class Report:
    """What a study's report function hands back to be written: its verdict, why, and the body."""

    verdict: str
    reasons: str
    body: str  # Markdown: tables and figure links
    headline: str  # one line for the index: our numbers beside the source's
    files: dict[str, bytes | str] = field(default_factory=dict)  # plots and CSVs to write beside report.md


@dataclass
class StudyResults:
    """The recorded units of a study, and which of the planned ones are still missing."""

    study: Study
    units: list[dict[str, Any]]
    missing: list[str]
    beside: list[dict[str, Any]] = field(default_factory=list)  # the `beside` study's recorded units

    def values(self, label: str, key: Callable[[dict[str, Any]], float]) -> list[float]:
        """One number per recorded seed of arm `label`."""
        return [key(u) for u in self.units if u["arm"] == label]


@dataclass(frozen=True)
class Where:
    """Where a study keeps its records (committed) and its run folders (not committed), and its data."""

    out: Path  # report.md, its plots, and units/ (unless `units` says otherwise)
    work: Path  # the units' run folders
    data_root: str | None = None
    device: str = "auto"
    units_dir: Path | None = None  # default: out / "units"
    loader_workers: int = 0  # data-loading processes per unit for image folders (0: in the unit's process)
    index_order: tuple[str, ...] = ()  # the studies in the order the index lists them (others after, by name)

    @property
    def units(self) -> Path:
        return self.units_dir or self.out / "units"

    @property
    def parked(self) -> Path:
        return self.units.parent / "parked"


def unit_path(where: Where, unit: Unit) -> Path:
    return where.units / f"{unit.name}.json"


def read_units(study: Study, where: Where) -> list[dict[str, Any]]:
    """Every recorded unit of `study`, each checked against the settings the study defines for it now."""
    records = []
    for path in sorted(where.units.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is damaged ({e}); delete it and run the study again to redo that unit"
            ) from e
        arm = next((a for a in study.arms if a.label == record.get("arm")), None)
        if arm is None:
            raise ValueError(
                f"{path} records arm {record.get('arm')!r}, which study {study.name} does not have"
            )
        expected, recorded = study.settings(Unit(arm, record["seed"])), settings_of(record)
        if recorded != expected:
            changed = sorted(
                k for k in expected.keys() | recorded.keys() if expected.get(k) != recorded.get(k)
            )
            raise ValueError(
                f"{path} was trained with other settings than study {study.name} defines now "
                f"({', '.join(changed)}): move it away (and its report) to keep both, or delete it to redo it"
            )
        records.append(record)
    return records


def settings_of(record: dict[str, Any]) -> dict[str, Any]:
    """A record's training settings, with the options added since it was made at the value it trained with."""
    return ADDED_OPTIONS | record.get("settings", {})


def check_commits(records: list[dict[str, Any]], mixed_commits: bool) -> None:
    """Refuse to add units at a commit other than the recorded ones', unless asked (the report lists them)."""
    commit, dirty = git_state()
    recorded = {r["source"]["commit"] for r in records}
    if dirty:
        raise ValueError("the source tree has uncommitted changes: commit them first, so that every unit names "
                         "the code it ran (or run the study from a clean git worktree)")  # fmt: skip
    if recorded and recorded != {commit} and not mixed_commits:
        raise ValueError(
            f"the recorded units ran at commit(s) {', '.join(sorted(c[:10] for c in recorded))}, this is "
            f"{commit[:10]}: pass --mixed-commits to add units anyway (the report lists each unit's commit)"
        )


def unit_config(study: Study, unit: Unit, where: Where) -> TrainConfig:
    """The training configuration of `unit`: its settings, and this machine's data, device and run folder."""
    return TrainConfig.from_dict({**study.recipe, **unit.arm.changes, "seed": unit.seed, "quiet": True,
                                  "out": str(where.work / unit.name), "data_root": where.data_root,
                                  "device": where.device, "workers": where.loader_workers})  # fmt: skip


def train_unit(study: Study, unit: Unit, where: Where, threads: int | None) -> dict[str, Any] | None:
    """Train and evaluate one unit (resuming its run folder if a checkpoint is there) and return its record,
    or None when another worker holds its folder."""
    run_dir = where.work / unit.name
    started = time.time()
    resumed = unpark(where, unit)
    try:
        if (run_dir / STATE_FILE).is_file():
            machine = {"data_root": where.data_root, "device": where.device, "workers": where.loader_workers}
            history = fit(resume=run_dir, changes=machine)
        else:  # a new unit, or one killed before its first checkpoint: the folder is the runner's own
            history = fit(unit_config(study, unit, where), overwrite=True)
    except FolderInUse:
        return None
    record = {
        "study": study.name, "unit": unit.name, "arm": unit.arm.label, "seed": unit.seed,
        "settings": study.settings(unit),
        "epochs": [{k: v for k, v in row.items() if v != ""} for row in history.epochs],
        "test": history.final.summary(), "test_images": int(history.final.confusion.sum()),
        "train_seconds": history.seconds, "wall_seconds": round(time.time() - started, 1),
        "runtime": json.loads((run_dir / "runtime.json").read_text()),
        "measured": study.measure(history) if study.measure else {},
        "source": provenance(invocation(), next(history.model.parameters()).device) | source_state(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "threads": threads, "resumed_after_epoch": resumed,
    }  # fmt: skip
    return record


def recorded_elsewhere(study: Study, unit: Unit, where: Where) -> dict[str, Any] | None:
    """Another study's record of the very same training (identical settings, seed included), reused instead
    of trained again: a unit is defined by its settings, not by the study that asks for it. Only a record
    trained as itself is reused, and only if it holds the measurements this study takes."""
    settings, studies = study.settings(unit), where.units.parent.parent
    for path in sorted(studies.glob("*/units/*.json")):
        if path.parent.resolve() == where.units.resolve():
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        measured = study.measure is None or record.get("measured")
        if settings_of(record) == settings and "reused_from" not in record and measured:
            origin = path.relative_to(studies).as_posix()
            return record | {
                "study": study.name,
                "unit": unit.name,
                "arm": unit.arm.label,
                "reused_from": origin,
            }
    return None


def park(study: Study, where: Where) -> list[str]:
    """Copy each unfinished unit's resumable files from its run folder to `parked/<unit>/` (to be committed
    with the units: the next session or machine resumes there); returns a line per parked unit."""
    done = {r["unit"] for r in read_units(study, where)}
    lines = []
    for run_dir in sorted(where.work.glob("*-seed*")):
        unit, parked = unit_named(study, run_dir.name), where.parked / run_dir.name
        if unit is None or unit.name in done or not (run_dir / STATE_FILE).is_file():
            continue
        parked.mkdir(parents=True, exist_ok=True)
        for name in PARKED_FILES:  # each copy is atomic, and a worker replaces state.pt atomically
            if (run_dir / name).is_file():
                atomic_write(parked / name, lambda tmp, src=run_dir / name: shutil.copyfile(src, tmp))
        state = load_state(parked)
        settings = study.settings(unit)
        note = {"epoch": state["epoch"], "epochs": settings["freeze_epochs"] + settings["epochs"],
                "train_seconds": round(sum(float(e["seconds"]) for e in state["history"]), 1),
                "parked": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip
        atomic_write_text(parked / PARKED_NOTE, json.dumps(note, indent=1) + "\n")
        lines.append(f"{unit.name}: parked after epoch {note['epoch']} of {note['epochs']} in {parked}")
    return lines


def unpark(where: Where, unit: Unit) -> int:
    """Put a parked unit's files into its run folder when the parked copy has trained further than the folder
    (a folder of another session is usually gone); returns the epoch the unit resumes after (0: afresh)."""
    run_dir, parked = where.work / unit.name, where.parked / unit.name
    if epoch_of(parked) > epoch_of(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in PARKED_FILES:
            if (parked / name).is_file():
                atomic_write(run_dir / name, lambda tmp, src=parked / name: shutil.copyfile(src, tmp))
    return epoch_of(run_dir)


def epoch_of(folder: Path) -> int:
    """The last epoch whose checkpoint `folder` holds (0: none)."""
    return int(load_state(folder)["epoch"]) if (folder / STATE_FILE).is_file() else 0


def unit_named(study: Study, name: str) -> Unit | None:
    """The unit a run folder or record is named after (`<arm>-seed<N>`), or None if `study` has no such arm."""
    label, _, seed = name.rpartition("-seed")
    arm = next((a for a in study.arms if a.label == label), None)
    return Unit(arm, int(seed)) if arm is not None and seed.isdigit() else None


def parked_units(where: Where) -> dict[str, dict[str, Any]]:
    """The parked units' notes (epoch reached, epochs planned, when), by unit name."""
    notes = sorted(where.parked.glob(f"*/{PARKED_NOTE}"))
    return {n.parent.name: json.loads(n.read_text()) for n in notes}


def source_state() -> dict[str, Any]:
    """The commit the unit ran at (read through this module, so tests can set it)."""
    commit, dirty = git_state()
    return {"commit": commit, "dirty": dirty}


def pending(
    study: Study, where: Where, done: set[str], seeds: int | None = None, arms: Sequence[str] | None = None
) -> list[Unit]:
    """The units not in `done`, in the order workers take them: parked (half-trained) ones first, then the
    study's own order."""
    parked = parked_units(where)
    todo = [u for u in study.units(seeds, arms) if u.name not in done]
    return sorted(todo, key=lambda u: u.name not in parked)


def run_study(
    study: Study,
    where: Where,
    *,
    seeds: int | None = None,
    arms: Sequence[str] | None = None,
    max_units: int | None = None,
    threads: int | None = None,
    mixed_commits: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the study's missing units (all, or `max_units` of them), recording each as it finishes and
    rewriting the report after each; returns the report's path. With `max_units=0` only the report is
    regenerated from the units recorded so far."""
    unknown = sorted(set(arms or ()) - {a.label for a in study.arms})
    if unknown:
        raise ValueError(f"study {study.name} has no arm {', '.join(unknown)}; its arms: "
                         f"{', '.join(a.label for a in study.arms)}")  # fmt: skip
    records = read_units(study, where)
    if study.reads and max_units != 0:
        raise ValueError(f"study {study.name} trains nothing: it reports on study {study.reads}'s units "
                         f"(run that one to add units)")  # fmt: skip
    todo = pending(study, where, {r["unit"] for r in records}, seeds, arms)
    if max_units is not None:
        todo = todo[:max_units]
    if todo:
        check_commits(records, mixed_commits)
    set_threads(threads)
    for unit in todo:
        if unit_path(where, unit).is_file():
            continue  # another worker finished it meanwhile
        record = recorded_elsewhere(study, unit, where)
        if record is not None:
            log(f"{study.name}: {unit.name} is the very unit {record['reused_from']} recorded: reused")
        else:
            log(f"{study.name}: training {unit.name} into {where.work / unit.name}")
            record = train_unit(study, unit, where, threads)
        if record is None:
            log(f"{study.name}: {unit.name} is being trained by another worker; skipped")
            continue
        atomic_write_text(unit_path(where, unit), json.dumps(record, indent=1) + "\n")
        shutil.rmtree(where.parked / unit.name, ignore_errors=True)  # the record supersedes the parked copy
        took = "reused" if "reused_from" in record else f"in {record['wall_seconds'] / 60:.1f} min"
        log(f"{study.name}: {unit.name} test accuracy {100 * record['test']['accuracy']:.2f}% {took}")
        records.append(record)
        write_report(study, where, records, seeds)
    return write_report(study, where, read_units(study, where), seeds)


def write_report(study: Study, where: Where, records: list[dict[str, Any]], seeds: int | None) -> Path:
    """report.md from the recorded units: claim, verdict, setup, the report's own body, then provenance."""
    done = {r["unit"] for r in records}
    planned = study.units(max(seeds or 0, study.seeds, 1 + max((r["seed"] for r in records), default=0)))
    results = StudyResults(study, sorted(records, key=lambda r: (r["seed"], r["arm"])),
                           [u.name for u in planned if u.name not in done])  # fmt: skip
    if study.beside is not None:  # its folder sits beside this one's, as `where` lays studies out
        other = where.units.parent.parent / study.beside.name
        results.beside = read_units(study.beside, Where(other, where.work))
    report = study.report(results)
    for name, content in report.files.items():
        path = where.out / name
        if isinstance(content, bytes):
            atomic_write(path, lambda tmp, data=content: tmp.write_bytes(data))
        else:
            atomic_write_text(path, content)
    parked = parked_units(where)
    missing = [m + (f" (parked after epoch {parked[m]['epoch']} of {parked[m]['epochs']})" if m in parked else "")
               for m in results.missing]  # fmt: skip
    status = (f"{len(records)} of {len(planned)} units recorded"
              + (f"; missing: {', '.join(missing)}" if missing else "; none missing"))  # fmt: skip
    text = (
        f"# {study.title}\n\n_{generated_by(regenerated_source())}_\n\n**Claim.** {study.claim}\n\n"
        f"**Verdict: {report.verdict}.** {report.reasons}\n\n**Status.** {status}.\n\n"
        f"## Setup\n\n{setup_text(study, records)}\n\n## Results\n\n{report.body.strip()}\n\n"
        f"{per_seed_text(study, records)}{provenance_text(records)}"
    )
    count = f"{len(records)} of {len(planned)}" + (f" ({len(parked)} half-trained, parked)" if parked else "")
    summary = {"name": study.name, "title": study.title, "verdict": report.verdict, "reasons": report.reasons,
               "headline": report.headline, "status": status, "units": count,
               "command": canonical_command(study)}  # fmt: skip
    atomic_write_text(where.out / "summary.json", json.dumps(summary, indent=1) + "\n")
    update_index(where.out.parent, where.index_order)
    return atomic_write_text(where.out / "report.md", text)


def canonical_command(study: Study) -> str:
    """The command that adds this study's missing units to the committed report (CIFAR-10 or Fashion-MNIST
    found through --data-root or $RESNETS_DATA)."""
    if study.reads:
        return f"resnets study {study.name} --out docs/experiments/{study.name} --report-only"
    return f"resnets study {study.name} --out docs/experiments/{study.name} --data-root DATA --mixed-commits"


INDEX_BEGIN, INDEX_END = "<!-- studies:begin (generated by resnets study) -->", "<!-- studies:end -->"


def update_index(folder: Path, order: Sequence[str] = ()) -> None:
    """Rewrite the studies table between the markers of `folder`/README.md and of the project README two
    levels up (docs/experiments -> the repository's README.md), where they have the markers, from every
    study's summary.json in `folder`, in `order` (the rest by name); links are relative to each README."""
    for readme in (folder / "README.md", folder.parent.parent / "README.md"):
        if readme.is_file() and INDEX_BEGIN in (text := readme.read_text()):
            prefix = os.path.relpath(folder, readme.parent).replace(os.sep, "/")
            table = index_table(folder, "" if prefix == "." else prefix + "/", order)
            head, rest = text.split(INDEX_BEGIN, 1)
            tail = rest.split(INDEX_END, 1)[1] if INDEX_END in rest else ""
            atomic_write_text(readme, f"{head}{INDEX_BEGIN}\n{table}\n{INDEX_END}{tail}")


def index_table(folder: Path, prefix: str, order: Sequence[str]) -> str:
    rows = ["| study | verdict | ours vs the source | units | command |", "|---|---|---|---|---|"]
    rank = {name: i for i, name in enumerate(order)}
    for path in sorted(folder.glob("*/summary.json"), key=lambda p: (rank.get(p.parent.name, len(rank)), p)):
        s = json.loads(path.read_text())
        rows.append(f"| [{s['title']}]({prefix}{s['name']}/report.md) | **{s['verdict']}**: {s['reasons']} | "
                    f"{s['headline']} | {s['units']} | `{s['command']}` |")  # fmt: skip
    return "\n".join(rows)


def regenerated_source() -> dict[str, Any]:
    """The report's maker: a report is made from the code and the unit records, so only uncommitted code makes
    it dirty (writing reports and the README's index changes tracked files under docs/ on every run)."""
    commit, dirty = git_state(only=("src",))
    return {"command": invocation(), "commit": commit, "dirty": dirty}


def setup_text(study: Study, records: list[dict[str, Any]]) -> str:
    """The recipe as recorded (every setting), the arms, and the measured cost."""
    recipe = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"  # 4/3 as 1.33333
                       for k, v in sorted(study.recipe.items()) if k not in MACHINE_FIELDS)  # fmt: skip
    arms = "; ".join(f"{a.label}: " + ", ".join(f"{k}={v}" for k, v in a.changes.items()) for a in study.arms)
    lines = [f"Recipe (every unit): {recipe}", f"Arms: {arms}", f"Seeds planned per arm: {study.seeds}"]
    formats = sorted({f"{r['runtime']['precision']} {'channels_last' if r['runtime']['channels_last'] else 'NCHW'}"
                      f" on {r['runtime']['device']}" for r in records})  # fmt: skip
    if formats:
        lines.append(f"Number formats the units trained in: {'; '.join(formats)}")
    return "\n".join(f"- {line}" for line in lines)


def per_seed_text(study: Study, records: list[dict[str, Any]]) -> str:
    """Every recorded unit's own numbers (by arm, then seed): the rows behind each mean ± std of the report."""
    if not records:
        return ""
    rows = [
        "| arm | seed | test accuracy (%) | test error (%) | final training error (%) | epochs |",
        "|---|---|---|---|---|---|",
    ]
    arms = [a.label for a in study.arms]
    for r in sorted(records, key=lambda r: (arms.index(r["arm"]), r["seed"])):
        acc, train = 100 * r["test"]["accuracy"], 100 * (1 - r["epochs"][-1]["train_acc"])
        rows.append(
            f"| {r['arm']} | {r['seed']} | {acc:.2f} | {100 - acc:.2f} | {train:.2f} | {len(r['epochs'])} |"
        )
    return "### Per seed\n\n" + "\n".join(rows) + "\n\n"


def provenance_text(records: list[dict[str, Any]]) -> str:
    """Per unit: commit, machine, versions, command and time; the commits are listed when they differ."""
    if not records:
        return "## Provenance\n\nNo unit recorded yet.\n"
    commits = sorted({r["source"]["commit"] for r in records})
    head = (f"Units from {len(commits)} commits: {', '.join(c[:10] for c in commits)} (mixed on purpose: "
            "`--mixed-commits`)." if len(commits) > 1 else f"Every unit ran at commit `{commits[0]}`.")  # fmt: skip
    rows = [
        "| unit | commit | machine | versions | training minutes | finished |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: r["unit"]):
        s, m = r["source"], r["source"]["machine"]
        where = m.get("gpu") or f"{m['cpu']}, {r['runtime'].get('cpu_threads')} thread(s)"
        libs = ", ".join(f"{k} {v}" for k, v in s["versions"].items() if k in ("torch", "torchvision"))
        resumed = f" (resumed after epoch {r['resumed_after_epoch']})" if r.get("resumed_after_epoch") else ""
        resumed += f" (reused: {r['reused_from']})" if r.get("reused_from") else ""
        rows.append(f"| {r['unit']} | {s['commit'][:10]} | {where} | {libs} | {r['train_seconds'] / 60:.1f} | "
                    f"{r['finished']}{resumed} |")  # fmt: skip
    commands = sorted({r["source"]["command"] for r in records})
    return (f"## Provenance\n\n{head} Commands: " + "; ".join(f"`{c}`" for c in commands) + "\n\n"
            + "\n".join(rows) + "\n")  # fmt: skip


__all__ = ["Arm", "Report", "Study", "StudyResults", "Unit", "Where", "run_study"]
