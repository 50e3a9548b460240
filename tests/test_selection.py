"""scripts/select_on_validation.py: candidates run as `resnets train` with a validation split and are
reported by their validation accuracy; the test split never appears in what it writes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "select_on_validation.py"
FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"


def test_candidates_are_run_and_reported_by_validation_accuracy(tmp_path: Path) -> None:
    tiny = (f"--data-root {FASHION} --epochs 2 --eval-every 1 --limit 256 --test-limit 64 --image-size 12 "
            "--workers 0 --batch-size 16")  # fmt: skip
    command = [sys.executable, str(SCRIPT), "--preset", "fast", "--val-split", "0.25", "--seed", "3",
               "--out", str(tmp_path / "out"), "--work", str(tmp_path / "runs"),
               "--candidate", f"plain={tiny} --progressive-from 0", "--candidate", f"small={tiny} --progressive-from 8"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    plain, small = saved["runs"]
    assert (plain["name"], small["name"]) == ("plain", "small")
    # the recipe read back from each run's config: the preset's changes, not the bookkeeping (data root, seed)
    shared = "--batch-size 16 --epochs 2 --eval-every 1 --image-size 12 --limit 256"
    assert plain["flags"] == shared + " --progressive-from 0 --test-limit 64"
    assert small["flags"] == shared + " --progressive-from 8 --test-limit 64"
    assert all(r["seed"] == 3 and r["val_split"] == 0.25 for r in saved["runs"])
    # each run's number is its best epoch's validation accuracy as the run logged it (metrics.csv), a count of
    # the 1000 validation images (a quarter of the fixture's 4000): both candidates learn, far above chance (10%)
    for r in saved["runs"]:
        with open(tmp_path / "runs" / r["name"] / "metrics.csv", newline="") as f:
            logged = [float(row["val_acc"]) for row in csv.DictReader(f)]
        assert r["val_acc"] == pytest.approx(max(logged)) and r["val_acc"] > 0.3, (r["name"], logged)
        assert 1000 * r["val_acc"] == pytest.approx(round(1000 * r["val_acc"]), abs=1e-6)
    results = json.loads((tmp_path / "runs" / "plain" / "results.json").read_text())
    assert plain["val_acc"] == results["val"]["accuracy"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"| plain | `{plain['flags']}` | {100 * plain['val_acc']:.2f}% |" in report
    # what is kept of a run holds no test figure (the run's results.json has them), and names its source
    assert set(plain) == {"name", "flags", "source", "wall_s", "load_before", "val_acc", "best_epoch", "epochs",
                          "val_split", "seed", "runtime"}  # fmt: skip
    assert "test" not in json.dumps(plain["runtime"]) and "test" in results
    assert plain["source"].startswith(f"commit {results['source']['commit']}")
    assert "; command resnets train --preset fast --val-split 0.25 " in plain["source"]
    # a second call resumes: nothing is run again
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (
        again.returncode == 0
        and json.loads((tmp_path / "out" / "results.json").read_text())["runs"] == saved["runs"]
    )
