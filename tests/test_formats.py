"""The CPU training format of short runs comes from this machine's measured (and cached) ranking, not from
its feature flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnets.machine import cpu_has_bf16, cpu_model
from resnets.train import TrainConfig, fit
from resnets.train.autotune import Candidate, machine_format

FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"


def cache_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def test_a_short_run_uses_the_cached_ranking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    ranking = {
        "fp32 NCHW": 100.0,
        "fp32 channels_last": 300.0,
        "bf16 NCHW": 200.0,
        "bf16 channels_last": 50.0,
    }
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cpu_formats.json").write_text(json.dumps({cache_key(): ranking}))
    out = tmp_path / "run"
    fit(TrainConfig(data_root=str(FASHION), epochs=1, batch_size=16, limit=32, test_limit=32, image_size=8,
                    workers=0, quiet=True, out=str(out)))  # fmt: skip
    resolved = json.loads((out / "runtime.json").read_text())
    assert (resolved["precision"], resolved["channels_last"]) == ("fp32", True)


def test_the_machine_ranking_is_measured_once_and_cached(tmp_path: Path) -> None:
    cache = tmp_path / "formats.json"
    cache.write_text("{not json")  # a damaged cache is measured again, not trusted
    precisions = [None, torch.bfloat16] if cpu_has_bf16() else [None]
    best, speeds = machine_format(precisions, [False, True], cache)
    stored = json.loads(cache.read_text())[cache_key()]
    assert stored == speeds and all(v > 0 for v in speeds.values())
    assert speeds[str(best)] == max(speeds[str(Candidate(p, c))] for p in precisions for c in (False, True))
    stored = {k: (1000.0 if k == "fp32 NCHW" else 1.0) for k in stored}  # a ranking only the cache knows
    cache.write_text(json.dumps({cache_key(): stored}))
    assert machine_format(precisions, [False, True], cache)[0] == Candidate(None, False)
