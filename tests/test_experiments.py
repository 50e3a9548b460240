"""The experiments run end to end through the CLI at the tiny budget on the committed real-data subset, write
their reports, and measure what they are about."""

from __future__ import annotations

import csv
import json
import re
import shlex
import statistics
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import fields
from importlib import import_module
from pathlib import Path

import pytest
import torch
from scipy import stats

from resnets.cli import build_parser, main
from resnets.experiments import EXPERIMENTS, ExperimentOptions
from resnets.experiments.report import ordered, pm
from resnets.experiments.responses import response_stds
from resnets.experiments.stats import INCONCLUSIVE, REFUTES, SUPPORTS, combine
from resnets.experiments.studies import STUDIES
from resnets.experiments.training import PER_RUN
from resnets.models import count_macs, count_params, create_model
from resnets.models.blocks import ResidualBlock
from resnets.train import TrainConfig
from resnets.train.loop import model_spec

FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"
ROOT = Path(__file__).parents[1]
VERDICT = re.compile(r"\*\*Verdict: (supports|does not support|inconclusive)\.\*\*")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """Run an experiment once per module (tiny budget, one thread) and return its report folder."""
    threads = torch.get_num_threads()
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            out = tmp_path_factory.mktemp(name)
            argv = ["experiment", name, "--budget", "tiny", "--data-root", str(FASHION), "--out", str(out)]
            assert main([*argv, "--threads", "1"]) == 0
            done[name] = out
        return done[name]

    yield run
    torch.set_num_threads(threads)


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


# The verdict each experiment must reach at the tiny budget: claims about the models alone are decided by
# exact counts and shapes; claims about training cannot be decided after one epoch on 64-128 images.
TINY_VERDICTS = {
    "complexity": "supports",  # parameters and MACs against the paper's tables
    "resolution": "supports",  # GAP logits at every size, the flatten twin only at its own
    "gradients": "inconclusive",  # one seed: Welch's t-test needs two per net (the plain net's early gradients grow)
    "degradation": "inconclusive",  # the reference nets stay near chance: the comparison is noise
    "shortcuts": "inconclusive",
    "variants": "inconclusive",
    "responses": "inconclusive",
}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_writes_a_report(experiment: Callable[[str], Path], name: str) -> None:
    out = experiment(name)
    report = (out / "report.md").read_text()
    verdict = VERDICT.search(report)
    assert verdict and verdict.group(1) == TINY_VERDICTS[name], report[:600]
    for section in (
        "**Claim.**",
        "## Setup",
        "## Results",
        "## Provenance",
        "Machine:",
        "Seeds: 0",
        "Commit: `",
    ):
        assert section in report
    if (ROOT / ".git").exists():
        assert_reproducible(report, name)
    assert list(out.glob("*.png")) and list(out.glob("*.json")), "plots and raw numbers are written"
    for table in out.glob("*.csv"):
        with table.open() as f:
            assert len(list(csv.DictReader(f))) >= 1


def test_every_experiment_has_an_expected_tiny_verdict() -> None:
    assert set(TINY_VERDICTS) == set(EXPERIMENTS)


def is_count(fraction: float, total: int) -> bool:
    """Whether `fraction` is k / total for a whole k: an error measured on exactly `total` images."""
    return abs(fraction * total - round(fraction * total)) < 1e-6


def test_gradients_in_deep_plain_net_are_uneven_at_init(experiment: Callable[[str], Path]) -> None:
    """With BatchNorm, the deep plain net's early gradients do not shrink: they grow toward the input,
    by orders of magnitude more than in the residual twin, whose layers all get gradients of one order."""
    nets = read_json(experiment("gradients") / "ratios.json")
    deepest = max(n["depth"] for n in nets)
    plain, res = ({n["kind"]: n for n in nets if n["depth"] == deepest and n["phase"] == "init"}[k]
                  for k in ("plain", "resnet"))  # fmt: skip
    assert plain["first"] > 10 * res["first"]
    assert 0.5 < plain["last"] / res["last"] < 2  # the twins agree where the loss enters
    assert plain["first_over_last"] > 100 * res["first_over_last"]
    assert 0.1 < res["first_over_last"] < 100


def test_degradation_records_four_curves(experiment: Callable[[str], Path]) -> None:
    """The table's numbers are each run's own last metrics row and curve point, measured on the budget's
    128 training and 100 test images."""
    out = experiment("degradation")
    finals = read_json(out / "final.json")
    assert [f["model"] for f in finals] == [
        "cifar_plain20",
        "cifar_plain56",
        "cifar_resnet20",
        "cifar_resnet56",
    ]
    with (out / "curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    for final in finals:
        name = final["model"]
        with (out / "runs" / f"{name}-seed0" / "metrics.csv").open() as f:
            metrics = list(csv.DictReader(f))
        assert final["train_error"] == pytest.approx(1 - float(metrics[-1]["train_acc"]))
        assert final["test_error"] == pytest.approx(1 - float(metrics[-1]["test_acc"]))
        curve = [r for r in curves if r["model"] == name]
        assert [int(r["epoch"]) for r in curve] == [int(r["epoch"]) for r in metrics] == [1]
        assert float(curve[-1]["train_error"]) == pytest.approx(final["train_error"])
        assert final["test_images"] == 100 and is_count(final["test_error"], 100)
        assert is_count(final["train_error"], 128)
    config = json.loads((out / "runs" / "cifar_plain20-seed0" / "config.json").read_text())
    setup = (out / "report.md").read_text()
    assert f"peak lr {config['lr']:g}" in setup and f"{config['crop_padding']} px random crops" in setup


def test_resolution_runs_at_every_size_and_flatten_twin_only_at_one(
    experiment: Callable[[str], Path],
) -> None:
    result = read_json(experiment("resolution") / "sizes.json")
    rows = result["rows"]
    assert len(rows) >= 3
    assert all(re.fullmatch(r"\d+x10", r["gap_output"]) for r in rows)
    for r in rows:
        if r["size"] == result["native"]:
            assert re.fullmatch(r"\d+x10", r["flatten_output"])
        else:
            assert r["flatten_output"].startswith("error: mat1 and mat2 shapes cannot be multiplied")


def test_complexity_matches_the_paper(experiment: Callable[[str], Path]) -> None:
    result = read_json(experiment("complexity") / "complexity.json")
    assert len(result["paper"]) == 11
    assert all(abs(row["rel_error"]) < 0.05 for row in result["paper"])
    assert 1.0 < result["resnet50_v1_over_34"] < 1.1
    assert "does not support" not in (experiment("complexity") / "report.md").read_text()


def test_variants_are_matched_in_compute(experiment: Callable[[str], Path]) -> None:
    """Each row's parameters and MACs are those of the net it names, rebuilt here from the zoo; the ResNeXt
    rows' MACs are within 10% of v1.5's; accuracies are counts over the 64 test images."""
    result = read_json(experiment("variants") / "results.json")
    rows = {r["model"]: r for r in result["rows"]}
    assert {"v1", "v1.5", "v1d", "pre-act (v2)"} <= set(rows)
    resnext = [r for name, r in rows.items() if name.startswith("ResNeXt")]
    assert resnext and all(abs(r["mmacs"] / rows["v1.5"]["mmacs"] - 1) < 0.05 for r in resnext)
    verdict = next(line for line in (experiment("variants") / "report.md").read_text().splitlines()
                   if line.startswith("**Verdict"))  # fmt: skip
    caveats = verdict.split("test error of v1")[0]  # where nets off v1.5's MACs are named
    for name, row in rows.items():  # a net more than 3% from v1.5's MACs is named as not matched, no other
        named = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.'])", caveats) is not None
        assert named == (abs(row["mmacs"] / rows["v1.5"]["mmacs"] - 1) > 0.03), name
    for row in rows.values():
        overrides = dict(result["base_overrides"])
        if row["changes"]:  # "groups x base width"
            groups, width = (int(v) for v in row["changes"].split(" x "))
            overrides |= {"groups": groups, "base_width": width}
        net = create_model(row["zoo_model"], num_classes=10, in_channels=1, spec_overrides=overrides)
        assert row["params"] == count_params(net), row["model"]
        assert row["mmacs"] == pytest.approx(count_macs(net, (1, 8, 8)) / 1e6, rel=1e-3), row["model"]
        assert row["test_images"] == 64 and is_count(row["test_acc"], 64)


def test_shortcut_options_differ_in_parameters(experiment: Callable[[str], Path]) -> None:
    rows = read_json(experiment("shortcuts") / "results.json")
    params = [r["params"] for r in rows]
    assert params[0] == count_params(create_model("cifar_resnet20", num_classes=10, in_channels=1))
    assert params[0] < params[1] < params[2]


def test_verdict_helpers() -> None:
    assert combine([SUPPORTS, SUPPORTS]) == SUPPORTS
    assert combine([SUPPORTS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, REFUTES]) == REFUTES


def test_experiment_verdicts_come_from_welchs_test_not_the_spread_rule() -> None:
    """low < high is decided by Welch's t-test at p < 0.05: means further apart than the larger std (the old
    rule's "shown") at p > 0.05 are inconclusive; one seed decides nothing, whatever smallest effect is stated;
    a significant difference under the stated smallest effect does not count."""
    low, high = [0.10, 0.12, 0.11], [0.20, 0.21, 0.19]
    assert ordered(low, high) == SUPPORTS and ordered(high, low) == REFUTES
    low, high = [0.10, 0.12, 0.14], [0.13, 0.16, 0.19]  # means 0.12 and 0.16, stds 0.02 and 0.03
    assert statistics.fmean(high) - statistics.fmean(low) > max(statistics.stdev(low), statistics.stdev(high))
    assert stats.ttest_ind(low, high, equal_var=False).pvalue > 0.05
    assert ordered(low, high) == INCONCLUSIVE
    assert ordered([0.1], [0.9]) == INCONCLUSIVE and ordered([1.0], [2.0], floor=0.5) == INCONCLUSIVE
    low, high = [1.00, 1.01, 1.02], [1.10, 1.11, 1.12]
    assert ordered(low, high, floor=0.05) == SUPPORTS and ordered(low, high, floor=0.5) == INCONCLUSIVE
    assert pm([0.10, 0.12, 0.11], percent=True) == "11.0 ± 1.0%"


def test_every_recipe_pins_every_training_option() -> None:
    """Each training experiment's RECIPE sets every TrainConfig field that is not per run, so a new field
    or a changed default cannot change an experiment's result unnoticed."""
    names = {f.name for f in fields(TrainConfig)}
    recipes = {n: getattr(import_module(f"resnets.experiments.{n}"), "RECIPE", None) for n in EXPERIMENTS}
    recipes = {n: r for n, r in recipes.items() if r is not None}
    assert set(recipes) == {"degradation", "responses", "resolution", "variants", "shortcuts"}
    for name, recipe in recipes.items():
        assert set(recipe) | PER_RUN == names and not set(recipe) & PER_RUN, name


def test_options_resolve_budget_defaults_into_a_command_that_parses() -> None:
    cpu = ExperimentOptions(budget="cpu", out="docs/experiments/smoke/shortcuts").resolved("shortcuts")
    assert (cpu.data, cpu.seeds, cpu.seed_list) == ("cifar10", 3, [0, 1, 2])
    args = build_parser().parse_args(shlex.split(cpu.command("shortcuts"))[1:])
    assert (args.name, args.budget, args.data, args.seeds, args.out) == ("shortcuts", "cpu", "cifar10", 3,
                                                                         "docs/experiments/smoke/shortcuts")  # fmt: skip
    quick = ExperimentOptions(budget="quick").resolved("degradation")
    assert (quick.data, quick.seeds) == ("fashion-mnist", 1)
    assert ExperimentOptions(budget="cpu").resolved("gradients").data == "fashion-mnist"
    assert (
        ExperimentOptions(budget="cpu", data="fashion-mnist").resolved("degradation").data == "fashion-mnist"
    )


def test_responses_are_read_before_the_shortcut_is_added() -> None:
    """With every block's last BN set to a constant output (weight 0, bias 0.5), each response has std 0,
    although the blocks' outputs (shortcut added, ReLU) vary: the hook reads the residual function alone."""
    model = create_model("cifar_resnet20", num_classes=10, in_channels=1)
    for name, module in model.named_modules():
        if name.endswith(".bn2"):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.constant_(module.bias, 0.5)
    outputs: list[float] = []
    for block in (m for m in model.modules() if isinstance(m, ResidualBlock)):
        block.register_forward_hook(lambda _m, _i, out: outputs.append(out.std().item()))
    batches = [(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)) for _ in range(2)]
    stds = response_stds(model, batches)
    assert len(stds) == 9 and max(stds) < 1e-6
    assert len(outputs) == 18 and min(outputs) > 1e-3


def provenance(report: str) -> dict[str, str]:
    """The `- Key: value` lines of a report's `## Provenance` section (inline code unwrapped)."""
    block = report.split("## Provenance", 1)[1]
    lines = re.findall(r"^- ([A-Za-z ]+): (.*)$", block, re.MULTILINE)
    return {key.lower(): re.sub(r"^`([^`]*)`.*$", r"\1", value) for key, value in lines}


def test_committed_reports_name_their_commit_and_command() -> None:
    """Each report in docs/experiments with a provenance block names a commit in this repository's history
    and a command `resnets` parses; a report without one must be listed in docs/experiments/README.md as not
    yet re-run, so a new report without provenance fails here."""
    index = (ROOT / "docs" / "experiments" / "README.md").read_text()
    reports = sorted((ROOT / "docs" / "experiments").glob("*/report.md"))  # the full-scale studies
    reports += sorted((ROOT / "docs" / "experiments" / "smoke").glob("*/report.md"))
    assert reports
    if not (ROOT / ".git").exists():
        pytest.skip("no .git folder (an sdist or a copy): commits cannot be checked")
    for path in reports:
        text, name = path.read_text(), path.parent.name
        if (path.parent / "summary.json").is_file():  # a full-scale study: each unit names its source
            assert_study_reproducible(path.parent)
            continue
        if "## Provenance" not in text:
            assert re.search(
                rf"^\| \[{name}\]\(smoke/{name}/report\.md\) \| not yet re-run", index, re.MULTILINE
            ), name
            continue
        assert_reproducible(text, name)


def assert_reproducible(report: str, name: str) -> None:
    """The report's provenance names a commit of this repository and a `resnets experiment NAME` command."""
    record = provenance(report)
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]), (name, record["commit"])
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{record['commit']}^{{commit}}"])
    assert found.returncode == 0, f"{name}: commit {record['commit']} is not in this repository"
    argv = shlex.split(record["command"])
    args = build_parser().parse_args(argv[1:])
    assert (argv[0], args.command, args.name) == ("resnets", "experiment", name)


def assert_study_reproducible(folder: Path) -> None:
    """Every unit of a committed study names a commit of this repository and a `resnets study` command of a
    study that owns (or reads) this folder's units."""
    name = json.loads((folder / "summary.json").read_text())["name"]
    units = folder.parent / (STUDIES[name].reads or name) / "units"  # none yet: nothing to check
    for path in units.glob("*.json"):
        record = json.loads(path.read_text())
        source = record["source"]
        origin = record.get("reused_from", "").split("/")[
            0
        ]  # a unit reused from another study ran as that one's
        found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{source['commit']}^{{commit}}"])
        assert found.returncode == 0 and source["dirty"] is False, (path, source["commit"])
        argv = shlex.split(source["command"])
        args = build_parser().parse_args(argv[1:])
        assert (argv[0], args.command) == ("resnets", "study") and args.name in (
            name,
            STUDIES[name].reads,
            origin,
        )


def test_spec_overrides_from_json_build_a_smaller_net() -> None:
    cfg = TrainConfig(
        model="resnet50", spec_overrides={"stem": "cifar", "layers": [1, 1, 1], "widths": [8, 16, 32]}
    )
    spec = model_spec(cfg)
    assert spec.layers == (1, 1, 1) and spec.widths == (8, 16, 32) and spec.stem == "cifar"
    assert model_spec(TrainConfig(model="cifar_resnet20", shortcut="C")).shortcut == "C"


def test_resolution_with_weights_from_other_data_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Weights of a 2-class run against CIFAR-10's 10 classes: one line naming both, not an IndexError."""
    import shutil

    from resnets.train import TrainConfig, fit

    cifar = Path(__file__).parent / "fixtures" / "cifar10"
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            shutil.copytree(cifar / split / c, tmp_path / "data" / split / c)
    fit(TrainConfig(data=f"folder:{tmp_path / 'data'}", model="cifar_resnet20", image_size=8, epochs=1,
                    batch_size=8, workers=0, quiet=True, out=str(tmp_path / "run")))  # fmt: skip
    assert main(["experiment", "resolution", "--weights", str(tmp_path / "run"), "--data", "cifar10",
                 "--data-root", str(cifar), "--budget", "tiny", "--out", str(tmp_path / "exp")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert (
        "predicts 2 classes (cat, dog, ...) but cifar10 has 10 (airplane" in err and "IndexError" not in err
    )
