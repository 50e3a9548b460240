"""Named weights, offline: torchvision's and timm's names load from their libraries' caches with the network
blocked, a missing file fails in one line that says where to put it, and the weights' classes and
preprocessing reach `predict`. The cached files are random weights saved under the names the libraries use."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from resnets import create_model, list_models
from resnets.cli import main
from resnets.models import registry
from resnets.models.metadata import read_meta
from resnets.models.pretrained import Pretrained, resolve_weights_name
from resnets.models.registry import resolve_name
from resnets.train import TrainConfig, fit
from resnets.train.loop import build_model, load_data
from resnets.trained import load_trained

CIFAR = Path(__file__).parent / "fixtures" / "cifar10"
CAT = next((CIFAR / "test" / "cat").iterdir())
RESNET18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
REV = "0123456789abcdef0123456789abcdef01234567"  # a commit hash, as huggingface_hub names snapshots


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network at all, and empty torch.hub and Hugging Face caches in tmp_path (HF_HUB_OFFLINE=1)."""
    import huggingface_hub.constants as hf

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # huggingface_hub reads its variables once, at import: set them where it looks them up
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return tmp_path


@pytest.fixture
def resnet18_file(caches: Path) -> dict[str, torch.Tensor]:
    """torchvision's resnet18 IMAGENET1K_V1 in torch.hub's cache (random weights under its file name)."""
    state = torchvision.models.resnet18().state_dict()
    path = caches / "torch" / "hub" / "checkpoints" / Path(RESNET18.url).name
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def hf_snapshot(cache: Path, repo: str, rev: str) -> Path:
    """Where huggingface_hub keeps `repo`'s model.safetensors at `rev`, with refs/main pointing to it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(rev)
    (folder / "snapshots" / rev).mkdir(parents=True, exist_ok=True)
    return folder / "snapshots" / rev / "model.safetensors"


def test_torchvision_name_loads_the_cached_file_exactly(resnet18_file: dict[str, torch.Tensor]) -> None:
    """torch.hub checks the sha256 prefix in the name when it downloads, never on a cached file: so a random
    file under that name loads, with no network, and equals what was saved."""
    model = create_model("resnet18", weights="IMAGENET1K_V1")
    assert model.state_dict().keys() == resnet18_file.keys()
    assert all(torch.equal(v, resnet18_file[k]) for k, v in model.state_dict().items())
    record = model.pretrained
    assert record is not None and record.file is not None and record.file.name == "resnet18-f37072fd.pth"
    assert (record.source, record.url, record.accuracy) == ("torchvision", RESNET18.url, 69.758)
    assert (record.resize, record.crop, record.categories[207]) == (256, (224, 224), "golden retriever")


def test_default_is_torchvisions_default() -> None:
    assert resolve_weights_name("resnet18", "DEFAULT").name == "IMAGENET1K_V1"
    v2 = resolve_weights_name("resnet50", "DEFAULT")  # the newer recipe: evaluated at resize 232
    assert (v2.name, v2.resize, v2.crop, v2.accuracy) == ("IMAGENET1K_V2", 232, (224, 224), 80.858)


def test_missing_file_offline_says_where_to_put_it(caches: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "https://download.pytorch.org/models/resnet34-b627a593.pth"
    path = caches / "torch" / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    with pytest.raises(OSError, match="network blocked") as error:
        create_model("resnet34", weights="IMAGENET1K_V1")
    assert url in str(error.value) and f"put that file at {path}" in str(error.value)
    assert not path.exists() and "\n" not in str(error.value)
    capsys.readouterr()
    assert main(["predict", "IMAGENET1K_V1", "--model", "resnet34", str(CAT)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and url in err and str(path) in err
    # following the message works
    torch.save(torchvision.models.resnet34().state_dict(), path)
    assert create_model("resnet34", weights="IMAGENET1K_V1").pretrained.file == path


@pytest.mark.parametrize(
    ("model", "weights", "message"),
    [
        ("resnet18", "IMAGENET1K_V3", "unknown weights 'IMAGENET1K_V3' for resnet18: torchvision's are "
         "DEFAULT, IMAGENET1K_V1; timm's are timm:TAG (`resnets weights resnet18` lists them)"),
        ("cifar_resnet20", "DEFAULT", "cifar_resnet20 has no named weights (neither torchvision nor timm"),
        ("resnet50d", "IMAGENET1K_V1", "torchvision has no resnet50d); timm's are timm:a1_in1k"),
        ("resnet50d", "timm:nope", "timm has no weights 'nope' for resnet50d: it has timm:a1_in1k"),
    ],
)  # fmt: skip
def test_unknown_name_lists_the_valid_ones(model: str, weights: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        create_model(model, weights=weights)
    assert message in str(error.value)


def test_predict_names_imagenet_classes_and_uses_the_weights_preprocessing(
    resnet18_file: dict[str, torch.Tensor], caches: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    categories = RESNET18.meta["categories"]
    named = load_trained("IMAGENET1K_V1", "resnet18")
    assert named.classes == categories and (named.resize, named.image_size) == (256, (224, 224))
    assert named.mean == (0.485, 0.456, 0.406) and named.path == named.model.pretrained.file
    downloaded = load_trained(named.path, "resnet18")  # the torchvision file, known by its name
    assert downloaded.model.pretrained.name == "IMAGENET1K_V1" and downloaded.classes == categories
    other = caches / "resnet18.pth"  # any other 1000-class file without our metadata: ImageNet's classes
    torch.save(resnet18_file, other)
    assert load_trained(other, "resnet18").classes == categories
    assert main(["predict", "IMAGENET1K_V1", "--model", "resnet18", "--top-k", "3", str(CAT)]) == 0
    names = [part.rsplit(" ", 1)[0] for part in capsys.readouterr().out.split(": ", 1)[1].split(", ")]
    assert len(names) == 3 and all(name in categories for name in names), names


def test_fine_tuning_starts_from_named_weights(resnet18_file: dict[str, torch.Tensor], caches: Path) -> None:
    """`train --weights IMAGENET1K_V1`: the body is the weights', the classifier new for the data's classes,
    and the run's weights record what the name resolved to."""
    cfg = TrainConfig(model="resnet18", weights="IMAGENET1K_V1", data=f"folder:{CIFAR}", image_size=32,
                      epochs=1, batch_size=16, limit=32, test_limit=16, workers=0, quiet=True,
                      out=str(caches / "run"))  # fmt: skip
    with pytest.warns(UserWarning, match="IMAGENET1K_V1: classifier re-initialised for 10 classes"):
        model = build_model(cfg, load_data(cfg))
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], resnet18_file["layer4.1.conv2.weight"])
    assert model.num_classes == 10
    with pytest.warns(UserWarning, match="classifier re-initialised"):
        fit(cfg)
    assert read_meta(caches / "run" / "last.safetensors")["pretrained"] == RESNET18.url


def test_timm_name_loads_from_the_hugging_face_cache(caches: Path) -> None:
    timm = pytest.importorskip("timm")
    state = timm.create_model("resnet50d", pretrained=False).state_dict()
    file = hf_snapshot(caches / "hf", "timm/resnet50d.ra2_in1k", REV)
    save_file(state, str(file))
    model = create_model("resnet50d", weights="timm:ra2_in1k")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    record = model.pretrained
    assert (record.source, record.file, record.repo_id) == ("timm", file, "timm/resnet50d.ra2_in1k")
    assert (record.resize, record.crop, record.categories[207]) == (256, (224, 224), "golden retriever")


def test_timm_missing_file_offline_says_where_to_put_it(caches: Path) -> None:
    pytest.importorskip("timm")
    with pytest.raises(OSError) as error:
        create_model("resnet18d", weights="timm:ra2_in1k")
    message = str(error.value)
    folder = caches / "hf" / "models--timm--resnet18d.ra2_in1k"
    url = "https://huggingface.co/timm/resnet18d.ra2_in1k/resolve/main/model.safetensors"
    assert "\n" not in message and url in message
    assert f"put that file at {folder}/snapshots/local/model.safetensors" in message
    assert f"the word local in {folder}/refs/main" in message
    # following the message works
    save_file(
        create_model("resnet18d").state_dict(),
        str(hf_snapshot(caches / "hf", "timm/resnet18d.ra2_in1k", "local")),
    )
    assert create_model("resnet18d", weights="timm:ra2_in1k").pretrained.file.parent.name == "local"


def test_weights_command_lists_names_accuracy_size_and_cache(
    resnet18_file: dict[str, torch.Tensor], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "resnet50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    v1 = next(line for line in lines if "IMAGENET1K_V1" in line)
    v2 = next(line for line in lines if "IMAGENET1K_V2" in line)
    assert "76.13%" in v1 and "97.8 MB" in v1 and "no" in v1.split()
    assert "80.86%" in v2 and "DEFAULT" in v2
    assert any("timm:ra_in1k" in line for line in lines)
    assert main(["weights", "resnet18"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "IMAGENET1K_V1" in line)
    assert "yes" in row.split()
    assert main(["weights", "cifar_resnet20"]) == 0
    assert "cifar_resnet20: no named weights" in capsys.readouterr().out


def test_export_named_weights_writes_here(
    resnet18_file: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Named weights live in a library's cache: the export lands in the working folder, named after them."""
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "export",
                "IMAGENET1K_V1",
                "--model",
                "resnet18",
                "--format",
                "pt2",
                "--input-size",
                "3",
                "32",
                "32",
            ]
        )
        == 0
    )
    assert (tmp_path / "resnet18-IMAGENET1K_V1.pt2").is_file()
    assert json.loads((tmp_path / "resnet18-IMAGENET1K_V1.pt2.json").read_text())["classes"][:1] == ["tench"]


# ---- timm's vocabulary: pretrained=True, "model.tag" names ----


@pytest.fixture
def loaded(caches: Path, monkeypatch: pytest.MonkeyPatch) -> list[Pretrained]:
    """The weights `create_model` would load, recorded instead of fetched (no file, no network)."""
    records: list[Pretrained] = []
    monkeypatch.setattr(registry, "load_pretrained", lambda model, record: records.append(record))
    return records


def test_tagged_name_is_the_model_with_timms_weights() -> None:
    assert resolve_name("resnet50d.ra2_in1k") == ("resnet50d", "timm:ra2_in1k")
    assert resolve_name("resnet50d.ra2_in1k", pretrained=True) == ("resnet50d", "timm:ra2_in1k")
    assert resolve_name("resnet50d.ra2_in1k", pretrained=False) == ("resnet50d", None)  # as timm: no weights
    assert resolve_name("resnet50d") == ("resnet50d", None)


def test_tagged_name_loads_timms_weights(loaded: list[Pretrained]) -> None:
    pytest.importorskip("timm")
    model = create_model("resnet50d.ra2_in1k")
    assert [(r.model, r.name, r.repo_id) for r in loaded] == [
        ("resnet50d", "timm:ra2_in1k", "timm/resnet50d.ra2_in1k")
    ]
    assert model.num_classes == 1000 and model.spec.avg_down


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("resnet50_gn.a1h_in1k", ValueError, "unknown model 'resnet50_gn'"),
        ("resnetv2_50.a1h_in1k", ValueError, "timm's resnetv2_50 is preact_resnet50 here: say "
         "'preact_resnet50.a1h_in1k'"),
        ("cifar_resnet20.a1_in1k", ValueError, "timm has no pretrained cifar_resnet20"),
        ("resnet50d.nope", ValueError, "timm has no weights 'nope' for resnet50d: it has timm:a1_in1k"),
    ],
)  # fmt: skip
def test_unknown_tagged_name_is_refused(name: str, error: type[Exception], message: str) -> None:
    pytest.importorskip("timm")
    with pytest.raises(error, match=message):
        create_model(name)


def test_pretrained_true_loads_the_default_weights(loaded: list[Pretrained]) -> None:
    assert resolve_name("resnet50", pretrained=True) == ("resnet50", "DEFAULT")
    create_model("resnet50", pretrained=True)
    assert [(r.source, r.name) for r in loaded] == [("torchvision", "IMAGENET1K_V2")]
    create_model("resnet50", pretrained=False)
    assert len(loaded) == 1


def test_pretrained_true_without_torchvision_weights_takes_timms_default_tag() -> None:
    pytest.importorskip("timm")
    assert resolve_name("resnet50d", pretrained=True) == ("resnet50d", "timm:ra2_in1k")
    assert resolve_name("preact_resnet50", pretrained=True) == ("preact_resnet50", "timm:a1h_in1k")


def test_pretrained_true_loads_the_cached_file(resnet18_file: dict[str, torch.Tensor]) -> None:
    model = create_model("resnet18", pretrained=True)
    assert all(torch.equal(v, resnet18_file[k]) for k, v in model.state_dict().items())
    assert model.pretrained.name == "IMAGENET1K_V1"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("resnet50", {"pretrained": True, "weights": "IMAGENET1K_V1"}, "pretrained=True (resnet50's default "
         "weights) and weights='IMAGENET1K_V1' both choose weights: give one of them"),
        ("resnet50d.ra2_in1k", {"weights": "w.pth"}, "'resnet50d.ra2_in1k' (timm's weights 'ra2_in1k') and "
         "weights='w.pth' both choose weights"),
        ("cifar_resnet20", {"pretrained": True}, "cifar_resnet20 has no pretrained weights; pretrained=True "
         "works for preact_resnet101, "),
    ],
)  # fmt: skip
def test_pretrained_conflicts_and_absences_are_refused(name: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        create_model(name, **options)
    assert message in str(error.value)
    if "no pretrained" in message:
        assert "resnet50, " in str(error.value) and "weights='path/to/weights.pth'" in str(error.value)


def test_list_models_pretrained_keeps_models_with_named_weights() -> None:
    pytest.importorskip("timm")
    names = list_models(pretrained=True)
    assert {"resnet18", "resnet50", "resnet50d", "preact_resnet50", "wide_resnet50_2"} <= set(names)
    assert not any(n.startswith(("cifar_", "plain")) or n.endswith("_v1") for n in names)
    assert list_models("resnet5?d", pretrained=True) == ["resnet50d"]


def test_timm_weights_sizes_come_from_the_model_and_match_torchvisions_files() -> None:
    # timm's records carry no file size; the registry computes it from the model. The same architecture's
    # torchvision file (its own recorded size) is the independent check: resnet50 at 1000 classes.
    pytest.importorskip("timm")
    records = {r.name: r for r in registry.named_weights("resnet50")}
    torchvision_size = records["IMAGENET1K_V1"].size_mb
    timm = [r for r in records.values() if r.source == "timm" and len(r.categories) == 1000]
    assert timm and all(abs(r.size_mb - torchvision_size) / torchvision_size < 0.01 for r in timm)


def test_tagged_names_work_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    """`--model resnet50d.ra2_in1k` trains resnet50d from timm's ra2_in1k weights (the config says so in our
    words); `summary` of a tagged name shows the architecture without downloading anything."""
    cfg = TrainConfig(model="resnet50d.ra2_in1k")
    assert (cfg.model, cfg.weights) == ("resnet50d", "timm:ra2_in1k")
    with pytest.raises(ValueError, match="both choose weights"):
        TrainConfig(model="resnet50d.ra2_in1k", weights="mine.pth")
    with pytest.raises(ValueError, match="unknown model 'resnet51d'"):
        TrainConfig(model="resnet51d.ra2_in1k")
    assert main(["summary", "resnet50d.ra2_in1k"]) == 0
    assert "25,576,264 parameters" in capsys.readouterr().out  # timm's resnet50d has 25.58M
