"""Hostile input and faults: files that try to run code, runs that would overwrite each other, bad values.

Every case here reproduces a failure a user hit; each must end in one clear line and a non-zero exit (CLI)
or a named exception (API), with nothing run, nothing lost and nothing left behind."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import pickle
import random
import re
import resource
import shutil
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import resnets
from resnets import create_model, files
from resnets.cli import main
from resnets.data import load_dataset
from resnets.data.errors import DataError
from resnets.data.idx import read_idx
from resnets.deploy import export_model
from resnets.models.metadata import read_meta
from resnets.train import TrainConfig, fit
from resnets.train.checkpoint import load_state
from resnets.train.folder import RunFolder
from resnets.train.loop import model_spec


class _RunsCode:
    """A pickle payload that creates a marker file when unpickled, as an attacker's would run a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _cifar_batches(folder: Path, poison: object | None = None, labels: list[int] | None = None) -> Path:
    """A tiny torchvision-layout cifar-10-batches-py folder; `poison` is put into data_batch_3."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": labels or [0, 1, 2, 3]}
        if poison is not None and name == "data_batch_3":
            batch[b"extra"] = poison
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [c.encode() for c in "abcdefghij"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def test_clean_cifar_pickles_load(tmp_path: Path) -> None:
    root = tmp_path / "cifar10"
    _cifar_batches(root / "cifar-10-batches-py")
    bundle = load_dataset("cifar10", root, download=False)
    assert (len(bundle.train), len(bundle.test), bundle.classes[:2]) == (20, 4, ["a", "b"])


def test_cifar_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar10"
    _cifar_batches(root / "cifar-10-batches-py", poison=_RunsCode(marker))
    with pytest.raises(DataError, match="refused to load"):
        load_dataset("cifar10", root, download=False)
    assert not marker.exists()
    # the same payload through plain pickle would have run: the test's payload is real
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


def test_cifar_labels_out_of_range_are_named(tmp_path: Path) -> None:
    root = tmp_path / "cifar10"
    _cifar_batches(root / "cifar-10-batches-py", labels=[0, 1, 2, 12])
    with pytest.raises(DataError, match="outside the 10 classes"):
        load_dataset("cifar10", root, download=False)


def test_idx_labels_out_of_range_are_named(tmp_path: Path) -> None:
    def idx(array: np.ndarray) -> bytes:
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        return header + array.astype(np.uint8).tobytes()

    root = tmp_path / "fmnist"
    root.mkdir()
    images = np.zeros((4, 28, 28), np.uint8)
    for prefix, labels in (("train", [0, 1, 2, 11]), ("t10k", [0, 1, 2, 3])):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx(images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(np.array(labels)))
    with pytest.raises(DataError, match="labels outside 0-9"):
        load_dataset("fashion-mnist", root, download=False)


# ---------------------------------------------------------------- run folders: one owner, nothing overwritten

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
CIFAR = FIXTURES / "cifar10"
TINY = ["--data-root", str(FASHION), "--epochs", "1", "--batch-size", "16", "--limit", "32", "--test-limit",
        "32", "--image-size", "8", "--workers", "0", "--quiet"]  # fmt: skip


def tiny_config(out: Path, **overrides: object) -> TrainConfig:
    options = dict(data_root=str(FASHION), epochs=1, batch_size=16, limit=32, test_limit=32, image_size=8,
                   workers=0, quiet=True, out=str(out))  # fmt: skip
    return TrainConfig(**(options | overrides))


def cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "resnets", *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run, shared by the read-only cases below."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    fit(tiny_config(out))
    return out


def test_a_folder_in_use_is_refused_by_another_process(tmp_path: Path) -> None:
    out = tmp_path / "run"
    folder = RunFolder(out)
    folder.claim(resume=False, overwrite=False)  # this test process trains into it
    try:
        rc, _, err = finish(cli("train", *TINY, "--out", str(out)))
        assert rc == 2 and "is in use by another training process" in err, err
    finally:
        folder.release()
    assert fit(tiny_config(out)).epochs, "once released, the folder can be trained into"


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_two_runs_into_one_folder_leave_one_whole_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    runs = {seed: cli("train", *TINY, "--seed", seed, "--out", str(out)) for seed in ("1", "2")}
    results = {seed: finish(proc) for seed, proc in runs.items()}
    winners = [seed for seed, (rc, _, _) in results.items() if rc == 0]
    assert len(winners) == 1, results
    loser = next(seed for seed in results if seed not in winners)
    rc, _, err = results[loser]
    assert rc == 2 and ("in use by another" in err or "already holds a run" in err), err
    assert TrainConfig.load(out / "config.json").seed == int(winners[0])
    assert read_meta(out / "last.safetensors")["epoch"] == 1 and load_state(out)["epoch"] == 1
    assert not list(out.glob(".resnets-tmp-*"))


def test_a_new_run_never_replaces_a_finished_one_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(tiny_config(out, seed=1))
    before = digest(out / "last.safetensors")
    with pytest.raises(ValueError, match="already holds a run: continue it with --resume"):
        fit(tiny_config(out, seed=2))
    assert digest(out / "last.safetensors") == before and TrainConfig.load(out / "config.json").seed == 1
    (out / "notes.txt").write_text("mine")
    fit(tiny_config(out, seed=2), overwrite=True)
    assert TrainConfig.load(out / "config.json").seed == 2 and digest(out / "last.safetensors") != before
    assert (out / "notes.txt").read_text() == "mine", "--overwrite removed a file that is not the run's"


def test_only_our_own_files_are_ever_removed(tmp_path: Path) -> None:
    """A user's hidden and .tmp files survive a claim and --overwrite; our own killed writes' temporary
    folders (with what safetensors put in them) are swept; a folder whose config.json or report.md no run
    wrote is refused, not overwritten."""
    out = tmp_path / "run"
    out.mkdir()
    mine = {".env.tmpl": "SECRET=1", ".cache.tmp": "x", ".notes.md.abc.tmp.md": "y", "notes.txt": "z"}
    for name, text in mine.items():
        (out / name).write_text(text)
    killed = out / f"{files.TEMP_PREFIX}dead"
    killed.mkdir()
    (killed / ".tmpAB12cd").write_bytes(b"half a safetensors file")
    fit(tiny_config(out, seed=1))
    fit(tiny_config(out, seed=2), overwrite=True)
    assert {name: (out / name).read_text() for name in mine} == mine
    assert not killed.exists() and not list(out.glob(f"{files.TEMP_PREFIX}*"))

    user = tmp_path / "project"
    user.mkdir()
    (user / "config.json").write_text('{"mine": true}')
    (user / "report.md").write_text("# my report")
    for overwrite in (False, True):
        with pytest.raises(
            ValueError, match=r"holds config.json, report.md, which no resnets run there wrote"
        ):
            fit(tiny_config(user), overwrite=overwrite)
    assert (user / "config.json").read_text() == '{"mine": true}' and (
        user / "report.md"
    ).read_text() == "# my report"


def test_a_run_that_died_before_its_first_checkpoint_can_be_run_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    folder = RunFolder(out)
    folder.claim(resume=False, overwrite=False)  # a run that wrote its manifest, then died
    files.atomic_write_text(out / "config.json", tiny_config(out).to_json())
    folder.release()
    with pytest.raises(ValueError, match="stopped before its first checkpoint; start it again"):
        fit(resume=out)
    assert fit(tiny_config(out)).epochs  # the same command again, no --overwrite needed


def test_predict_never_writes_over_a_runs_files(trained_run: Path, tmp_path: Path) -> None:
    image = sorted((CIFAR / "test" / "cat").iterdir())[0]
    before = {name: digest(trained_run / name) for name in ("config.json", "results.json")}
    for name in before:
        rc, _, err = finish(cli("predict", str(trained_run), str(image), "--output", str(trained_run / name)))
        assert rc == 2 and f"is a file of the run in {trained_run}" in err, err
    assert {name: digest(trained_run / name) for name in before} == before
    rc, _, err = finish(
        cli("predict", str(trained_run), str(image), "--cam", str(trained_run / "tensorboard"))
    )
    assert rc == 2 and "--cam" in err, err


def test_cams_of_images_with_one_name_in_two_folders_are_both_kept(trained_run: Path, tmp_path: Path) -> None:
    for folder, cls in (("a", "cat"), ("b", "dog")):
        (tmp_path / folder).mkdir()
        shutil.copy(sorted((CIFAR / "test" / cls).iterdir())[0], tmp_path / folder / "x.png")
    cams = tmp_path / "cams"
    rc, _, err = finish(
        cli("predict", str(trained_run), str(tmp_path / "a"), str(tmp_path / "b"), "--cam", str(cams))
    )
    assert rc == 0, err
    written = sorted(p.name for p in cams.iterdir())
    assert written == ["a_x.cam.png", "b_x.cam.png"] and digest(cams / written[0]) != digest(
        cams / written[1]
    )


def test_resume_applies_safe_changes_and_refuses_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    fit(tiny_config(out))
    caller = tiny_config(out)
    assert main(["train", "--resume", str(out), "--lr", "0.3", "--cutout", "2"]) == 2
    assert "--cutout, --lr cannot change" in capsys.readouterr().err
    history = resnets.train(resume=out, epochs=2, quiet=True)
    assert [e["epoch"] for e in history.epochs] == [1, 2]
    assert TrainConfig.load(out / "config.json").epochs == 2 and load_state(out)["epoch"] == 2
    assert caller == tiny_config(out), "fit changed the caller's config"
    with pytest.raises(ValueError, match="already trained 2 epochs"):
        resnets.train(resume=out, epochs=1)
    tuned = tmp_path / "fine_tune"  # fastai's fine_tune: 2 + 1 epochs done, one more asked for (2 + 2)
    fit(tiny_config(tuned, freeze_epochs=2, epochs=1))
    history = resnets.train(resume=tuned, epochs=2, quiet=True)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"already trained 4 epochs: --freeze-epochs \(2\) \+ --epochs"):
        resnets.train(resume=tuned, epochs=1)


def test_export_never_lands_on_the_weights(trained_run: Path, capsys: pytest.CaptureFixture) -> None:
    weights = trained_run / "last.safetensors"
    before = digest(weights)
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(weights)]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    assert digest(weights) == before


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (ENOSPC while the data is flushed): the export raises, the previous file is intact."""
    target = tmp_path / "net.pt2"
    target.write_bytes(b"previous export")

    def disk_full(path: object, directory: bool = False) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "_fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_model(create_model("cifar_resnet20"), target, "pt2", (3, 8, 8))
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt2"]


def test_written_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = files.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_diverging_run_stops_and_saves_no_nonfinite_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="diverged"):
        fit(tiny_config(out, lr=1e6, label_smoothing=0.0))
    for name in ("last.safetensors", "last.safetensors"):
        if (out / name).exists():
            assert all(
                torch.isfinite(t).all() for t in load_file(out / name).values() if t.is_floating_point()
            )


def test_foreign_weights_keep_their_classifier(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 7-class torchvision-layout file: predict uses its trained classifier, the same answer every time."""
    weights = tmp_path / "seven.pth"
    torch.save(create_model("cifar_resnet20", num_classes=7).state_dict(), weights)
    image = next((CIFAR / "test" / "cat").iterdir())
    args = ["predict", str(weights), str(image), "--model", "cifar_resnet20"]
    assert main(args) == 0 and main(args) == 0
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first == second and len(re.findall(r"\d%", first)) == 5
    assert main([*args, "--num-classes", "10"]) == 2
    assert "predicts 7 classes, not 10" in capsys.readouterr().err


def test_predict_reads_folders_and_reports_bad_images_without_hiding_good_ones(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(sorted((CIFAR / "test" / "cat").iterdir())[:3]):
        shutil.copy(image, folder / f"{i}.png")
    (folder / "1.png").write_bytes(b"not a png")
    assert main(["predict", str(trained_run), str(folder)]) == 2
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == [str(folder / "0.png"), str(folder / "2.png")]
    assert err.count("\n") == 1 and str(folder / "1.png") in err


def test_a_killed_run_leaves_no_torn_file_and_resume_cleans_up(tmp_path: Path) -> None:
    """SIGKILL at random moments (seeded) once the run has started writing, each time resumed: every file
    present loads, and the finished run has no temporaries left."""
    out = tmp_path / "run"
    args = [*TINY, "--epochs", "4", "--limit", "1600", "--batch-size", "32"]
    rng = random.Random(0)
    proc, killed = cli("train", *args, "--out", str(out)), 0
    for _ in range(3):
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 3.0))
        killed += proc.poll() is None
        proc.kill()
        proc.wait()
        for weights in ("last.safetensors", "last.safetensors"):
            if (out / weights).exists():
                load_file(out / weights)
        if (out / "config.json").exists():
            TrainConfig.load(out / "config.json")
        if (
            out / "state.pt"
        ).exists():  # a run killed before its first checkpoint starts again (a slow machine)
            load_state(out)
            proc = cli("train", "--resume", str(out), "--quiet")
        else:
            proc = cli("train", *args, "--out", str(out), "--overwrite")
    rc, _, err = finish(proc)
    assert rc == 0, err
    assert killed >= 2, "the runs finished before they could be killed: make them longer"
    assert load_state(out)["epoch"] == 4 and not list(out.glob(".resnets-tmp-*"))


# ------------------------------------------------------------- bad input: one line, exit 2, no traceback


def safetensors_with(tmp: Path, **meta: str) -> Path:
    path = tmp / "w.safetensors"
    save_file(create_model("cifar_resnet20").state_dict(), path, metadata=meta)
    return path


def run_copy(tmp: Path, run: Path, edit: Callable[[Path], object]) -> Path:
    copy = tmp / "copy"
    shutil.copytree(run, copy)
    edit(copy)
    return copy


class _StatePayload:
    def __reduce__(self):
        return (print, ("ran",))


def one_class_folder(tmp: Path) -> Path:
    for split in ("train", "test"):
        shutil.copytree(CIFAR / split / "cat", tmp / "one" / split / "cat")
    return tmp / "one"


def renamed_classes(tmp: Path) -> Path:
    """The CIFAR fixture with other class names: same count, other data."""
    for split in ("train", "test"):
        for i, c in enumerate(sorted(p.name for p in (CIFAR / split).iterdir())):
            shutil.copytree(CIFAR / split / c, tmp / "other" / split / f"k{i}")
    return tmp / "other"


# (arguments given tmp_path and a finished run, text expected in the single error line)
HOSTILE: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "malformed weights metadata": (
        lambda tmp, run: [
            "predict",
            str(safetensors_with(tmp, model='"cifar_resnet20"', num_classes='"ten"')),
            str(CIFAR / "test"),
        ],  # fmt: skip
        "metadata 'num_classes' is 'ten'",
    ),
    "unknown spec override": (
        lambda tmp, run: ["train", *TINY, "--out", str(tmp / "r"), "--spec-overrides", '{"nope": 1}'],
        "nope",
    ),
    "spec override of the wrong type": (
        lambda tmp, run: ["train", *TINY, "--out", str(tmp / "r"), "--spec-overrides", '{"layers": "x"}'],
        "layers",
    ),
    "config.json with wrong types": (
        lambda tmp, run: [
            "train",
            "--resume",
            str(run_copy(tmp, run, lambda d: (d / "config.json").write_text('{"epochs": "many"}'))),
        ],  # fmt: skip
        "training option 'epochs' is 'many'; expected int",
    ),
    "empty state.pt": (
        lambda tmp, run: [
            "train",
            "--resume",
            str(run_copy(tmp, run, lambda d: (d / "state.pt").write_bytes(b""))),
        ],
        "state.pt is empty or damaged",
    ),
    "state.pt that runs code": (
        lambda tmp, run: [
            "train",
            "--resume",
            str(run_copy(tmp, run, lambda d: torch.save({"x": _StatePayload()}, d / "state.pt"))),
        ],  # fmt: skip
        "it holds objects that could run code",
    ),
    "lr-ratio zero": (lambda tmp, run: ["train", *TINY, "--lr-ratio", "0"], "lr_ratio"),
    "negative cutout": (lambda tmp, run: ["train", *TINY, "--cutout", "-2"], "cutout"),
    "negative weight decay": (lambda tmp, run: ["train", *TINY, "--weight-decay", "-1"], "weight_decay"),
    "negative warm-up": (lambda tmp, run: ["train", *TINY, "--warmup-epochs", "-1"], "warmup_epochs"),
    "negative grad-clip": (lambda tmp, run: ["train", *TINY, "--grad-clip", "-1"], "grad_clip"),
    "momentum 5": (lambda tmp, run: ["train", *TINY, "--momentum", "5"], "momentum must be in [0, 1)"),
    "export input size with the wrong channels": (
        lambda tmp, run: ["export", str(run), "--input-size", "3", "1", "1", "--out", str(tmp / "x.onnx")],
        "takes 1 channel(s)",
    ),
    "torchscript export": (lambda tmp, run: ["export", str(run), "--format", "torchscript"], "deprecated"),
    "one-class data set": (
        lambda tmp, run: ["train", *TINY, "--data", f"folder:{one_class_folder(tmp)}"],
        "classification needs at least two",
    ),
    "weights evaluated on other data with the same class count": (
        lambda tmp, run: ["evaluate", str(run), "--data", f"folder:{renamed_classes(tmp)}"],
        "evaluate on the data it was trained for",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_one_line(
    case: str,
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    make_args, expected = HOSTILE[case]
    argv = make_args(tmp_path, trained_run)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "ran" not in out, err
    assert lines[0].startswith(f"resnets {argv[0]}: error: ") and expected in lines[0], lines[0]
    assert "weights_only=False" not in err


def test_cli_flags_refuse_nonsense_counts(capsys: pytest.CaptureFixture) -> None:
    for argv in (["benchmark", "--batch-size", "0"], ["predict", "w", "x", "--top-k", "0"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and "must be a whole number >= 1" in capsys.readouterr().err


def test_conflicting_overrides_raise_wherever_a_spec_is_built() -> None:
    cfg = TrainConfig(model="cifar_resnet20", shortcut="C", spec_overrides={"shortcut": "B"})
    for build in (lambda: model_spec(cfg), lambda: create_model("cifar_resnet20", shortcut="C",
                                                                spec_overrides={"shortcut": "B"})):  # fmt: skip
        with pytest.raises(ValueError, match="conflicts with spec_overrides"):
            build()


# ------------------------------------------------- unbounded work: sizes checked, walks bounded, FIFOs skipped


def _idx_header(*dims: int) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def _gzip_bomb(path: Path, header: bytes, gigabytes: int = 1) -> Path:
    """A ~1 MB .gz of `header` then `gigabytes` GB of zeros: gzip members, one 64 MiB member compressed once
    and written 16 times per GB (gzip reads concatenated members as one stream), so it is made in a second."""
    zeros = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    with open(path, "wb") as f:
        f.write(gzip.compress(header, mtime=0))
        for _ in range(16 * gigabytes):
            f.write(zeros)
    return path


def test_an_idx_gzip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """A 1 MB .gz inflating to 1 GB: declaring 7.8 GB (over the cap, and more than 1 MB can inflate to) or
    declaring 784 KB and running on: refused, by name, in well under a second, with bounded memory."""
    cases = {
        "train-images-idx3-ubyte.gz": (_idx_header(10_000_000, 28, 28), "over the limit"),
        "t10k-images-idx3-ubyte.gz": (_idx_header(1000, 28, 28), "padded: more than"),
    }
    for name, (header, expected) in cases.items():
        bomb = _gzip_bomb(tmp_path / name, header)
        assert bomb.stat().st_size < 2 << 20
        tracemalloc.start()
        start = time.monotonic()
        try:
            with pytest.raises(DataError, match=expected) as refused:
                read_idx(bomb)
            elapsed, (_, peak) = time.monotonic() - start, tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert elapsed < 1.0 and peak < 64 << 20, (elapsed, peak)
        assert str(bomb) in str(refused.value) and "delete it" in str(refused.value)


def test_a_truncated_idx_file_is_named(tmp_path: Path) -> None:
    """Cut in the header, in the data or in the gzip stream: each error names the file and what to do."""
    real = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    cut = {
        "in-header": _idx_header(10_000, 28, 28)[:9],
        "in-data": real[:-100],
        "in-gzip.gz": gzip.compress(real, mtime=0)[:-300],
        "absurd-dims": _idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(16),
    }
    for name, data in cut.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError) as refused:
            read_idx(path)
        message = str(refused.value)
        assert str(path) in message and "delete it" in message, message
    root = tmp_path / "fmnist"
    root.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        shutil.copy(FASHION / f"{stem}.gz", root)
    (root / "t10k-labels-idx1-ubyte").write_bytes(real[:-1])
    with pytest.raises(DataError, match=re.escape(str(root / "t10k-labels-idx1-ubyte")) + " is truncated"):
        load_dataset("fashion-mnist", root, download=False)


_LIST_IMAGES = """import sys
from resnets.trained import expand_images
for given in sys.argv[1:]:
    print(given, *expand_images([given]), sep="\\n", end="\\n\\n")
"""


def test_walks_over_link_loops_end_and_give_each_image_once(tmp_path: Path) -> None:
    """A recursive glob or a folder holding one link loop, or two (glob.glob(recursive=True) never ends on
    two): each real image listed once, in seconds; a FIFO named like an image is not listed. One process
    walks the four (importing torch is most of its time), under a timeout in case a walk never ends."""
    names = ["x.png", "a/y.png", "a/b/z.png"]
    cases, expected = [], {}
    for loops in (1, 2):
        images = tmp_path / f"{loops}-loops"
        (images / "a" / "b").mkdir(parents=True)
        for name, source in zip(names, sorted((CIFAR / "test" / "cat").iterdir()), strict=False):
            shutil.copy(source, images / name)
        os.mkfifo(images / "a" / "w.png")
        for link in [images / "a" / "b" / "up", images / "a" / "back"][:loops]:
            link.symlink_to(images)
        for given in (f"{images}/**/*.png", str(images)):
            cases.append(given)
            expected[given] = sorted(str(images / name) for name in names)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _LIST_IMAGES, *cases], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    listed = {
        given: sorted(rest) for given, *rest in (block.split("\n") for block in out.strip().split("\n\n"))
    }
    assert listed == expected and time.monotonic() - start < 60, listed


def test_predict_over_a_link_loop_predicts_each_image_once(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for i, source in enumerate(sorted((CIFAR / "test" / "dog").iterdir())[:2]):
        shutil.copy(source, images / ("sub" if i else ".") / f"{i}.png")
    (images / "sub" / "loop").symlink_to(images)
    assert main(["predict", str(trained_run), f"{images}/**/*.png"]) == 0
    predicted = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert predicted == [str(images / "0.png"), str(images / "sub" / "1.png")], predicted


_READ_ALL = """import sys
from pathlib import Path
from resnets.data import load_dataset
from resnets.data.folder import UnreadableImage, read_image
root = Path(sys.argv[1])
bundle = load_dataset(f"folder:{root}", image_size=8)
samples = [str(p) for p, _ in bundle.train.samples]
assert all(bundle.train[i][0].shape == (3, 8, 8) for i in range(len(bundle.train)))
print(len(samples), sum(p.endswith("x.png") for p in samples))
print(len(load_dataset("cifar10", root, download=False).train))
try:
    read_image(root / "train" / "cat" / "x.png", 3)
except UnreadableImage as e:
    print("refused:", e.reason)
"""


def test_a_fifo_named_like_an_image_is_never_opened(tmp_path: Path) -> None:
    """A FIFO called x.png in a class folder (nothing ever writes to it) hung training forever: the folder
    and PNG-tree readers leave it out, and reading it by name is refused at once, in a subprocess with a
    timeout so that a hang fails the test."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            shutil.copytree(CIFAR / split / cls, root / split / cls)
    os.mkfifo(root / "train" / "cat" / "x.png")
    real = sum(len(list((CIFAR / "train" / cls).iterdir())) for cls in ("cat", "dog"))
    done = subprocess.run([sys.executable, "-c", _READ_ALL, str(root)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    refused = "refused: not a regular file (a FIFO, device or folder): move it out of the data"
    assert done.stdout.splitlines() == [f"{real} 0", str(real), refused], done.stdout


def test_an_image_size_that_cannot_fit_is_refused_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--image-size 100000 on folder data needs 309 GB for one image: refused with the largest size that fits
    before any image is decoded (here with 8 GB available), in the API and as one CLI line."""
    if resnets.data.load.available_memory() < 300 * 10**9:  # this machine's own memory
        with pytest.raises(DataError, match=r"--image-size 100000 needs 309\.0 GB for one 3-channel image"):
            load_dataset(f"folder:{CIFAR}", image_size=100_000)
    monkeypatch.setattr(resnets.data.load, "available_memory", lambda: 8 * 10**9)
    load_dataset(f"folder:{CIFAR}", image_size=3000)  # 0.28 GB an image: the data set itself is fine
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    argv = ["train", *TINY, "--data", f"folder:{CIFAR}", "--image-size", "100000", "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    line = capsys.readouterr().err.strip()
    largest = int(re.search(r"the largest size that fits is (\d+)", line).group(1))
    fits = resnets.data.load.image_bytes
    assert fits(largest, 3, True) <= 8 * 10**9 < fits(largest + 1, 3, True)
    assert "\n" not in line and "choose a smaller --image-size" in line, line
    assert time.monotonic() - start < 30 and grown < 1 << 20, grown


def test_a_full_disk_is_named_whatever_layer_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save on a full disk says "[enforce fail at inline_container.cc:672] unexpected pos": the user
    reads "No space left on device", the file's name, and that the old file is intact."""
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")

    def torch_on_a_full_disk(tmp: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 64 vs 0")

    monkeypatch.setattr(files.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError, match=rf"No space left on device while writing {target}"):
        files.atomic_write(target, torch_on_a_full_disk)
    assert target.read_bytes() == b"old" and not list(tmp_path.glob(f"{files.TEMP_PREFIX}*"))
    monkeypatch.setattr(files.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # space left: the error is not a full disk's
        files.atomic_write(target, torch_on_a_full_disk)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"freeze": True}, "--freeze trains the classifier on top of pretrained features: give --weights"),
        ({"crop_padding": 100}, "--crop-padding 100 is not smaller than the images (8x8 px)"),
    ],
)
def test_options_that_cannot_work_are_refused_before_training(
    tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(tiny_config(tmp_path / "run", **options))
    assert not (tmp_path / "run").exists()


def test_lr_find_checks_its_plot_path_before_the_test(
    trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    for out, message in (
        ("plot.txt", "write a .png, .pdf, .svg or .jpg plot"),
        (str(trained_run / "curves.png"), "is a file of the run"),
    ):
        started = time.perf_counter()
        assert main(["lr-find", "--data-root", str(FASHION), "--out", out]) == 2
        assert message in capsys.readouterr().err and time.perf_counter() - started < 2


def test_a_batch_whose_activations_cannot_fit_is_refused_before_training(tmp_path: Path) -> None:
    """--image-size 3000 on folder data was killed for memory at 24 GB with no message: now the set-up
    measures the model's activations per image and refuses the batch, naming both options."""
    started = time.perf_counter()
    rc, _, err = finish(cli("train", "--data", f"folder:{CIFAR}", "--model", "resnet18", "--image-size", "3000",
                            "--workers", "0", "--out", str(tmp_path / "run"), "--quiet"))  # fmt: skip
    assert rc == 2 and "of activations per image" in err and "lower --batch-size (at most" in err, err
    assert "or --image-size" in err and time.perf_counter() - started < 60
    assert not (tmp_path / "run").exists()


def test_nan_weights_are_refused_by_name_not_answered_as_nan(trained_run: Path, tmp_path: Path) -> None:
    weights = load_file(trained_run / "last.safetensors")
    weights["fc.weight"] = torch.full_like(weights["fc.weight"], float("nan"))
    bad = tmp_path / "nan.safetensors"
    save_file(
        weights,
        bad,
        metadata={k: json.dumps(v) for k, v in read_meta(trained_run / "last.safetensors").items()},
    )
    image = sorted((CIFAR / "test" / "cat").iterdir())[0]
    rc, out, err = finish(cli("predict", str(bad), str(image)))
    assert rc == 2 and "nan%" not in out and "holds non-finite weights (fc.weight)" in err, (out, err)


def test_a_damaged_cached_onnx_export_is_rebuilt_once() -> None:
    """One garbage or truncated file in the ONNX cache broke every later predict of that model and was never
    rebuilt: now it is exported again (once) and the answers are the model's."""
    pytest.importorskip("onnxruntime")
    from resnets.deploy import fuse_bn, prepare_for_inference, runtimes

    model = create_model("cifar_resnet20").eval()
    x = torch.randn(4, 3, 32, 32)
    path = files.cache_dir() / "onnx" / f"{runtimes.model_digest(fuse_bn(model), (3, 32, 32))}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage, not a protobuf\xff" * 40)
    with torch.no_grad():
        expected = model(x)
        with pytest.warns(UserWarning, match="damaged ONNX export"):
            out = prepare_for_inference(model, runtime="onnxruntime")(x)
        assert (out - expected).abs().max() < 1e-4 * expected.abs().max()
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # a half-written file, as a copy or a full disk leaves
        with pytest.warns(UserWarning, match="damaged ONNX export"):
            out = prepare_for_inference(model, runtime="onnxruntime")(x)
        assert (out - expected).abs().max() < 1e-4 * expected.abs().max()
    assert path.read_bytes() == whole  # the rebuilt export replaced the damaged one


def test_an_onnx_export_that_never_loads_is_named_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebuilt export that fails to load too: one error naming the file and the way out, after one export."""
    pytest.importorskip("onnxruntime")
    from resnets.deploy import fuse_bn, prepare_for_inference, runtimes

    model = create_model("cifar_resnet20").eval()
    path = files.cache_dir() / "onnx" / f"{runtimes.model_digest(fuse_bn(model), (3, 32, 32))}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not onnx")
    exports: list[Path] = []

    def broken_export(_model: object, target: Path, *_: object) -> Path:  # an exporter writing garbage
        exports.append(target)
        return files.atomic_write_bytes(target, b"still not onnx")

    monkeypatch.setattr(runtimes, "export_model", broken_export)
    served = prepare_for_inference(model, runtime="onnxruntime")
    try:
        with pytest.warns(UserWarning, match="damaged"), pytest.raises(RuntimeError) as error:
            served(torch.randn(1, 3, 32, 32))
    finally:
        path.unlink(missing_ok=True)  # (the session's cache: later tests export this model for real)
    assert exports == [path]  # rebuilt once, not in a loop
    message = str(error.value)
    assert f"cannot load {path}" in message and "--runtime compiled" in message
    assert message.index("--runtime compiled") < 400  # what to do survives the CLI's one-line cut


def test_names_that_are_not_utf8_are_kept_end_to_end(tmp_path: Path) -> None:
    """A class folder and an image whose names are not UTF-8 (Latin-1 bytes, as old archives hold): training
    writes its report (the name's own bytes), plots draw it, and predict writes every answer with the image's
    own path bytes."""
    cifar = os.fsencode(Path(__file__).parent / "fixtures" / "cifar10")
    root = os.fsencode(tmp_path / "data")
    try:
        for split in (b"train", b"test"):
            for source, name in ((b"cat", b"caf\xe9"), (b"dog", b"dog")):
                shutil.copytree(os.path.join(cifar, split, source), os.path.join(root, split, name))
        dogs = os.path.join(root, b"test", b"dog")
        os.rename(os.path.join(dogs, sorted(os.listdir(dogs))[0]), os.path.join(dogs, b"\xff\xfe.png"))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "run"
    data = f"folder:{os.fsdecode(root)}"
    assert main(["train", "--data", data, "--model", "cifar_resnet20", "--image-size", "8", "--epochs", "1",
                 "--batch-size", "8", "--workers", "0", "--quiet", "--out", str(out)]) == 0  # fmt: skip
    assert b"caf\xe9" in (out / "report.md").read_bytes() and (out / "confusion.png").is_file()
    assert read_meta(out / "last.safetensors")["classes"] == [os.fsdecode(b"caf\xe9"), "dog"]
    for suffix in (".csv", ".json"):
        answers = tmp_path / f"answers{suffix}"
        assert main(["predict", str(out), os.fsdecode(dogs), "--output", str(answers)]) == 0
        written = answers.read_bytes()
        assert (b"\xff\xfe.png" in written or b"\\udcff\\udcfe.png" in written) and written.count(
            b".png"
        ) == 5


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: create_model(18), "create_model(name=18): expected str, got int"),
        (lambda: create_model("resnet18", num_classes="10"), "create_model(num_classes='10'): expected int or None"),
        (lambda: create_model("resnet18", drop_rate="0.1"), "create_model(drop_rate='0.1'): expected float"),
        (lambda: create_model("resnet18", weights=5), "create_model(weights=5): expected str or Path or None"),
        (lambda: resnets.list_models(5), "list_models(pattern=5): expected str or None"),
        (lambda: resnets.summarize("resnet18"), "summarize(model='resnet18'): expected ResNet, got str"),
        (lambda: resnets.load(5), "load(path=5): expected str or Path, got int"),
        (lambda: resnets.deploy.prepare_for_inference("resnet18"), "prepare_for_inference(model='resnet18')"),
        (lambda: export_model(create_model("cifar_resnet20"), "x.onnx", "onnx", (3, "32", 32)),
         "export_model(input_size=(3, '32', 32)): expected tuple"),
    ],
)  # fmt: skip
def test_wrong_types_to_the_python_api_are_named_where_they_enter(
    call: Callable[[], object], named: str
) -> None:
    with pytest.raises(TypeError) as error:
        call()
    assert str(error.value).startswith(named), str(error.value)
