"""The CPU training format of short runs comes from this machine's measured (and cached) ranking, not from
its feature flags."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.machine import cpu_has_bf16, cpu_model
from resnets.train import TrainConfig, fit
from resnets.train import run as run_module
from resnets.train.autotune import (
    COMPILE_MIN_SECONDS,
    Candidate,
    CompileTiming,
    machine_format,
    time_compiled,
)
from resnets.train.loop import build_model, load_data
from resnets.train.runtime import Runtime

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
    assert (resolved["precision"], resolved["channels_last"], resolved["compile"]) == ("fp32", True, False)


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


def test_compiling_pays_when_it_saves_twice_its_cost() -> None:
    # 100k images: 1,000 s eager at 100 img/s, 800 s compiled at 125 img/s -> 200 s saved
    assert CompileTiming(100.0, 125.0, compile_s=100.0).pays(100_000)
    assert not CompileTiming(100.0, 125.0, compile_s=101.0).pays(100_000)
    assert not CompileTiming(100.0, 90.0, compile_s=0.0).pays(10**9)  # slower compiled: never


def test_long_cpu_runs_time_torch_compile_and_keep_it_only_when_it_pays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = TrainConfig(
        data_root=str(FASHION), epochs=10, batch_size=16, limit=320, image_size=8, workers=0, quiet=True
    )
    bundle = load_data(cfg)
    model = build_model(cfg, bundle)
    runtime = Runtime(torch.device("cpu"), torch.bfloat16, True)
    shape = (16, 1, 8, 8)
    images = 10 * (len(bundle.train) // 16) * 16
    timings: list[CompileTiming] = []
    asked: list[Candidate] = []

    def timed(model, candidate, batch_shape, num_classes):  # noqa: ANN001, ANN202
        asked.append(candidate)
        return timings.pop(0)

    monkeypatch.setattr(run_module, "time_compiled", timed)
    img_s = images / COMPILE_MIN_SECONDS  # exactly the shortest run that is timed
    timings[:] = [CompileTiming(img_s, 1.25 * img_s, compile_s=COMPILE_MIN_SECONDS * 0.1)]  # saves 20%: 2x
    assert run_module.choose_compile(cfg, runtime, model, bundle, img_s, shape).compile
    assert asked == [Candidate(torch.bfloat16, True)], "the run's own format is the one compiled"
    timings[:] = [CompileTiming(img_s, 1.25 * img_s, compile_s=COMPILE_MIN_SECONDS * 0.11)]
    assert not run_module.choose_compile(cfg, runtime, model, bundle, img_s, shape).compile
    asked.clear()
    assert not run_module.choose_compile(cfg, runtime, model, bundle, img_s * 1.01, shape).compile
    assert asked == [], "a shorter run is not timed at all"
    progressive = replace(cfg, progressive_from=4)  # new sizes every epoch: each would compile again
    assert not run_module.choose_compile(progressive, runtime, model, bundle, img_s, shape).compile
    assert asked == [], "not timed with progressive resizing"


@pytest.mark.slow
def test_time_compiled_compiles_the_real_step() -> None:
    """A real torch.compile (tens of seconds on 2 cores): slow-marked."""
    timing = time_compiled(
        create_model("cifar_resnet20", in_channels=1), Candidate(None, False), (8, 1, 16, 16), 10
    )
    assert timing.compile_s > 0 and timing.eager_img_s > 0 and timing.compiled_img_s > 0
