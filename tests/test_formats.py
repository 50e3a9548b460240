"""The CPU training format of short runs comes from this machine's measured (and cached) ranking, not from
its feature flags."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from resnets import create_model
from resnets.machine import cpu_has_bf16, cpu_model
from resnets.train import TrainConfig, autotune, fit
from resnets.train import setup as train_setup
from resnets.train.autotune import (
    COMPILE_MIN_SECONDS,
    Candidate,
    CompileTiming,
    Ranking,
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


def test_the_machine_ranking_is_measured_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(autotune, "MAX_STEP_SECONDS", 60.0)  # a busy test machine still times every format
    cache = tmp_path / "formats.json"
    cache.write_text("{not json")  # a damaged cache is measured again, not trusted
    precisions = [None, torch.bfloat16] if cpu_has_bf16() else [None]
    chosen = machine_format(precisions, [False, True], cache)
    stored = json.loads(cache.read_text())[cache_key()]
    assert chosen.fresh and stored["speeds"] == chosen.speeds and all(v > 0 for v in chosen.speeds.values())
    assert abs(stored["measured_at"] - time.time()) < 600 and stored["threads"] == torch.get_num_threads()
    best_speed = max(chosen.speeds[str(Candidate(p, c))] for p in precisions for c in (False, True))
    assert chosen.speeds[str(chosen.best)] == best_speed
    stored["speeds"] = {
        k: (1000.0 if k == "fp32 NCHW" else 1.0) for k in stored["speeds"]
    }  # only the cache knows
    stored["busy_cores"] = 0.0  # settled (the real measurement may have been provisional)
    cache.write_text(json.dumps({cache_key(): stored}))
    again = machine_format(precisions, [False, True], cache)
    assert again.best == Candidate(None, False) and not again.fresh


# issue 26: a 2-core AMD EPYC whose cache held zeros from a busy minute, and trained in fp32 NCHW from then on
SPEEDS = {"fp32 NCHW": 300.0, "fp32 channels_last": 400.0, "bf16 NCHW": 500.0, "bf16 channels_last": 600.0}
BOTH = [None, torch.bfloat16]
QUIET = (2, 2, 0.1)  # free_cores(): (idle cores, cores, busy cores) with 2 threads
BUSY = (1, 2, 1.4)


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Measurements run on 2 threads, as on the 2-core EPYC (the cache key and `provisional` depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def fake_machine(
    monkeypatch: pytest.MonkeyPatch, speeds: dict[str, float], loads: list[tuple[int, int, float]]
) -> list[list[str]]:
    """A CPU with native bf16 whose format search measures `speeds` (0 for a format not in it) and whose
    `free_cores()` samples are `loads` in turn (the last one repeating). Returns the searches' formats."""
    searches: list[list[str]] = []

    def search(model, batch_shape, num_classes, precisions, layouts, steps=5):  # noqa: ANN001, ANN202
        names = [str(Candidate(p, c)) for p in precisions for c in layouts]
        searches.append(names)
        return Candidate(None, False), {n: speeds.get(n, 0.0) for n in names}

    def free_cores() -> tuple[int, int, float]:
        return loads.pop(0) if len(loads) > 1 else loads[0]

    monkeypatch.setattr(autotune, "fastest_cpu_format", search)
    monkeypatch.setattr(autotune, "free_cores", free_cores)
    monkeypatch.setattr(autotune, "bf16_native", lambda device: True)
    return searches


@pytest.mark.parametrize(
    "entry",
    [
        dict.fromkeys(SPEEDS, 0.0),  # what issue 26's cache held
        {**SPEEDS, "bf16 channels_last": 0.0},
        {
            "speeds": dict.fromkeys(SPEEDS, 0.0),
            "measured_at": 1.0e9,
            "busy_cores": 0.0,
            "cores": 2,
            "threads": 2,
        },
    ],
)
def test_a_cached_ranking_with_zeros_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_threads: None, entry: dict
) -> None:
    searches = fake_machine(monkeypatch, SPEEDS, [QUIET])
    cache = tmp_path / "formats.json"
    cache.write_text(json.dumps({cache_key(): entry}))
    chosen = machine_format(BOTH, [False, True], cache)
    assert len(searches) == 1 and chosen.fresh and chosen.best == Candidate(torch.bfloat16, True)
    assert Ranking.from_json(json.loads(cache.read_text())[cache_key()]).speeds == SPEEDS


@pytest.mark.parametrize("measured", [{}, {"fp32 NCHW": 300.0, "fp32 channels_last": 400.0}])
def test_a_measurement_that_did_not_measure_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_threads: None, measured: dict[str, float]
) -> None:
    searches = fake_machine(monkeypatch, measured, [QUIET])
    cache = tmp_path / "formats.json"
    others = json.dumps({"another CPU | torch 2.0 | 4 threads": SPEEDS})
    cache.write_text(others)
    machine_format(BOTH, [False, True], cache)
    assert cache.read_text() == others, "no entry of zeros written"
    machine_format(BOTH, [False, True], cache)
    assert len(searches) == 2, "the next run measures again"


def test_a_provisional_ranking_is_measured_again_when_the_machine_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_threads: None
) -> None:
    cache = tmp_path / "formats.json"
    loads = [BUSY]
    searches = fake_machine(monkeypatch, {**SPEEDS, "fp32 NCHW": 900.0}, loads)  # a busy minute's ranking
    first = machine_format(BOTH, [False, True], cache)
    assert first.fresh and first.best == Candidate(None, False) and "provisional" in first.describe()
    assert Ranking.from_json(json.loads(cache.read_text())[cache_key()]).provisional, "cached, as provisional"
    assert machine_format(BOTH, [False, True], cache).best == Candidate(None, False)
    assert len(searches) == 1, "still busy: the provisional ranking is used, not measured again"

    loads[:] = [QUIET, BUSY]  # quiet when the run starts, busy again by the end of its measurement
    searches = fake_machine(monkeypatch, SPEEDS, loads)
    assert machine_format(BOTH, [False, True], cache).best == Candidate(None, False)
    assert len(searches) == 1, "measured again, but provisional again: the cached one stays"

    loads[:] = [QUIET]
    quiet = machine_format(BOTH, [False, True], cache)
    assert (
        quiet.fresh
        and quiet.best == Candidate(torch.bfloat16, True)
        and "provisional" not in quiet.describe()
    )
    assert not Ranking.from_json(json.loads(cache.read_text())[cache_key()]).provisional
    later = machine_format(BOTH, [False, True], cache)
    assert not later.fresh and later.best == Candidate(torch.bfloat16, True) and len(searches) == 2


@pytest.mark.parametrize(
    ("native", "expected"), [(True, Candidate(torch.bfloat16, True)), (False, Candidate(None, True))]
)
def test_with_nothing_measurable_the_choice_is_the_known_good_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_threads: None, native: bool, expected: Candidate
) -> None:
    """The real search, with every first step "too slow" (as on a busy machine): no ranking, no cache
    entry, and bf16 channels_last where bf16 is native, not the first format of a list of zeros."""
    monkeypatch.setattr(autotune, "MAX_STEP_SECONDS", 0.0)
    monkeypatch.setattr(autotune, "free_cores", lambda: QUIET)
    monkeypatch.setattr(autotune, "bf16_native", lambda device: native)
    cache = tmp_path / "formats.json"
    chosen = machine_format(BOTH, [False, True], cache)
    assert chosen.best == expected and chosen.ranking is None and not cache.exists()
    assert chosen.describe().startswith("not timed")
    assert machine_format(BOTH, [False], cache).best == Candidate(expected.amp_dtype, False), "where allowed"


def test_the_log_says_how_old_the_cached_ranking_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], two_threads: None
) -> None:
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path))
    three_days = time.time() - 3 * 86400 - 60
    entry = Ranking(SPEEDS, three_days, busy_cores=0.2, cores=2, threads=2)
    (tmp_path / "cpu_formats.json").write_text(json.dumps({cache_key(): entry.to_json()}))
    cfg = TrainConfig(data_root=str(FASHION), epochs=1, batch_size=16, limit=32, image_size=8, workers=0)
    bundle = load_data(cfg)
    runtime = Runtime(torch.device("cpu"), None, False)
    tuned = train_setup.tune_cpu_format(cfg, runtime, build_model(cfg, bundle), bundle)
    assert "on this machine (cached 3 days ago): " in capsys.readouterr().out
    assert tuned.channels_last, "fp32 channels_last beats fp32 NCHW in the cached ranking"


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

    monkeypatch.setattr(train_setup, "time_compiled", timed)
    img_s = images / COMPILE_MIN_SECONDS  # exactly the shortest run that is timed
    timings[:] = [CompileTiming(img_s, 1.25 * img_s, compile_s=COMPILE_MIN_SECONDS * 0.1)]  # saves 20%: 2x
    assert train_setup.choose_compile(cfg, runtime, model, bundle, img_s, shape).compile
    assert asked == [Candidate(torch.bfloat16, True)], "the run's own format is the one compiled"
    timings[:] = [CompileTiming(img_s, 1.25 * img_s, compile_s=COMPILE_MIN_SECONDS * 0.11)]
    assert not train_setup.choose_compile(cfg, runtime, model, bundle, img_s, shape).compile
    asked.clear()
    assert not train_setup.choose_compile(cfg, runtime, model, bundle, img_s * 1.01, shape).compile
    assert asked == [], "a shorter run is not timed at all"
    progressive = replace(cfg, progressive_from=4)  # new sizes every epoch: each would compile again
    assert not train_setup.choose_compile(progressive, runtime, model, bundle, img_s, shape).compile
    assert asked == [], "not timed with progressive resizing"


@pytest.mark.slow
def test_time_compiled_compiles_the_real_step() -> None:
    """A real torch.compile (tens of seconds on 2 cores): slow-marked."""
    timing = time_compiled(
        create_model("cifar_resnet20", in_channels=1), Candidate(None, False), (8, 1, 16, 16), 10
    )
    assert timing.compile_s > 0 and timing.eager_img_s > 0 and timing.compiled_img_s > 0
