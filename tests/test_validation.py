"""The validation protocol: validation selects (best checkpoint, early stop, thresholds), test only reports,
evaluated once; the metrics medical users need, checked against cases computed by hand."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets.cli import main
from resnets.data import load_dataset
from resnets.data.errors import DataError
from resnets.train import TrainConfig, fit
from resnets.train import run as run_module
from resnets.train.metrics import EvalResult, MetricAccumulator

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
CIFAR = FIXTURES / "cifar10"


def tiny(out: Path, **overrides: object) -> TrainConfig:
    options = dict(data_root=str(FASHION), epochs=2, batch_size=16, limit=64, test_limit=64, image_size=8,
                   workers=0, quiet=True, out=str(out), val_split=0.1)  # fmt: skip
    return TrainConfig(**(options | overrides))


def result_of(probs: list[list[float]], targets: list[int]) -> EvalResult:
    acc = MetricAccumulator(len(probs[0]))
    p = torch.tensor(probs)
    acc.update(p.log(), torch.tensor(targets), 0.0)
    return acc.result()


def test_binary_metrics_match_hand_computed_values() -> None:
    # scores of the positive class: negatives 0.1, 0.4; positives 0.35, 0.8
    r = result_of([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]], [0, 0, 1, 1])
    # of the 4 (negative, positive) pairs, 3 rank the positive higher: AUC 3/4
    assert r.roc_auc == pytest.approx(0.75)
    # AP: positives found at ranks 1 (precision 1) and 3 (precision 2/3): (1 + 2/3) / 2
    assert r.pr_auc == pytest.approx((1 + 2 / 3) / 2)
    # argmax predictions: 0, 0, 0, 1 -> recall 1.0 (class 0) and 0.5 (class 1)
    assert r.balanced_accuracy == pytest.approx(0.75) and r.top1 == pytest.approx(0.75)
    f1_neg, f1_pos = 2 * (2 / 3) * 1 / (2 / 3 + 1), 2 * 1 * 0.5 / 1.5
    assert r.macro_f1 == pytest.approx((f1_neg + f1_pos) / 2)
    op = r.operating_point(positive=1, threshold=0.3)  # says positive for 0.4, 0.35, 0.8
    assert (op.sensitivity, op.specificity) == (pytest.approx(1.0), pytest.approx(0.5))
    # J = tpr - fpr: 0.5 at 0.8 (first reached, kept), 0 at 0.4, 0.5 at 0.35
    assert r.youden_threshold(1) == pytest.approx(0.8)
    assert r.score("loss") == -r.loss and r.score("roc_auc") == r.roc_auc


def test_multiclass_auc_is_one_vs_rest_macro() -> None:
    probs = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]]
    r = result_of(probs, [0, 1, 2, 1])
    # class 0: its positive (0.7) beats all 3 negatives -> 1; class 1: positives 0.5, 0.4 vs negatives 0.2,
    # 0.3 -> 4/4; class 2: positive 0.6 beats 0.1, 0.3, 0.1 -> 1
    assert r.roc_auc == pytest.approx(1.0)
    # class 0: positive 0.5 beats 0.2 and 0.1, not 0.7 -> 2/3; class 1: positives 0.2, 0.5 against
    # negatives 0.3, 0.4 -> 2 of 4 pairs; class 2: 0.6 beats 0.1, 0.3, 0.1 -> 1
    r = result_of(probs, [1, 1, 2, 0])
    assert r.roc_auc == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def test_validation_selects_and_test_is_evaluated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scripted validation scores: best at epoch 2, early stop after 2 epochs without a better one. The
    test split is evaluated exactly once, on the epoch-2 weights."""
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.9])
    loaders: list[tuple[str, object]] = []  # (split, loader) in the order the run made them
    real_evaluate, real_loader = run_module.evaluate, run_module.eval_loader

    def scripted(model, loader, num_classes, runtime, tta=False):  # noqa: ANN001, ANN202
        result = real_evaluate(model, loader, num_classes, runtime, tta)
        if loader is loaders[0][1]:  # the per-epoch validation loader
            result.top1 = next(scores)
        return result

    def spy(run, split):  # noqa: ANN001, ANN202
        loaders.append((split, real_loader(run, split)))
        return loaders[-1][1]

    monkeypatch.setattr(run_module, "evaluate", scripted)
    monkeypatch.setattr(run_module, "eval_loader", spy)
    out = tmp_path / "run"
    history = fit(tiny(out, epochs=6, early_stop=2))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"], "early stop after 2 epochs without improvement"
    assert all(r["test_acc"] == "" for r in rows), "test evaluated during training"
    assert [split for split, _ in loaders] == ["val", "val", "test"]  # epochs, then the final model once
    assert history.best_epoch == 2 and history.best_acc == pytest.approx(0.7)
    results = json.loads((out / "results.json").read_text())
    assert results["best_epoch"] == 2 and results["test"]["accuracy"] == pytest.approx(history.test_acc)
    best, last = load_file(out / "best.safetensors"), load_file(out / "last.safetensors")
    assert any(not torch.equal(best[k], last[k]) for k in best)
    assert all(torch.equal(v, history.model.state_dict()[k].cpu()) for k, v in best.items())


def test_eval_every_evaluates_some_epochs_and_selects_among_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--eval-every 2 over 7 epochs: validation after epochs 2, 4, 6 and the last (7) only. Scripted scores
    make epoch 2 the best. Patience counts epochs, not evaluations: with --early-stop 3 the run stops after
    epoch 6 (4 epochs since the best), where evaluating every epoch would have stopped after epoch 5."""
    queue: list[float] = []  # scripted per-epoch validation scores; the final evaluations come after
    real_evaluate = run_module.evaluate

    def scripted(model, loader, num_classes, runtime, tta=False):  # noqa: ANN001, ANN202
        result = real_evaluate(model, loader, num_classes, runtime, tta)
        if queue:
            result.top1 = queue.pop(0)
        return result

    monkeypatch.setattr(run_module, "evaluate", scripted)
    out = tmp_path / "run"
    queue[:] = [0.8, 0.6, 0.5, 0.4]
    history = fit(tiny(out, epochs=7, eval_every=2))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["val_acc"] != "" for r in rows] == [False, True, False, True, False, True, True]
    assert history.best_epoch == 2 and json.loads((out / "results.json").read_text())["best_epoch"] == 2
    queue[:] = [0.8, 0.6, 0.5]
    stopped = fit(tiny(tmp_path / "stop", epochs=7, eval_every=2, early_stop=3))
    assert [e["epoch"] for e in stopped.epochs] == [1, 2, 3, 4, 5, 6] and stopped.best_epoch == 2
    with pytest.raises(ValueError, match="eval_every is a number of epochs"):
        fit(tiny(tmp_path / "bad", eval_every=0))


def test_a_first_epoch_that_blows_up_says_so_and_points_to_lr_find(tmp_path: Path) -> None:
    """A finite blow-up (loss far above ln(classes), or chance accuracy) is named with what to do; a sane
    first epoch says nothing."""
    with pytest.warns(UserWarning, match=r"epoch 1 looks like a learning rate too high .* `resnets lr-find`"):
        fit(tiny(tmp_path / "high", lr=2.0, epochs=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(tiny(tmp_path / "sane", lr=0.05, epochs=1, limit=256, image_size=16))


def test_options_that_need_validation_or_two_classes_are_refused(tmp_path: Path) -> None:
    for options, message in (
        ({"val_split": 0.0, "early_stop": 2}, "--early-stop selects on a validation split"),
        ({"val_split": 0.0, "monitor": "macro_f1"}, "--monitor selects on a validation split"),
        ({"positive": "Shirt"}, "must name one of two classes"),
        ({"threshold": 1.5}, "threshold is a probability"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(tiny(tmp_path / "run", **options))


def folder(root: Path, splits: tuple[str, ...]) -> Path:
    for split in splits:
        source = CIFAR / ("test" if split == "val" else split)
        for c in ("cat", "dog"):
            shutil.copytree(source / c, root / split / c)
    return root


@pytest.mark.parametrize(
    ("splits", "val_split", "sizes"),
    [
        (("train", "val", "test"), 0.0, ("train", "val", "test")),
        (("train", "test"), 0.25, ("train-carved", "carved", "test")),
        (("train", "val"), 0.0, ("train", None, "val")),
        (("train", "val"), 0.25, ("train-carved", "carved", "val")),  # val/ tests; validation from train/
    ],
)
def test_folder_layouts_give_validation_and_test(
    tmp_path: Path, splits: tuple[str, ...], val_split: float, sizes: tuple
) -> None:
    root = folder(tmp_path / "data", splits)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(f"folder:{root}", val_split=val_split, image_size=16)
    small = [w for w in caught if "too few to select" in str(w.message)]
    assert len(small) == (bundle.val is not None), "a validation split of a few images per class is named"
    count = {s: sum(1 for _ in (root / s).rglob("*.png")) for s in splits}
    expect = {
        "train": count.get("train"), "val": count.get("val"), "test": count.get("test"),
        "carved": round(count["train"] / 2 * val_split) * 2, None: None,
        "train-carved": count["train"] - round(count["train"] / 2 * val_split) * 2,
    }  # fmt: skip
    got = (len(bundle.train), None if bundle.val is None else len(bundle.val), len(bundle.test))
    assert got == tuple(expect[s] for s in sizes)


def test_val_and_test_folders_with_val_split_are_refused(tmp_path: Path) -> None:
    root = folder(tmp_path / "data", ("train", "val", "test"))
    with pytest.raises(DataError, match="has val/ and test/ folders: leave out val_split"):
        load_dataset(f"folder:{root}", val_split=0.2)


@pytest.mark.parametrize(
    ("splits", "val_split", "roles"),
    [
        (("train", "val", "test"), 0.0, "train/ trains, val/ validates, test/ tests"),
        (("train", "test"), 0.25, "train/ trains, test/ tests, 25% of train/ validates"),
        (("train", "val"), 0.0, "train/ trains, val/ tests (there is no test/), nothing validates"),
        ((), 0.25, "class folders: 25% held out to test, 25% of the rest to validate"),
    ],
)
def test_a_runs_first_line_states_each_folders_role(
    tmp_path: Path, splits: tuple[str, ...], val_split: float, roles: str, capsys: pytest.CaptureFixture
) -> None:
    root = folder(tmp_path / "data", splits) if splits else folder(tmp_path / "flat", ("train",)) / "train"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small validation splits
        fit(TrainConfig(data=f"folder:{root}", model="cifar_resnet20", image_size=8, epochs=1, batch_size=8,
                        workers=0, val_split=val_split, out=str(tmp_path / "run")))  # fmt: skip
    first = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training "))
    assert roles in first, first


def test_evaluate_takes_any_folder_of_class_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A bare folder of some of the model's classes is evaluated whole, its classes mapped by name; one
    with a class the model does not know is refused by name."""
    root = folder(tmp_path / "data", ("train", "test"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(TrainConfig(data=f"folder:{root}", model="cifar_resnet20", image_size=8, epochs=1, batch_size=32,
                        workers=0, quiet=True, out=str(tmp_path / "run")))  # fmt: skip
    dogs = tmp_path / "new" / "dog"
    shutil.copytree(CIFAR / "test" / "dog", dogs)
    assert main(["evaluate", str(tmp_path / "run"), "--data", f"folder:{dogs.parent}"]) == 0
    out = capsys.readouterr().out
    assert f"folder:{dogs.parent} test ({len(list(dogs.iterdir()))} images, single view)" in out
    confusion = out.split("confusion matrix")[1].splitlines()
    assert confusion[2].split()[0] == "dog" and sum(map(int, confusion[1].split()[1:])) == 0  # no cats
    shutil.copytree(CIFAR / "test" / "truck", tmp_path / "new" / "truck")
    with pytest.raises(DataError, match="has classes missing from .*: truck"):
        main(["evaluate", str(tmp_path / "run"), "--data", f"folder:{dogs.parent}", "--debug"])


def test_evaluate_reports_binary_metrics_on_either_split(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = folder(tmp_path / "data", ("train", "val", "test"))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="too few"):
        fit(TrainConfig(data=f"folder:{root}", model="cifar_resnet20", image_size=16, epochs=1, batch_size=8,
                        workers=0, quiet=True, out=str(out), positive="cat", monitor="roc_auc"))  # fmt: skip
    report = (out / "report.md").read_text()
    assert "Test sensitivity" in report and "chosen on validation by Youden's J" in report
    for split in ("val", "test"):
        assert main(["evaluate", str(out), "--data", f"folder:{root}", "--split", split, "--positive", "cat",
                     "--threshold", "0.3"]) == 0  # fmt: skip
        printed = capsys.readouterr().out
        assert (
            f"{split} (" in printed and "roc auc" in printed and "positive class cat: sensitivity" in printed
        )
    assert main(["evaluate", str(out), "--data", f"folder:{root}", "--positive", "horse"]) == 2
