"""The zoo: every model builds and runs, equals torchvision/timm with the same weights, and matches the
paper's tables."""

from __future__ import annotations

import math
import pickle

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import resnets
from resnets.models import count_macs, count_params, create_model, get_entry
from resnets.models.shortcuts import ZeroPadShortcut

HUGE = {"cifar_resnet1202", "cifar_preact_resnet1001"}


def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so parity tests exercise every tensor."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def assert_same_outputs(ours: nn.Module, ref: nn.Module, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        diff = (ours.eval()(x) - ref.eval()(x)).abs().max().item()
    assert diff < 1e-4, diff


def test_registry_lists_every_family() -> None:
    names = resnets.list_models()
    assert names == sorted(names)
    expected = {
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "resnet50_v1", "resnet101_v1", "resnet152_v1",
        "resnet18d", "resnet34d", "resnet50c", "resnet50d", "resnet101d", "resnet152d",
        "preact_resnet18", "preact_resnet34", "preact_resnet50", "preact_resnet101", "preact_resnet152",
        "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
        "cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56", "cifar_resnet110",
        "cifar_resnet1202", "cifar_preact_resnet110", "cifar_preact_resnet164", "cifar_preact_resnet1001",
        "plain18", "plain34", "cifar_plain20", "cifar_plain32", "cifar_plain44", "cifar_plain56",
        "cifar_plain110", "d2l_resnet18", "fastbook_resnet34",
    }  # fmt: skip
    assert expected <= set(names)
    assert resnets.list_models("cifar_plain") == [n for n in names if "cifar_plain" in n]


def test_list_models_takes_timms_wildcards() -> None:
    names = resnets.list_models()
    assert resnets.list_models("*50*") == [n for n in names if "50" in n]
    assert resnets.list_models("resnet5?") == ["resnet50"]
    assert resnets.list_models("resnet5??") == ["resnet50c", "resnet50d"]
    assert resnets.list_models("resnet[13]8") == ["resnet18"] and resnets.list_models("*nope*") == []
    assert resnets.list_models("50") == resnets.list_models("*50*")  # no wildcard: a part of the name


@pytest.mark.parametrize("name", resnets.list_models())
def test_every_model_runs_down_to_one_pixel(name: str) -> None:
    """Padded convolutions never shrink a side below 1 px, so there is no minimum input size; a net with an
    unpadded stem (fastbook's) names its minimum instead of failing deep inside, and runs from it up."""
    model = create_model(name, num_classes=7, in_channels=1)
    x = torch.randn(2, 1, 1, 9)  # non-square on purpose
    low = get_entry(name).spec.min_input_size
    if low > 1:
        with pytest.raises(ValueError, match=f"at least {low}x{low} px, got 1x9"):
            model(x)
        x = torch.randn(2, 1, low, low + 8)
    if name in HUGE:
        with torch.no_grad():
            assert model.eval()(x).shape == (2, 7)
        return
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


TORCHVISION = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
]  # fmt: skip


@pytest.mark.parametrize("name", TORCHVISION)
def test_equals_torchvision(name: str) -> None:
    ref = randomize(getattr(torchvision.models, name)())
    ours = create_model(name)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert_same_outputs(ours, ref)


@pytest.mark.parametrize(
    ("ours_name", "timm_name"),
    [
        ("resnet18d", "resnet18d"),
        ("resnet34d", "resnet34d"),
        ("resnet50c", "resnet50c"),
        ("resnet50d", "resnet50d"),
        ("resnet101d", "resnet101d"),
        ("preact_resnet50", "resnetv2_50"),
    ],
)
def test_equals_timm_through_weight_files(ours_name: str, timm_name: str, tmp_path) -> None:
    ref = randomize(timm.create_model(timm_name, pretrained=False))
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    ours = create_model(ours_name, weights=path)
    assert_same_outputs(ours, ref)


class D2LBlock(nn.Module):
    """d2l 8.6's residual block, rewritten here from its description: two 3x3 convs with biases, each
    followed by BN; where the shape changes, a strided 1x1 conv (with a bias, without BN) on the skip."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c_in, c_out, 3, stride, 1)  # created in the order d2l's lazy layers materialise
        self.b = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride) if stride > 1 else None
        self.na, self.nb = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.nb(self.b(F.relu(self.na(self.a(x)))))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


def d2l_resnet18(in_channels: int = 1, classes: int = 10) -> nn.Module:
    """d2l's ResNet-18 (7x7/2 stem conv with bias, BN, ReLU, 3x3/2 max-pool; stages of 64, 128, 256, 512
    channels, two blocks each; average pool; linear), every layer at PyTorch's default init."""
    stem = [nn.Conv2d(in_channels, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    blocks = []
    for i, (c_in, c_out) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)]):
        blocks += [D2LBlock(c_in, c_out, 1 if i == 0 else 2), D2LBlock(c_out, c_out, 1)]
    return nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def test_d2l_resnet18_is_d2ls_network_layer_for_layer_and_init_for_init() -> None:
    """Built from the same seed, d2l's net and ours draw the same initial weights (so the init is PyTorch's
    default, layer by layer in the same order) and give the same outputs (so the layout is d2l's)."""
    torch.manual_seed(0)
    ref = d2l_resnet18()
    torch.manual_seed(0)
    ours = create_model("d2l_resnet18", in_channels=1)
    assert count_params(ours) == sum(p.numel() for p in ref.parameters())
    layers = [[m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)] for net in (ref, ours)]
    for theirs, mine in zip(*layers, strict=True):
        assert torch.equal(theirs.weight, mine.weight) and torch.equal(theirs.bias, mine.bias)
    x = torch.randn(2, 1, 96, 96)
    with torch.no_grad():
        assert (ours.eval()(x) - ref.eval()(x)).abs().max().item() < 1e-5
    torchvisions = create_model("resnet18", num_classes=10, in_channels=1)  # no biases, BN on projections
    assert count_params(ours) - count_params(torchvisions) == 4800 - 2 * (128 + 256 + 512)


class FastbookBlock(nn.Module):
    """fastbook's Imagenette residual block, rewritten here from its description: 3x3 convs with biases, each
    followed by BN; a stage's first block strides by 2 and projects its skip with a strided 1x1 conv + BN."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        stride = 2 if c_in != c_out else 1
        self.a, self.b = nn.Conv2d(c_in, c_out, 3, stride, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.na, self.nb = nn.BatchNorm2d(c_out), nn.BatchNorm2d(c_out)
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, 2), nn.BatchNorm2d(c_out)) if stride > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.nb(self.b(F.relu(self.na(self.a(x)))))
        return F.relu(y + (x if self.skip is None else self.skip(x)))


def fastbook_resnet34(classes: int = 10) -> nn.Module:
    """fastbook's ResNet-34: a 7x7/2 conv (bias, no padding), BN and a 3x3/2 max-pool (no padding), with no
    ReLU in between; 3, 4, 6, 3 blocks of 64, 128, 256, 512 channels; average pool; linear."""
    blocks, c_in = [], 64
    for n, c_out in zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True):
        blocks += [FastbookBlock(c_in, c_out)] + [FastbookBlock(c_out, c_out) for _ in range(n - 1)]
        c_in = c_out
    stem = [nn.Conv2d(3, 64, 7, 2), nn.BatchNorm2d(64), nn.MaxPool2d(3, 2)]
    return nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def test_fastbook_resnet34_is_the_seeds_network_layer_for_layer() -> None:
    """With the seed's weights copied layer by layer (convs, BNs and the classifier, each kind in network
    order), ours gives the seed net's outputs: its unpadded stem without a ReLU, its biases, its projections."""
    ref, ours = fastbook_resnet34().eval(), create_model("fastbook_resnet34").eval()
    assert count_params(ours) == sum(p.numel() for p in ref.parameters())
    for m in ref.modules():  # BN statistics away from identity, so that a missing or misplaced BN shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    for kind in (nn.Conv2d, nn.BatchNorm2d, nn.Linear):
        layers = [[m for m in net.modules() if type(m) is kind] for net in (ref, ours)]
        for theirs, mine in zip(*layers, strict=True):
            mine.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-4
    bound = 1 / math.sqrt(3 * 7 * 7)  # PyTorch's default conv init: uniform within 1/sqrt(fan_in)
    assert ours.conv1.bias is not None and create_model("fastbook_resnet34").conv1.weight.abs().max() <= bound


def test_v1_puts_the_stride_in_the_first_1x1() -> None:
    v1, v15 = create_model("resnet50_v1"), create_model("resnet50")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert count_params(v1) == count_params(v15)


# ---- the paper's tables ----


@pytest.mark.parametrize(
    ("name", "gmacs"),
    [
        ("resnet18", 1.8),
        ("resnet34", 3.6),
        ("resnet50_v1", 3.8),
        ("resnet101_v1", 7.6),
        ("resnet152_v1", 11.3),
    ],
)
def test_macs_match_paper_table1(name: str, gmacs: float) -> None:
    measured = count_macs(create_model(name), (3, 224, 224)) / 1e9
    assert abs(measured - gmacs) / gmacs < 0.025, measured


@pytest.mark.parametrize(
    ("depth", "mparams"), [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)]
)
def test_cifar_params_match_paper_table6(depth: int, mparams: float) -> None:
    measured = count_params(create_model(f"cifar_resnet{depth}")) / 1e6
    assert round(measured, 2 if mparams < 1 else 1) == mparams, measured


def test_bottleneck_costs_little_more_than_basic() -> None:
    r34, r50 = (count_macs(create_model(n), (3, 224, 224)) for n in ("resnet34", "resnet50_v1"))
    assert 1.0 < r50 / r34 < 1.1


def test_paper_depths() -> None:
    for d in (18, 34, 50, 101, 152):
        assert get_entry(f"resnet{d}").spec.depth == d
    for d in (20, 56, 110, 1202):
        assert get_entry(f"cifar_resnet{d}").spec.depth == d
    assert get_entry("cifar_preact_resnet164").spec.depth == 164


# ---- shortcuts and plain twins ----


def test_option_a_matches_the_common_cifar_reproduction() -> None:
    x = torch.randn(2, 16, 8, 8)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))  # planes // 4 zero channels each side
    assert torch.equal(ZeroPadShortcut(16, 32, 2)(x), expected)


def test_cifar_reproduction_checkpoint_loads(tmp_path) -> None:
    src = randomize(create_model("cifar_resnet20"))
    foreign = {
        "module." + k.replace("fc.", "linear."): v for k, v in src.state_dict().items()
    }  # DataParallel + `linear` head
    torch.save({"state_dict": foreign}, tmp_path / "resnet20.th.pt")
    ours = create_model("cifar_resnet20", weights=tmp_path / "resnet20.th.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(ours.eval()(x), src(x))


def test_shortcut_options_change_only_projections() -> None:
    a = create_model("cifar_resnet20", shortcut="A")
    b = create_model("cifar_resnet20", shortcut="B")
    c = create_model("cifar_resnet20", shortcut="C")
    assert count_params(a) < count_params(b) < count_params(c)
    assert sum(".downsample." in k for k in b.state_dict()) > 0
    assert all(blk.downsample is not None for stage in c.stages for blk in stage)
    with pytest.raises(ValueError, match="plain"):
        create_model("cifar_plain20", shortcut="B")


def test_plain_twins_have_the_residual_parameters() -> None:
    for depth in (20, 56):
        plain, res = create_model(f"cifar_plain{depth}"), create_model(f"cifar_resnet{depth}")
        assert {k: v.shape for k, v in plain.state_dict().items()} == {
            k: v.shape for k, v in res.state_dict().items()
        }
    plain, res = create_model("plain18"), create_model("resnet18")
    res_keys = {k for k in res.state_dict() if ".downsample." not in k}
    assert set(plain.state_dict()) == res_keys


def test_residual_weights_load_into_plain_twin(tmp_path) -> None:
    torch.save(create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.warns(UserWarning, match="no skip connections"):
        create_model("plain18", weights=tmp_path / "r18.pth")


def test_plain_and_residual_differ_only_by_the_skip() -> None:
    res = randomize(create_model("cifar_resnet20"))
    plain = randomize(create_model("cifar_plain20"))
    plain.load_state_dict(res.state_dict())
    block, pblock = res.layer1[0], plain.layer1[0]
    h = torch.randn(2, 16, 8, 8).relu()
    with torch.no_grad():
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
        assert torch.allclose(block(h), torch.relu(branch + h))
        assert torch.allclose(pblock(h), torch.relu(branch))


# ---- options ----


def test_zero_init_residual_makes_blocks_identity() -> None:
    model = create_model("cifar_resnet20", zero_init_residual=True).eval()
    h = torch.randn(2, 16, 8, 8).relu()
    assert torch.allclose(model.layer1[0](h), h)
    pre = create_model("cifar_preact_resnet110", zero_init_residual=True).eval()
    assert torch.allclose(pre.layer1[0](h), h)


def test_dropout_and_stochastic_depth_only_in_training() -> None:
    model = create_model("cifar_resnet20", drop_rate=0.5, stochastic_depth=0.5)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_in_channels_and_num_classes_defaults() -> None:
    assert create_model("resnet18").fc.out_features == 1000
    assert create_model("cifar_resnet20").fc.out_features == 10
    assert create_model("resnet18", in_channels=1).conv1.in_channels == 1


def drop_paths(model: nn.Module) -> list[float]:
    return [getattr(m.drop_path, "p", 0.0) for m in model.modules() if hasattr(m, "drop_path")]


@pytest.mark.parametrize("name", ["resnet18", "resnet50d"])
def test_timms_option_names_are_aliases(name: str) -> None:
    """timm's `in_chans` and `drop_path_rate` build what `in_channels` and `stochastic_depth` do."""
    ours = create_model(name, in_channels=1, stochastic_depth=0.1)
    timms = create_model(name, in_chans=1, drop_path_rate=0.1)
    assert {k: v.shape for k, v in timms.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    assert timms.in_channels == 1 and timms.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 1000)
    assert drop_paths(timms) == drop_paths(ours) and drop_paths(ours)[-1] == pytest.approx(0.1)
    assert drop_paths(create_model(name)) == [0.0] * len(drop_paths(ours))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"in_channels": 1, "in_chans": 1}, "in_chans= is timm's name for in_channels=: give one"),
        (
            {"stochastic_depth": 0.1, "drop_path_rate": 0.1},
            "drop_path_rate= is timm's name for stochastic_depth=",
        ),
    ],
)
def test_both_spellings_of_an_option_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("resnet18", **options)


def test_timms_positional_pretrained_is_not_a_class_count() -> None:
    """timm's second argument is `pretrained`: `create_model("resnet18", True)` would be a 1-class model."""
    with pytest.raises(
        TypeError,
        match=r"num_classes=True\): expected int or None, got bool: the second argument is num_classes here",
    ):
        create_model("resnet18", True)


# ---- clear errors ----


@pytest.mark.parametrize(
    ("shape", "match"), [((3, 32, 32), "4-D"), ((1, 1, 32, 32), "3 input channel"), ((2, 5), "4-D")]
)
def test_bad_input_gives_clear_error(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_model("resnet18")(torch.randn(*shape))
    with pytest.raises(ValueError, match=match):
        create_model("resnet18", features_only=True)(torch.randn(*shape))


@pytest.mark.parametrize("side", [1, 7, 33])
def test_small_inputs_give_torchvisions_outputs(side: int) -> None:
    """torchvision sets no minimum size either: at 1 px and other odd sizes both give the same logits."""
    ref = randomize(torchvision.models.resnet18())
    ours = create_model("resnet18")
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), ref(x), atol=1e-5)


def test_unknown_model_suggests_names() -> None:
    with pytest.raises(ValueError, match="Did you mean resnet50"):
        create_model("resnet05")


def test_weights_with_other_class_count_reinitialise_head(tmp_path) -> None:
    from safetensors.torch import save_file

    src = create_model("resnet18")
    save_file(src.state_dict(), tmp_path / "r18.safetensors")
    with pytest.warns(UserWarning, match="classifier re-initialised for 5 classes"):
        model = create_model("resnet18", num_classes=5, weights=tmp_path / "r18.safetensors")
    assert torch.equal(model.layer4[1].conv2.weight, src.layer4[1].conv2.weight)


def test_rgb_weights_adapt_to_grayscale(tmp_path) -> None:
    src = create_model("resnet18")
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    with pytest.warns(UserWarning, match="1 input channel"):
        model = create_model("resnet18", in_channels=1, weights=tmp_path / "r18.pth")
    assert torch.allclose(model.conv1.weight, src.conv1.weight.sum(1, keepdim=True))


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def test_pickle_that_runs_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match="refused"):
        create_model("resnet18", weights=path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_weights_file_is_named(tmp_path, suffix: str) -> None:
    good = tmp_path / f"good{suffix}"
    state = create_model("cifar_resnet20").state_dict()
    if suffix == ".pth":
        torch.save(state, good)
    else:
        from safetensors.torch import save_file

        save_file(state, str(good))
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"broken.*not a readable") as info:
        create_model("cifar_resnet20", weights=broken)
    assert "run code" not in str(info.value)


def test_weights_of_another_architecture_are_named(tmp_path) -> None:
    torch.save(create_model("resnet34").state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="does not fit"):
        create_model("resnet18", weights=tmp_path / "r34.pth")
    with pytest.raises(FileNotFoundError):
        create_model("resnet18", weights=tmp_path / "missing.pth")


# ---- tracing: FX, torch.compile, torch.export ----

TINY_SPEC = {"layers": [1, 1, 1]}  # one block per stage: traces in a second


def test_fx_traces_the_model_without_a_wrapper() -> None:
    model = randomize(create_model("cifar_resnet20", spec_overrides=TINY_SPEC))
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(traced(x), model(x))


def test_torch_compile_captures_one_graph_and_keeps_the_input_check() -> None:
    model = randomize(create_model("cifar_resnet20", spec_overrides=TINY_SPEC))
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    assert torch.allclose(compiled(x), model(x), atol=1e-6)
    with pytest.raises(ValueError, match="3 input channel"):
        torch.compile(model, backend="eager")(torch.randn(2, 1, 16, 16))


def test_torch_export_with_a_dynamic_batch_keeps_the_input_check() -> None:
    model = randomize(create_model("cifar_resnet20", spec_overrides=TINY_SPEC))
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    x = torch.randn(5, 3, 16, 16)
    assert torch.allclose(program.module()(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="3 input channel"):
        torch.export.export(model, (torch.randn(2, 1, 16, 16),))


# ---- backbone API (timm's: features_only, feature_info, num_classes=0, forward_head, reset_classifier) ----


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50d", "preact_resnet18", "cifar_resnet20", "resnext50_32x4d"]
)
def test_feature_maps_have_the_channels_and_strides_feature_info_states(name: str) -> None:
    model = create_model(name, features_only=True)
    side = 64
    features = model.eval()(torch.randn(2, 3, side, side))
    info = model.feature_info
    assert len(features) == len(info) == len(get_entry(name).spec.layers) + 1  # stem + every stage
    assert [f.shape[1] for f in features] == info.channels()
    assert [side // f.shape[-1] for f in features] == info.reduction()
    assert info.channels(-1) == create_model(name).num_features
    assert info.reduction()[0] == (1 if name.startswith("cifar") else 2)
    assert info.get_dicts()[1] == {
        "num_chs": info.channels(1),
        "reduction": info.reduction(1),
        "module": "layer1",
    }


@pytest.mark.parametrize("name", ["resnet50", "preact_resnet18", "cifar_resnet20"])
def test_features_equal_torchvision_feature_extractor(name: str, tmp_path) -> None:
    """Our feature maps are what torchvision's `create_feature_extractor` takes from the full model at the
    modules `feature_info` names, with the full model's weights loaded through a file."""
    from torchvision.models.feature_extraction import create_feature_extractor

    full = randomize(create_model(name))
    torch.save(full.state_dict(), tmp_path / "w.pth")
    ours = create_model(name, weights=tmp_path / "w.pth", features_only=True).eval()
    extractor = create_feature_extractor(full, return_nodes=ours.feature_info.module_name())
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        theirs = list(extractor(x).values())
        mine = ours(x)
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_out_indices_choose_levels_and_drop_unused_stages(tmp_path) -> None:
    ref = randomize(torchvision.models.resnet50())
    torch.save(ref.state_dict(), tmp_path / "tv_resnet50.pth")
    model = create_model(
        "resnet50", weights=tmp_path / "tv_resnet50.pth", features_only=True, out_indices=(1, 3)
    )
    assert model.feature_info.channels() == [256, 1024] and model.feature_info.reduction() == [4, 16]
    keys = set(model.state_dict())
    assert not any(k.startswith(("layer4.", "fc.")) for k in keys) and keys <= set(ref.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c3 = ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))))
        assert torch.allclose(model.eval()(x)[1], c3, atol=1e-5)
    for bad in ((3, 1), (0, 5), ()):
        with pytest.raises(ValueError, match="out_indices"):
            create_model("resnet50", features_only=True, out_indices=bad)
    with pytest.raises(ValueError, match="features_only"):
        create_model("resnet50", out_indices=(1, 2))


def test_negative_out_indices_count_from_the_last_level_as_timms() -> None:
    timm = pytest.importorskip("timm")
    for indices in ((-2, -1), (1, -1), (-5,)):
        ours = create_model("resnet50", features_only=True, out_indices=indices).feature_info
        theirs = timm.create_model("resnet50", features_only=True, out_indices=indices).feature_info
        assert (ours.channels(), ours.reduction()) == (theirs.channels(), theirs.reduction()), indices
    with pytest.raises(ValueError, match="got \\(-6,\\)"):
        create_model("resnet50", features_only=True, out_indices=(-6,))


def test_num_classes_zero_gives_pooled_features(tmp_path) -> None:
    classifier = randomize(create_model("resnet18"))
    torch.save(classifier.state_dict(), tmp_path / "r18.pth")
    pooled = create_model("resnet18", num_classes=0, weights=tmp_path / "r18.pth").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = pooled(x)
        assert out.shape == (2, pooled.num_features) == (2, 512)
        assert torch.allclose(out, classifier.forward_features(x).mean((2, 3)), atol=1e-6)
        assert torch.allclose(classifier.forward_head(classifier.forward_features(x), pre_logits=True), out)
        assert torch.allclose(classifier.fc(out), classifier(x), atol=1e-5)


def test_reset_classifier_changes_the_head_only() -> None:
    model = randomize(create_model("cifar_resnet20"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    conv = model.layer3[-1].conv2.weight.clone()
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(model(x), features)
    assert torch.equal(model.layer3[-1].conv2.weight, conv)


def test_get_classifier_follows_reset_classifier() -> None:
    model = create_model("cifar_resnet20")
    assert model.get_classifier() is model.fc and model.get_classifier().out_features == 10
    model.reset_classifier(5)
    assert model.get_classifier() is model.fc and model.get_classifier().out_features == 5
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)


def test_faster_rcnn_trains_on_our_resnet50() -> None:
    """torchvision's detection stack takes our resnet50 as its backbone: FPN over layer1..4, forward and
    backward in training mode on a dummy box."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    trunk = create_model("resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    backbone = BackboneWithFPN(
        create_model("resnet50"),
        return_layers={name: str(i) for i, name in enumerate(trunk.feature_info.module_name())},
        in_channels_list=trunk.feature_info.channels(),
        out_channels=64,
    )
    detector = FasterRCNN(backbone, num_classes=3, min_size=128, max_size=128).train()
    images = [torch.rand(3, 128, 128), torch.rand(3, 120, 128)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 30.0, 100.0, 110.0]]), "labels": torch.tensor([2])},
    ]
    losses = detector(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert backbone.body.layer4[0].conv1.weight.grad.abs().sum() > 0
