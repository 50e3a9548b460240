"""Report scaffolding shared by the experiments: run folder, raw numbers, plots, verdicts, report.md."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..files import atomic_write, atomic_write_text
from ..provenance import provenance
from ..train import TrainConfig
from ..train.runtime import resolve_runtime
from .options import ExperimentOptions
from .stats import INCONCLUSIVE, lower, mean_std

NOT_LEARNED = (
    "The reference nets did not get clearly above chance in this budget, so the comparison is noise: "
)
RULE = (
    "Rule: each number is the mean ± standard deviation (n - 1) over seeds. A claimed ordering is supported when "
    "Welch's t-test on the per-seed values finds it at p < 0.05 (and by more than the experiment's smallest "
    "effect that counts, where it states one), not supported when it finds the opposite at p < 0.05, and "
    "otherwise inconclusive, as always with one seed (no spread to test against)."
)


def ordered(low: Sequence[float], high: Sequence[float], floor: float = 0.0) -> str:
    """Verdict on "low < high" by RULE over per-seed values: Welch's t-test at p < ALPHA, the difference beyond
    `floor` (a smallest effect that counts; 0: any)."""
    verdict, difference = lower(low, high)
    return INCONCLUSIVE if abs(difference.difference) <= floor else verdict


def pm(values: Sequence[float], percent: bool = False) -> str:
    """ "mean ± std" of per-seed values, as percentages with `percent`."""
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}%" if percent else f"{mean:.4g} ± {std:.2g}"


def by_label(rows: Sequence[dict[str, Any]], key: str, value: str) -> dict[str, list[float]]:
    """Per-seed values of `value` grouped by `rows[i][key]`, in first-seen order."""
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row[value])
    return groups


def seed_summary(rows: Sequence[dict[str, Any]], key: str, values: Sequence[str]) -> list[dict[str, Any]]:
    """One row per `key` with each of `values` as "mean ± std" text plus its mean, over the seeds' rows."""
    summary = []
    for label in dict.fromkeys(r[key] for r in rows):
        group = [r for r in rows if r[key] == label]
        row: dict[str, Any] = {key: label, "seeds": len(group)}
        for v in values:
            per_seed = [r[v] for r in group]
            row[v] = pm(per_seed, percent=v.endswith(("error", "acc")))
            row[f"{v}_mean"], row[f"{v}_std"] = mean_std(per_seed)
        summary.append(row)
    return summary


@dataclass(frozen=True)
class Outcome:
    """What an experiment hands back: where its report is and what it concluded."""

    report: Path
    verdict: str


def learned(accuracies: Iterable[float], num_classes: int = 10) -> bool:
    """Whether every net got clearly above chance (twice its rate); below that, comparing them compares noise."""
    return all(a > 2 / num_classes for a in accuracies)


class ExperimentRun:
    """One experiment's folder: raw numbers, plots and the report all go in `self.dir`."""

    def __init__(self, name: str, options: ExperimentOptions) -> None:
        self.name, self.options = name, options
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.dir = Path(options.out) if options.out else Path("runs") / "experiments" / f"{name}-{stamp}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.files: list[str] = []
        device = resolve_runtime(TrainConfig(device=options.device)).device
        self.source = provenance(options.command(name), device)  # the commit as the run starts

    def save_json(self, filename: str, data: Any) -> Path:
        path = atomic_write_text(self.dir / filename, json.dumps(data, indent=2, default=str) + "\n")
        self.files.append(filename)
        return path

    def save_csv(self, filename: str, rows: Sequence[dict[str, Any]]) -> Path:
        """Rows of dicts as CSV; the columns are the union of the rows' keys, in first-seen order."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        path = atomic_write_text(self.dir / filename, buffer.getvalue())
        self.files.append(filename)
        return path

    def save_figure(self, fig: Figure, filename: str) -> str:
        """Write a PNG (matplotlib's Figure draws with Agg, no pyplot state) and return its Markdown link."""
        fig.tight_layout()
        atomic_write(self.dir / filename, lambda tmp: fig.savefig(tmp, dpi=110))
        self.files.append(filename)
        return f"![{Path(filename).stem}]({filename})"

    def provenance(self) -> dict[str, Any]:
        """Commit, dirty flag, command, machine and versions at the start, seeds, and wall time so far."""
        return self.source | {
            "seeds": self.options.seed_list,
            "wall_minutes": round((time.perf_counter() - self.started) / 60, 2),
        }

    def write_report(
        self, title: str, claim: str, setup: Sequence[str], results: str, verdict: str, reasons: str
    ) -> Outcome:
        """report.md: claim, verdict, setup, results, then the provenance block (also `provenance.json`)."""
        record = self.provenance()
        self.save_json("provenance.json", record)
        files = ", ".join(f"`{f}`" for f in self.files if not f.endswith(".png"))
        o = self.options
        data = f"Data: {o.data}{f' from {o.data_root}' if o.data_root else ''}; budget `{o.budget}`"
        if o.budget == "cpu":
            data += " (sized to about 30 minutes on 2 cores from timed epochs: an estimate, see the module's BUDGETS)"
        bullets = "\n".join(f"- {line}" for line in [*setup, data])
        text = (
            f"# {title}\n\n**Claim.** {claim}\n\n**Verdict: {verdict}.** {reasons}\n\n"
            f"## Setup\n\n{bullets}\n\n## Results\n\n{results.strip()}\n\n"
            f"Raw numbers: {files or 'none'}.\n\n{provenance_block(record)}"
        )
        return Outcome(atomic_write_text(self.dir / "report.md", text), verdict)


def provenance_block(record: dict[str, Any]) -> str:
    """The report's `## Provenance` section: what reproduces it and what it was computed on."""
    m = record["machine"]
    dirty = {True: "yes: uncommitted changes to tracked files", False: "no", None: "unknown"}[record["dirty"]]
    where = m["gpu"] or f"{m['cpu']} ({m['cores']} cores, torch threads: {m['threads']})"
    libraries = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    lines = [
        f"Commit: `{record['commit']}` (tree dirty: {dirty})",
        f"Command: `{record['command']}`",
        f"Machine: {where}, device {m['device']}",
        f"Versions: {libraries}",
        f"Seeds: {', '.join(map(str, record['seeds']))}",
        f"Wall time: {record['wall_minutes']:.1f} minutes",
    ]
    return "## Provenance\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"


def markdown_table(
    rows: Sequence[dict[str, Any]], columns: dict[str, str], percent: Sequence[str] = ()
) -> str:
    """A Markdown table of `rows`; `columns` maps each key to its header. Keys in `percent` are shown as
    percentages, other floats with 4 significant digits."""

    def cell(key: str, value: Any) -> str:
        if key in percent and isinstance(value, float):
            return f"{100 * value:.1f}%"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, row.get(k, "")) for k in columns) + " |" for row in rows]
    return "\n".join(lines)
