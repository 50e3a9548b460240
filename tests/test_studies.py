"""The study runner on tiny real data: units recorded as they finish, finished units skipped, a report from
partial units, settings and commits never mixed silently, and the verdict statistics."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from resnets.experiments.stats import INCONCLUSIVE, REFUTES, SUPPORTS, lower, within
from resnets.experiments.studies import STUDIES, park, run_study, where
from resnets.experiments.studies import runner as runner_module
from resnets.experiments.studies.figure6 import (
    FIGURE6,
    NETS,
    RESNET110,
    SCHEDULE,
    report_resnet110,
    report_schedule,
)
from resnets.experiments.studies.runner import StudyResults
from resnets.models import get_entry
from resnets.train import run as run_module

CIFAR = Path(__file__).parent / "fixtures" / "cifar10"
TINY = {"epochs": 1, "limit": 40, "test_limit": 30, "batch_size": 20}


def tiny(study=FIGURE6, arms=("cifar_plain20", "cifar_resnet20")):  # noqa: ANN001, ANN201
    arms = tuple(a for a in study.arms if a.label in arms)
    return replace(study, recipe={**study.recipe, **TINY}, arms=arms, seeds=2)


@pytest.fixture
def commit(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A clean tree at a commit the test sets (the developer's own tree may be dirty)."""
    state = ["a" * 40]
    monkeypatch.setattr(runner_module, "git_state", lambda only=(): (state[0], False))
    return state


def folders(tmp_path: Path, name: str = "figure6"):  # noqa: ANN201
    return where(name, str(tmp_path / name), str(tmp_path / "work"), str(CIFAR))


def test_units_are_recorded_skipped_when_done_and_reported_when_partial(
    tmp_path: Path, commit: list[str]
) -> None:
    study, place = tiny(), folders(tmp_path)
    run_study(study, place, max_units=1, log=lambda _: None)
    units = sorted(p.name for p in place.units.iterdir())
    assert units == ["cifar_plain20-seed0.json"]  # seed-major: the first arm's first seed
    record = json.loads((place.units / units[0]).read_text())
    assert record["settings"]["model"] == "cifar_plain20" and record["settings"]["epochs"] == 1
    assert len(record["epochs"]) == 1 and record["test_images"] == 30
    assert len(record["measured"]["response_std"]) == 9  # Figure 7: one std per block of a 20-layer net
    assert record["source"]["commit"] == "a" * 40
    report = (place.out / "report.md").read_text()
    assert "1 of 4 units recorded" in report and "cifar_resnet20-seed0" in report
    assert "no unit of one side yet" in report and "**Verdict: inconclusive.**" in report
    assert (place.out / "figure6.png").stat().st_size > 1000

    before = (place.units / units[0]).stat().st_mtime_ns
    trained = []
    run_study(study, place, log=trained.append)
    assert [line.split()[2] for line in trained if "training" in line] == [
        "cifar_resnet20-seed0", "cifar_plain20-seed1", "cifar_resnet20-seed1"]  # fmt: skip
    assert (place.units / units[0]).stat().st_mtime_ns == before  # the finished unit was not trained again
    report = (place.out / "report.md").read_text()
    assert "4 of 4 units recorded; none missing" in report
    rows = report.split("### Per seed")[1].split("## Provenance")[0].strip().splitlines()[2:]
    assert [r.split(" | ")[:2] for r in rows] == [  # each unit's own row, by arm then seed
        ["| cifar_plain20", "0"], ["| cifar_plain20", "1"], ["| cifar_resnet20", "0"], ["| cifar_resnet20", "1"]]  # fmt: skip
    unit = json.loads((place.units / "cifar_resnet20-seed1.json").read_text())
    assert f"{100 * unit['test']['accuracy']:.2f}" == rows[3].split(" | ")[2]


def test_a_parked_unit_resumes_on_another_machine_as_if_never_stopped(
    tmp_path: Path, commit: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit killed after epoch 1 of 2 is parked, its work folder is lost (a new session), and the next worker
    resumes the parked copy: the record equals an uninterrupted unit's and the parked copy goes."""
    study = replace(tiny(arms=("cifar_plain20",)), recipe={**tiny().recipe, "epochs": 2, "precision": "fp32",
                                                          "compile": False}, seeds=1)  # fmt: skip
    whole = folders(tmp_path / "whole")
    run_study(study, whole, threads=1, log=lambda _: None)  # one thread: equal sums
    expected = json.loads((whole.units / "cifar_plain20-seed0.json").read_text())

    place, checked = folders(tmp_path / "split"), run_module.check_finite

    def killed_in_epoch_2(run, epoch, row):  # noqa: ANN001, ANN202
        if epoch == 2:
            raise KeyboardInterrupt  # the session ends
        checked(run, epoch, row)

    monkeypatch.setattr(run_module, "check_finite", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, place, threads=1, log=lambda _: None)
    assert park(study, place) == [
        f"cifar_plain20-seed0: parked after epoch 1 of 2 in {place.parked / 'cifar_plain20-seed0'}"
    ]
    metrics = (place.parked / "cifar_plain20-seed0" / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in metrics] == [
        "epoch",
        "1",
    ]  # the workers' status reads it on resume
    run_study(study, place, max_units=0)
    assert "missing: cifar_plain20-seed0 (parked after epoch 1 of 2)" in (place.out / "report.md").read_text()
    assert json.loads((place.out / "summary.json").read_text())["units"] == "0 of 1 (1 half-trained, parked)"
    shutil.rmtree(place.work)  # the work folder did not outlive the session
    monkeypatch.setattr(run_module, "check_finite", checked)

    trained = []
    run_study(study, place, threads=1, log=trained.append)
    record = json.loads((place.units / "cifar_plain20-seed0.json").read_text())
    assert record["resumed_after_epoch"] == 1 and expected["resumed_after_epoch"] == 0
    assert record["test"] == expected["test"]
    assert [e["train_loss"] for e in record["epochs"]] == [e["train_loss"] for e in expected["epochs"]]
    assert not place.parked.joinpath("cifar_plain20-seed0").exists()
    assert park(study, place) == []  # nothing unfinished is left to park


def test_figure7_reports_on_figure6s_units_and_trains_nothing(tmp_path: Path, commit: list[str]) -> None:
    run_study(tiny(), folders(tmp_path), max_units=2, log=lambda _: None)
    figure7 = tiny(STUDIES["figure7"])
    with pytest.raises(ValueError, match="trains nothing"):
        run_study(figure7, folders(tmp_path, "figure7"), log=lambda _: None)
    report = run_study(figure7, folders(tmp_path, "figure7"), max_units=0)
    text = report.read_text()
    assert report.parent.name == "figure7" and "mean response std" in text and "2 of " in text


def test_the_index_between_the_markers_is_rewritten_from_every_study(
    tmp_path: Path, commit: list[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Studies\n\nby hand\n\n{runner_module.INDEX_BEGIN}\nold\n{runner_module.INDEX_END}\n\nafter\n"
    )
    run_study(STUDIES["d2l"], folders(tmp_path, "d2l"), max_units=0)  # a report with no unit yet
    run_study(tiny(), folders(tmp_path), max_units=1, log=lambda _: None)
    text = readme.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [r.split("](")[1].split("/")[0] for r in rows] == [
        "figure6",
        "d2l",
    ]  # the registry's order, not a-z
    assert text.startswith("# Studies\n\nby hand") and text.endswith("after\n") and "old" not in text
    row = next(line for line in text.splitlines() if line.startswith("| [Figure 6"))
    assert "(figure6/report.md)" in row and "**inconclusive**" in row and "| 1 of 4 |" in row
    assert row.split(" | ")[2] == "test error: no unit yet"  # no ResNet unit yet: no Table 6 number


def test_other_settings_and_other_commits_are_refused_by_name(tmp_path: Path, commit: list[str]) -> None:
    place = folders(tmp_path)
    run_study(tiny(), place, max_units=1, log=lambda _: None)
    changed = replace(tiny(), recipe={**tiny().recipe, "lr": 0.05})
    with pytest.raises(
        ValueError, match=r"cifar_plain20-seed0.json was trained with other settings .*\(lr\)"
    ):
        run_study(changed, place, log=lambda _: None)
    commit[0] = "b" * 40
    with pytest.raises(ValueError, match="--mixed-commits"):
        run_study(tiny(), place, max_units=1, log=lambda _: None)
    run_study(tiny(), place, max_units=1, mixed_commits=True, log=lambda _: None)
    assert "Units from 2 commits: aaaaaaaaaa, bbbbbbbbbb" in (place.out / "report.md").read_text()


def test_a_record_older_than_an_option_reads_as_trained_with_its_old_behaviour(
    tmp_path: Path, commit: list[str]
) -> None:
    """A unit recorded before an option existed (crop_scale) trained as its default does; it still counts,
    and a study that sets the option otherwise refuses it by name."""
    place = folders(tmp_path)
    run_study(tiny(), place, max_units=1, log=lambda _: None)
    path = place.units / "cifar_plain20-seed0.json"
    record = json.loads(path.read_text())
    assert record["settings"]["crop_scale"] == 0.08
    del record["settings"]["crop_scale"]  # as the units recorded before the option was added
    path.write_text(json.dumps(record))
    assert "1 of 4 units recorded" in run_study(tiny(), place, max_units=0).read_text()
    changed = replace(tiny(), recipe={**tiny().recipe, "crop_scale": 0.5})
    with pytest.raises(ValueError, match=r"other settings .*\(crop_scale\)"):
        run_study(changed, place, max_units=0)


def test_a_regenerated_report_is_dirty_only_when_the_code_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing reports changes tracked files under docs/ each time; only uncommitted code (src/) makes a
    report's maker read as dirty, on a real git repository laid out as ours."""
    import subprocess

    from resnets import provenance

    package = tmp_path / "repo" / "src" / "resnets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (tmp_path / "repo" / "docs").mkdir()
    (tmp_path / "repo" / "docs" / "report.md").write_text("old\n")
    git = ["git", "-C", str(tmp_path / "repo"), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "one"]):
        subprocess.run(git + args, check=True)
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    (tmp_path / "repo" / "docs" / "report.md").write_text("regenerated\n")
    assert provenance.git_state()[1] is True and provenance.git_state(only=("src",))[1] is False
    (package / "__init__.py").write_text("x = 2\n")
    assert provenance.git_state(only=("src",))[1] is True


def unit_with(arm: str, seed: int, train_error: float, test_error: float) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "epochs": [{"train_acc": 1 - train_error}],
        "test": {"accuracy": 1 - test_error},
    }


def test_the_schedule_pilot_says_whether_the_short_schedule_keeps_each_ordering() -> None:
    """Figure 6's three orderings at 164 epochs against the 30-epoch units of the same seed: all kept
    supports the short schedule, one flipped refutes it, a missing unit leaves it open."""
    short = [unit_with("cifar_plain20", 0, 0.05, 0.11), unit_with("cifar_plain56", 0, 0.08, 0.13),
             unit_with("cifar_resnet20", 0, 0.05, 0.096), unit_with("cifar_resnet56", 0, 0.02, 0.085)]  # fmt: skip
    paper = [unit_with("cifar_plain20", 0, 0.02, 0.09), unit_with("cifar_plain56", 0, 0.06, 0.12),
             unit_with("cifar_resnet20", 0, 0.01, 0.088), unit_with("cifar_resnet56", 0, 0.004, 0.071)]  # fmt: skip
    kept = report_schedule(StudyResults(SCHEDULE, paper, [], short))
    assert (
        kept.verdict == SUPPORTS
        and "| 0 | plain20 < plain56 (train error, %) | 2.00 vs 6.00 | 5.00 vs 8.00 | kept |" in kept.body
    )
    assert (
        kept.headline == "164 epochs, test error: resnet20 8.80% (paper 8.75%); resnet56 7.10% (paper 6.97%)"
    )
    flipped = [
        u if u["arm"] != "cifar_resnet56" else unit_with("cifar_resnet56", 0, 0.004, 0.095) for u in paper
    ]
    changed = report_schedule(StudyResults(SCHEDULE, flipped, [], short))
    assert (
        changed.verdict == REFUTES
        and "(test error, %) | 9.50 vs 8.80 | 8.50 vs 9.60 | changed |" in changed.body
    )
    assert report_schedule(StudyResults(SCHEDULE, paper[:3], [], short)).verdict == INCONCLUSIVE


def test_resnet110_is_judged_against_resnet56_by_welchs_test_on_five_seeds_each() -> None:
    """Five seeds a side, 110 clearly lower: supported; the same numbers the other way: refuted; two seeds of
    110: too few to say (p >= 0.05)."""
    low = [
        unit_with("cifar_resnet110", s, 0.01, e) for s, e in enumerate([0.064, 0.066, 0.065, 0.067, 0.063])
    ]
    high = [
        unit_with("cifar_resnet56", s, 0.02, e) for s, e in enumerate([0.071, 0.073, 0.070, 0.072, 0.074])
    ]
    report = report_resnet110(StudyResults(RESNET110, low + high, []))
    assert report.verdict == SUPPORTS and "| cifar_resnet110 | 5 | 6.50 ± 0.16 |" in report.body
    swapped = [
        {**u, "arm": "cifar_resnet56" if u["arm"] == "cifar_resnet110" else "cifar_resnet110"}
        for u in low + high
    ]
    assert report_resnet110(StudyResults(RESNET110, swapped, [])).verdict == REFUTES
    assert report_resnet110(StudyResults(RESNET110, low[:1] + high, [])).verdict == INCONCLUSIVE
    assert RESNET110.settings(RESNET110.units()[0]) == FIGURE6.settings(
        FIGURE6.units(arms=["cifar_resnet56"])[0]
    )


def test_the_schedule_pilot_reads_figure6s_units_beside_its_own(tmp_path: Path, commit: list[str]) -> None:
    six = tiny(arms=("cifar_plain20", "cifar_plain56"))
    pilot = replace(SCHEDULE, recipe={**SCHEDULE.recipe, **TINY}, arms=six.arms, beside=six)
    run_study(six, folders(tmp_path), seeds=1, log=lambda _: None)
    report = run_study(pilot, folders(tmp_path, "figure6-schedule"), max_units=0).read_text()
    row = next(line for line in report.splitlines() if "| 0 | plain20 < plain56 (train error, %) |" in line)
    short = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "figure6" / "units").iterdir()}
    errs = [
        100 * (1 - short[f"{n}-seed0"]["epochs"][-1]["train_acc"]) for n in ("cifar_plain20", "cifar_plain56")
    ]
    assert (
        row
        == f"| 0 | plain20 < plain56 (train error, %) | – | {errs[0]:.2f} vs {errs[1]:.2f} | units missing |"
    )
    assert pilot.settings(pilot.units()[0])["schedule"] == "step" and SCHEDULE.recipe["epochs"] == 164


def test_a_unit_another_study_recorded_with_the_same_settings_is_reused_not_retrained(
    tmp_path: Path, commit: list[str]
) -> None:
    """Shortcut option A of ResNet-20 is the figure6 study's ResNet-20 (same recipe, same seed): reused."""
    run_study(tiny(arms=("cifar_resnet20",)), folders(tmp_path), seeds=1, log=lambda _: None)
    shortcuts = STUDIES["shortcuts"]
    shortcuts = replace(shortcuts, recipe={**shortcuts.recipe, **TINY})
    said = []
    run_study(shortcuts, folders(tmp_path, "shortcuts"), seeds=1, arms=["resnet20-A"], log=said.append)
    assert said[0] == ("shortcuts: resnet20-A-seed0 is the very unit figure6/units/cifar_resnet20-seed0.json "
                       "recorded: reused")  # fmt: skip
    assert said[1].startswith("shortcuts: resnet20-A-seed0 test accuracy ") and said[1].endswith("% reused")
    mine = json.loads((tmp_path / "shortcuts" / "units" / "resnet20-A-seed0.json").read_text())
    theirs = json.loads((tmp_path / "figure6" / "units" / "cifar_resnet20-seed0.json").read_text())
    assert (mine["arm"], mine["study"], mine["test"]) == ("resnet20-A", "shortcuts", theirs["test"])
    assert not (tmp_path / "work" / "resnet20-A-seed0").exists()  # nothing was trained
    assert (
        "(reused: figure6/units/cifar_resnet20-seed0.json)"
        in (tmp_path / "shortcuts" / "report.md").read_text()
    )


def test_a_dirty_tree_adds_no_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "git_state", lambda only=(): ("c" * 40, True))
    with pytest.raises(ValueError, match="uncommitted changes"):
        run_study(tiny(), folders(tmp_path), max_units=1, log=lambda _: None)


def test_verdicts_come_from_welchs_test() -> None:
    low, high = [0.080, 0.082, 0.081], [0.090, 0.091, 0.089]
    assert lower(low, high)[0] == SUPPORTS and lower(low, high)[1].p < 0.001
    assert lower(high, low)[0] == REFUTES
    named = lower(low, high, ("ResNet-56", "ResNet-20"))[1].text()  # the text says what is subtracted
    assert named.startswith("ResNet-56 minus ResNet-20 -0.90 points (95% CI") and "p = " in named
    assert lower([0.08, 0.09, 0.07], [0.081, 0.092, 0.069])[0] == INCONCLUSIVE  # overlapping seeds
    assert lower([0.08], [0.09])[0] == INCONCLUSIVE  # one seed: nothing to test against
    # "under a point": a tight difference of 0.1 point passes; a 3-point one is refuted
    assert (
        within([0.081, 0.0812, 0.0808, 0.081, 0.0811], [0.080, 0.0801, 0.0799, 0.080, 0.0802], 0.01)[0]
        == SUPPORTS
    )
    assert within([0.11, 0.111, 0.109], [0.08, 0.081, 0.079], 0.01)[0] == REFUTES


def test_figure6_has_the_papers_nets_and_recipe() -> None:
    assert {a.label for a in FIGURE6.arms} == set(NETS) and FIGURE6.seeds >= 3
    order = [u.name for u in FIGURE6.units()]  # the nets the verdicts compare get all their seeds first
    assert order[:4] == [
        "cifar_plain20-seed0",
        "cifar_plain56-seed0",
        "cifar_resnet20-seed0",
        "cifar_resnet56-seed0",
    ]
    assert order[4:8] == [name.replace("seed0", "seed1") for name in order[:4]]
    assert {n.split("-")[0] for n in order[12:]} == {"cifar_resnet32", "cifar_resnet44"} and len(order) == 18
    r = FIGURE6.recipe
    assert (r["data"], r["crop_padding"], r["flip"], r["tta"], r["limit"], r["image_size"]) == (
        "cifar10", 4, True, False, None, None)  # fmt: skip


def folder_data(tmp_path: Path, test: str, classes: dict[str, str]) -> Path:
    """A tiny train/ + `test`/ image folder from the CIFAR-10 fixture's classes, renamed."""
    root = tmp_path / "folder"
    for split, target in (("train", "train"), ("test", test)):
        for theirs, ours in classes.items():
            shutil.copytree(CIFAR / split / theirs, root / target / ours)
    return root


@pytest.mark.parametrize("name", ["shortcuts", "d2l", "fastbook", "chest-xray"])
def test_each_study_trains_a_unit_and_reports_on_tiny_data(
    tmp_path: Path, commit: list[str], name: str
) -> None:
    study = STUDIES[name]
    small = {
        "image_size": None if name == "shortcuts" else 32,
        "test_limit": None if name == "chest-xray" else 30,
        **({"freeze_epochs": 1} if name == "fastbook" else {}),  # fine_tune's two phases, one epoch each
    }
    study = replace(study, recipe={**study.recipe, **TINY, **small})
    data = {
        "shortcuts": lambda: CIFAR,
        "d2l": lambda: CIFAR.parent / "fashion-mnist",
        "fastbook": lambda: folder_data(
            tmp_path, "val", {"cat": "n02123045", "dog": "n02085620", "ship": "n03673027"}
        ),
        "chest-xray": lambda: folder_data(tmp_path, "test", {"cat": "NORMAL", "dog": "PNEUMONIA"}),
    }[name]()
    loaders = 1 if name == "chest-xray" else 0  # a GPU run's data-loading processes: a machine setting
    place = where(name, str(tmp_path / name), str(tmp_path / "work"), str(data), loader_workers=loaders)
    report = run_study(study, place, max_units=2, log=lambda _: None).read_text()
    assert f"2 of {len(study.arms) * study.seeds} units recorded" in report
    assert "**Verdict: supports.**" not in report  # two tiny units cannot show these claims
    records = [json.loads(p.read_text()) for p in place.units.iterdir()]
    for r in records:  # the loading processes ran the unit without defining it
        assert "workers" not in r["settings"]
        assert json.loads((place.work / r["unit"] / "config.json").read_text())["workers"] == loaders
    if name == "shortcuts":  # B is set; A is the CIFAR net's own shortcut
        assert {r["arm"]: r["settings"]["shortcut"] for r in records} == {
            "resnet20-A": None,
            "resnet20-B": "B",
        }
        assert get_entry("cifar_resnet20").spec.shortcut == "A"
