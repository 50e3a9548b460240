"""The GPU suite's dry run (every step at toy sizes on the CPU) and the CIFAR chunks it carries."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data import load_dataset

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
FASHION = Path(__file__).parent / "fixtures" / "fashion-mnist"
CIFAR_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cifar10"
FIGURE6_UNITS = Path(__file__).resolve().parent.parent / "docs" / "experiments" / "figure6" / "units"
sys.path.insert(0, str(SCRIPTS))

import gpu_suite  # noqa: E402 (a script, importable once scripts/ is on the path)
import pack_cifar  # noqa: E402
import pack_folder  # noqa: E402

STEPS = ["check_models", "check_learns", "check_learns_compiled", "check_export", "matmul_peak", "small_images", "train_eager", "infer_eager", "train_compiled",
         "infer_compiled", "tta_fashion_mnist", "tta_d2l", "tta_cifar10", "experiment:degradation"]  # fmt: skip

# the dry run's training runs: step, folder under runs/, test images
RUNS = [("check_learns", "learns", 64), ("tta_fashion_mnist", "tta_fashion_mnist", 64), ("tta_d2l", "tta_d2l", 64),
        ("tta_cifar10", "tta_cifar10", 20)]  # fmt: skip


def png_tree(root: Path, per_class: dict[str, int]) -> dict[tuple[str, str, str], np.ndarray]:
    """A CIFAR-like train/ + test/ tree of random 32x32 PNGs (two classes); returns the pixels by file."""
    rng = np.random.default_rng(0)
    written = {}
    for split, count in per_class.items():
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
                written[(split, name, str(i))] = pixels
    return written


def test_cifar_chunks_unpack_to_the_same_pixels(tmp_path: Path) -> None:
    pixels = png_tree(tmp_path / "png", {"train": 5, "test": 2})
    chunks = pack_cifar.pack(tmp_path / "png", tmp_path / "chunks", 4, 2, chunk_mib=45)
    assert [p.name for p in chunks] == ["cifar10-0.npz.xz"]
    pack_cifar.unpack(tmp_path / "chunks", tmp_path / "unpacked")
    bundle = load_dataset("cifar10", tmp_path / "unpacked")
    assert bundle.classes == ["cat", "dog"] and len(bundle.train) == 8 and len(bundle.test) == 4
    images, labels = bundle.train.on("cpu")
    # per class the first 4 files by name, in order: cat 0..3 then dog 0..3
    expected = [pixels[("train", c, str(i))].transpose(2, 0, 1) for c in ("cat", "dog") for i in range(4)]
    assert np.array_equal(images.numpy(), np.stack(expected))
    assert labels.tolist() == [0] * 4 + [1] * 4


def test_encoding_is_exact_and_small_for_smooth_images() -> None:
    ramp = np.broadcast_to(np.arange(32, dtype=np.uint8) * 7, (4, 3, 32, 32)).copy()
    ramp[:, 2] = 255 - ramp[:, 2]  # wraps around mod 256 when coded
    codes = pack_cifar.encode(ramp)
    assert np.array_equal(pack_cifar.decode(codes), ramp)
    assert len(np.unique(codes)) < 10  # a smooth ramp codes to a handful of values


def test_dry_run_measures_every_step(tmp_path: Path) -> None:
    png_tree(tmp_path / "png", {"train": 64, "test": 10})  # batch 128 fits
    pack_cifar.pack(tmp_path / "png", tmp_path / "chunks", 64, 10, chunk_mib=45)
    out = tmp_path / "out"
    code = gpu_suite.main(["--dry-run", "--out", str(out), "--data-root", str(FASHION),
                           "--cifar-root", str(tmp_path / "chunks")])  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    steps = result["steps"]
    assert list(steps) == STEPS
    assert {n: s["status"] for n, s in steps.items()} == dict.fromkeys(STEPS, "ok")
    assert code == 0
    assert steps["check_models"]["passed"] and steps["check_models"]["worst"] < 1e-8  # CPU vs CPU here
    assert steps["check_export"]["max_abs_diff"] < 1e-4
    assert steps["matmul_peak"]["tflops"]["bf16"] > 0
    for name in ("train_eager", "infer_eager", "train_compiled", "infer_compiled"):
        rows = steps[name]["rows"]
        assert {r["impl"].split("-")[0] for r in rows} == {"ours", "torchvision"}
        assert all(r["images_per_s"] > 0 and 0 < r["share_of_bf16_peak"] < math.inf for r in rows)
    assert {r["batch"] for r in steps["infer_eager"]["rows"]} == set(gpu_suite.DRY.infer_batches)
    assert steps["check_learns_compiled"]["passed"] is None  # CUDA graphs only on a GPU
    small = steps["small_images"]["rows"]  # no CUDA graphs on a CPU
    assert [r["impl"] for r in small] == ["read-each-step", "no-read", "train_one_epoch"]
    assert all(r["images_per_s"] > 0 and r["batch"] == gpu_suite.DRY.small_batches[0] for r in small)
    assert "| train_one_epoch | 4 |" in (out / "results.md").read_text()
    # one epoch each: the curve's one point (metrics.csv) is the best and the last, and it is what the final
    # evaluation (the run's results.json) found: on validation where the recipe splits one off (the paper's
    # CIFAR run), else on test; test accuracy is a count of the test images (64 of Fashion-MNIST, CIFAR's 20)
    for name, folder, test_images in RUNS:
        run, saved = steps[name], json.loads((out / "runs" / folder / "run" / "results.json").read_text())
        assert run["finished"] and run["epochs_done"] == 1 and run["train_seconds"] > 0, name
        curve_end = (saved["val"] or saved["test"])["accuracy"]
        assert run["best_acc"] == run["final_acc"] == pytest.approx(curve_end), name
        correct = saved["test"]["accuracy"] * test_images
        assert run["final_test"] == saved["test"] and correct == pytest.approx(round(correct), abs=1e-5), name
        assert f"final model {saved['test']['accuracy']:.2%}" in gpu_suite.headline_of(run)
    assert set(steps["tta_fashion_mnist"]["reached"]) == {"0.94", "0.95"}
    assert steps["tta_d2l"]["config"]["image_size"] == gpu_suite.DRY.d2l_side
    assert "Verdict" in steps["experiment:degradation"]["verdict"]
    table = (out / "results.md").read_text()
    assert all(f"| {name} | ok |" in table for name in STEPS)


def test_check_learns_passes_a_run_that_learns_and_fails_one_that_does_not(tmp_path: Path) -> None:
    """The dry run holds check_learns to nothing (DRY.learn_min_acc is 0). At sizes where the run learns
    (1024 images, 3 epochs, 256 test images) it beats chance (10%) by far and passes; the dry run's own
    one-epoch run, held to 50%, fails."""
    learns = replace(gpu_suite.DRY, limit=1024, test_limit=256, learn_epochs=3, learn_min_acc=0.4)
    record = gpu_suite.check_learns(learns, torch.device("cpu"), tmp_path / "a", str(FASHION), 300.0)
    assert record["passed"] and record["final_test"]["accuracy"] >= 0.4, record["headline"]
    strict = replace(gpu_suite.DRY, learn_min_acc=0.5)
    record = gpu_suite.check_learns(strict, torch.device("cpu"), tmp_path / "b", str(FASHION), 300.0)
    assert record["passed"] is False and record["headline"].endswith("learns: False")


def test_steps_that_do_not_fit_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """With no time left nothing runs, but every step is in the results with why it was skipped."""
    code = gpu_suite.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "-1", "--skip", "experiment"])
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert code == 0 and list(steps) == STEPS
    assert steps["experiment:degradation"]["reason"] == "--skip"
    assert all(
        s["status"] == "skipped" and "s left" in s["reason"] for n, s in steps.items() if n != STEPS[-1]
    )


# what the GPU machine's own Python lacks (docs/gpu.md: nothing is installed there)
NOT_ON_THE_GPU_MACHINE = ("simplejpeg", "torchao", "openvino")
BLOCKER = """
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
"""


def test_suite_imports_without_the_packages_the_gpu_machine_lacks(tmp_path: Path) -> None:
    """The suite runs from the source tree on a machine's own torch: importing it (and everything its steps and
    child runs import) must not need our optional or CPU-only dependencies."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(names=NOT_ON_THE_GPU_MACHINE))
    code = "import gpu_suite\nimport resnets.cli\nimport resnets.deploy\nimport simplejpeg"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (tmp_path, SCRIPTS, SCRIPTS.parent / "src")))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    # only the last line's import fails: the blocker works, and everything before it imported
    assert (
        'File "<string>", line 4, in <module>' in done.stderr
        and "No module named 'simplejpeg'" in done.stderr
    ), done.stderr


def test_child_runs_are_stopped_at_their_limit_and_failures_carry_stderr() -> None:
    start = time.monotonic()
    with pytest.raises(gpu_suite.TimedOut):
        gpu_suite.run_child(["-c", "import time; time.sleep(30)"], 1.0, None)
    assert time.monotonic() - start < 20
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        gpu_suite.run_child(["-c", "1 / 0"], 30.0, None)


def test_compiled_batch_sizes_only_while_the_reserve_is_left() -> None:
    sizes = replace(gpu_suite.DRY, compiled_batch_reserve_s=60.0, infer_batches=(2, 1))
    cpu = torch.device("cpu")
    fitted = gpu_suite.infer_throughput(sizes, cpu, 1.0, True, lambda: 61.0)
    assert [r["batch"] for r in fitted["rows"]] == [2, 2, 1, 1] and fitted["skipped"] == []
    late = gpu_suite.infer_throughput(sizes, cpu, 1.0, True, lambda: 59.0)
    assert late["rows"] == [] and late["headline"] == "no batch size fitted"
    assert [s.split(":")[0] for s in late["skipped"]] == ["batch 2", "batch 1"]


def test_gpu_study_dry_run_stops_at_its_deadline_and_brings_back_what_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/gpu_study.py on the CPU: the chunks stashed over two 'calls', one worker stopped at the
    deadline mid-unit and parked (to be resumed here), the epochs it gave counted, the
    unit's commit the one given (the device's tree has no .git)."""
    import gpu_study

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    png_tree(tmp_path / "png", {"train": 400, "test": 10})  # enough steps per epoch to outlast the deadline
    packed = pack_cifar.pack(tmp_path / "png", tmp_path / "packed", 400, 10, chunk_mib=45)
    cache, out = tmp_path / "cache", tmp_path / "out"
    for chunk in packed:  # one call each
        (tmp_path / "call" / chunk.stem).mkdir(parents=True)
        os.replace(chunk, tmp_path / "call" / chunk.stem / chunk.name)
        assert gpu_study.main(["stash", str(tmp_path / "call" / chunk.stem), "--cache", str(cache)]) == 0
    recorded = tmp_path / "recorded"  # what is committed: one finished unit, none parked
    (recorded / "units").mkdir(parents=True)
    shutil.copy(FIGURE6_UNITS / "cifar_resnet20-seed0.json", recorded / "units")
    argv = ["train", "figure6", "--out", str(out), "--commit", "0123abc", "--chunks", str(len(packed)),
            "--workers", "1", "--minutes", "0.4", "--arms", "cifar_resnet32", "--seeds", "1", "--device", "cpu",
            "--cache", str(cache), "--stagger", "0", "--recorded", str(recorded)]  # fmt: skip
    assert gpu_study.main(argv) == 0
    result = json.loads((out / "throughput.json").read_text())
    unit = result["units"]["cifar_resnet32-seed0"]
    assert not unit["finished"] and 1 <= unit["epochs"] < 30 and result["epochs"] == unit["epochs"]
    parked = out / "figure6" / "parked" / "cifar_resnet32-seed0"  # to commit: any later worker resumes it
    state = torch.load(parked / "state.pt", weights_only=True)
    assert state["epoch"] == unit["epochs"] and (parked / "config.json").is_file()
    assert json.loads((parked / "parked.json").read_text())["epoch"] == unit["epochs"]
    assert (out / "figure6" / "units" / "cifar_resnet20-seed0.json").is_file()  # the recorded ones, skipped
    assert result["new_units"] == []
    env = os.environ | {"RESNETS_SOURCE_COMMIT": "0123abc", "GIT_DIR": str(tmp_path / "no-git")}
    code = "from resnets.provenance import git_state; print(git_state())"
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "('0123abc', None)"  # what the workers' units record as their commit


def test_the_worker_count_is_measured_not_assumed() -> None:
    """--workers auto: N probe processes train the first pending unit's net on its real batches, each phase
    with more of them (here N = 1 then 2, on the CPU fixture), and the fewest within 5% of the best win."""
    import gpu_study

    args = argparse.Namespace(study="figure6", probe=[1, 2, 4], probe_seconds=0.5, device="cpu")
    found = gpu_study.probe(args, CIFAR_FIXTURE, "cifar_resnet20-seed3", most=2)  # 2 units left: N <= 2
    assert set(found["images_per_s"]) == {1, 2} and found["images_per_s"][1] >= 256  # a batch, at least
    assert found["chosen"] == gpu_study.fewest_near_best(found["images_per_s"])
    assert gpu_study.fewest_near_best({1: 100.0, 2: 180.0, 4: 190.0, 8: 185.0}) == 4  # 180 < 95% of 190
    assert gpu_study.fewest_near_best({1: 100.0, 2: 98.0}) == 1  # a second process that gains nothing


def test_a_folder_data_set_travels_in_chunks_and_arrives_byte_for_byte(tmp_path: Path) -> None:
    """pack_folder.py splits a folder of images into tar chunks under the size asked, gpu_study.py stashes
    them over several 'calls' and unpacks every file unchanged; a missing chunk or an oversized file is named."""
    import gpu_study

    src = Path(__file__).parent / "fixtures" / "cifar10"
    chunks = pack_folder.pack(src, tmp_path / "packed", chunk_mib=0.3)
    assert len(chunks) >= 3 and all(c.stat().st_size <= 0.3 * 2**20 for c in chunks)
    cache = tmp_path / "cache"
    for chunk in chunks[:-1]:
        call = tmp_path / "call" / chunk.stem
        call.mkdir(parents=True)
        shutil.copy(chunk, call)
        gpu_study.stash(call, cache)
    with pytest.raises(SystemExit, match=f"{len(chunks) - 1} of {len(chunks)} chunks stashed"):
        gpu_study.unpacked(cache, len(chunks))
    gpu_study.stash(chunks[-1].parent, cache)
    data = gpu_study.unpacked(cache, len(chunks))
    originals = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file()) == originals
    assert all((data / f).read_bytes() == (src / f).read_bytes() for f in originals)
    with pytest.raises(ValueError, match="larger than a chunk"):
        pack_folder.pack(src, tmp_path / "small", chunk_mib=0.001)


def test_worker_status_tells_training_from_stopped_units_and_the_time_left(tmp_path: Path) -> None:
    """study_workers.py status: a run folder a process holds (the training lock) is training, one nobody
    holds is stopped; the time left is the epochs left (fine_tune's both phases) at the median epoch."""
    import fcntl

    import study_workers

    run = tmp_path / "cifar_resnet56-seed0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"freeze_epochs": 3, "epochs": 27}))  # fine_tune: 3 + 27
    rows = "".join(f"{e},{s}\n" for e, s in ((1, 300.0), (2, 280.0), (3, 290.0)))
    (run / "metrics.csv").write_text("epoch,seconds\n" + rows)
    assert study_workers.unit_status(run, recorded=False) == (
        "cifar_resnet56-seed0: stopped, epoch 3 of 30, median epoch 290 s, ~130 min left"
    )
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as `resnets train` holds its run folder
    try:
        assert study_workers.unit_status(run, recorded=False).startswith(
            "cifar_resnet56-seed0: training, epoch 3"
        )
    finally:
        os.close(fd)
    assert study_workers.unit_status(run, recorded=True) == "cifar_resnet56-seed0: recorded, epoch 3 of 30"
