"""Training progress where the user is: a bar on a terminal or in a notebook, status lines in a log file."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

# Seconds between status lines without a terminal (nohup, CI, a log file): often enough to see a run is
# alive and how long it needs, rare enough that a day-long run logs a few thousand lines.
STATUS_INTERVAL = 30.0


def in_notebook() -> bool:
    """True inside a Jupyter or Colab kernel, where a bar is a widget and stderr is not a terminal."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ in ("ZMQInteractiveShell", "Shell")  # Shell: Colab's kernel


class StatusLines:
    """Iterate like tqdm, printing one line (batches done, the postfix values, ETA) every `interval` seconds."""

    def __init__(
        self,
        iterable: Iterable,
        desc: str,
        stream: TextIO,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "batch",
    ) -> None:
        self.iterable, self.desc, self.stream, self.clock = iterable, desc, stream, clock
        self.units = unit + ("es" if unit.endswith(("ch", "s")) else "s")  # "batches", "images"
        self.interval = STATUS_INTERVAL if interval is None else interval
        self.postfix: dict[str, object] = {}

    def set_postfix(self, **values: object) -> None:
        """Values to show on the next line (as tqdm's `set_postfix`)."""
        self.postfix = values

    def __iter__(self) -> Iterator:
        total = len(self.iterable) if hasattr(self.iterable, "__len__") else None
        start = last = self.clock()
        for done, item in enumerate(self.iterable, 1):
            yield item  # the caller's step runs here, so the line below shows its postfix
            now = self.clock()
            if now - last >= self.interval:
                last = now
                print(self.line(done, total, now - start), file=self.stream, flush=True)

    def line(self, done: int, total: int | None, elapsed: float) -> str:
        """`desc: done/total batches (pct%) k=v ... elapsed, ETA`."""
        values = " ".join(f"{k}={v}" for k, v in self.postfix.items())
        if total:
            eta = tqdm.format_interval(elapsed / done * (total - done))
            where = f"{done}/{total} {self.units} ({100 * done / total:.0f}%)"
            timing = f"{tqdm.format_interval(elapsed)} elapsed, ETA {eta}"
        else:
            where, timing = f"{done} {self.units}", f"{tqdm.format_interval(elapsed)} elapsed"
        return f"{self.desc}: {where} {values} {timing}".replace("  ", " ")


def progress(
    iterable: Iterable, desc: str, enabled: bool, stream: TextIO | None = None, unit: str = "batch"
) -> Iterable:
    """`iterable` with progress shown where the user is: tqdm.auto's widget bar in a notebook, a bar on a
    terminal, and without one (nohup, CI) a status line every STATUS_INTERVAL seconds. Has `set_postfix`."""
    stream = stream or sys.stderr
    if enabled and in_notebook():
        return auto_tqdm(iterable, desc=desc, leave=False, unit=unit)
    if enabled and not stream.isatty():
        return StatusLines(iterable, desc, stream, unit=unit)
    return tqdm(iterable, desc=desc, leave=False, disable=not enabled, unit=unit, file=stream)
