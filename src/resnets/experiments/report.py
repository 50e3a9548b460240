"""Report scaffolding shared by the experiments: run folder, raw numbers, plots, verdicts, report.md."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from ..files import atomic_write, atomic_write_text
from ..machine import core_count, cpu_model
from .options import ExperimentOptions

SUPPORTS, REFUTES, INCONCLUSIVE = "supports", "does not support", "inconclusive"
NOT_LEARNED = (
    "The reference nets did not get clearly above chance in this budget, so the comparison is noise: "
)
MARGIN_NOTE = (
    "Noise margins are 2 standard errors of the measured error rates, from one seed: they do not cover "
    "seed-to-seed variation."
)


def compare(difference: float, margin: float) -> str:
    """Verdict on "difference > 0": supports beyond +margin, does not support below -margin, else inconclusive."""
    if difference > margin:
        return SUPPORTS
    if difference < -margin:
        return REFUTES
    return INCONCLUSIVE


def combine(verdicts: Iterable[str]) -> str:
    """All parts of a claim must hold: any refuted part refutes it, any unresolved part leaves it open."""
    verdicts = list(verdicts)
    if REFUTES in verdicts:
        return REFUTES
    return SUPPORTS if verdicts and all(v == SUPPORTS for v in verdicts) else INCONCLUSIVE


def noise_margin(p1: float, n1: int, p2: float, n2: int, z: float = 2.0) -> float:
    """z standard errors of the difference of two accuracies measured on n1 and n2 images."""
    variance = p1 * (1 - p1) / max(n1, 1) + p2 * (1 - p2) / max(n2, 1)
    return z * math.sqrt(max(variance, 0.25 / max(n1, n2, 1) ** 2))  # never zero, even at 0% or 100%


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

    def setup_lines(self, details: Sequence[str]) -> list[str]:
        """The setup bullet list: the experiment's own details, then command, seed and machine."""
        o = self.options
        return [
            *details,
            f"Data: {o.data}{f' from {o.data_root}' if o.data_root else ''}; budget `{o.budget}`; seed {o.seed}",
            f"Command: `{o.command(self.name)}`",
            f"Machine: {machine()}; torch {torch.__version__}, Python {platform.python_version()}",
            f"Wall time: {(time.perf_counter() - self.started) / 60:.1f} minutes",
        ]

    def write_report(
        self, title: str, claim: str, setup: Sequence[str], results: str, verdict: str, reasons: str
    ) -> Outcome:
        """report.md: claim, setup, results, then the verdict and the numbers it was computed from."""
        files = ", ".join(f"`{f}`" for f in self.files if not f.endswith(".png"))
        bullets = "\n".join(f"- {line}" for line in self.setup_lines(setup))
        text = (
            f"# {title}\n\n**Claim.** {claim}\n\n**Verdict: {verdict}.** {reasons}\n\n"
            f"## Setup\n\n{bullets}\n\n## Results\n\n{results.strip()}\n\n"
            f"Raw numbers: {files or 'none'}.\n"
        )
        return Outcome(atomic_write_text(self.dir / "report.md", text), verdict)


def machine() -> str:
    """The GPU's name, or the CPU's with its cores and the threads torch uses."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({core_count()} cores, torch threads: {torch.get_num_threads()})"


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
