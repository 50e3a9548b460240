"""Image files from disk: one decoder for training folders and predict (libjpeg-turbo for JPEGs, Pillow for the
rest; formats, 16-bit, colour modes, pixel limit), which files are kept or dropped (and reported), flip-TTA's
loss, and progress without a terminal."""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from resnets import create_model
from resnets.data import DataError, load_dataset
from resnets.data import folder as folder_module
from resnets.data.bundle import LUMA
from resnets.data.folder import UnreadableImage, read_image
from resnets.train import TrainConfig, evaluate, fit
from resnets.train import progress as progress_module
from resnets.train.progress import StatusLines, progress
from resnets.train.report import dropped_section
from resnets.train.runtime import Runtime
from resnets.trained import Trained, load_image, load_trained


@pytest.fixture(autouse=True)
def _quiet_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One thread (a small shared CPU), and no real cache or data folders."""
    monkeypatch.delenv("RESNETS_DATA", raising=False)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (JPEG keeps it close), uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3)).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def save(array: np.ndarray, path: Path, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def gray16(path: Path, values: np.ndarray) -> Path:
    """Write a 16-bit grayscale PNG or TIFF (Pillow mode I;16) holding `values`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    return path


# --- decoding -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        (".png", {}),
        (".bmp", {}),
        (".tif", {}),
        (".webp", {"lossless": True}),
        (".gif", {}),
        (".jpg", {"quality": 95}),
    ],
)
def test_formats_decode_to_uint8_chw(tmp_path: Path, suffix: str, options: dict) -> None:
    image = torch.from_numpy(rgb()).permute(2, 0, 1)
    decoded = read_image(save(rgb(), tmp_path / f"x{suffix}", **options), 3)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 24, 32)
    if suffix in (".gif", ".jpg"):  # a 256-colour palette, lossy compression
        assert (decoded.float() - image.float()).abs().mean() < 4
    else:
        assert torch.equal(decoded, image)


def test_colour_modes_follow_one_rule(tmp_path: Path) -> None:
    """Gray is repeated for RGB models, RGB becomes ITU-R 601 luma for gray ones, alpha and palettes go."""
    image = rgb()
    gray_path = save(image[..., 0], tmp_path / "gray.png")
    assert torch.equal(read_image(gray_path, 3), torch.from_numpy(image[..., 0]).expand(3, -1, -1))
    luma = (torch.from_numpy(image).float() * torch.tensor(LUMA)).sum(-1)
    assert (read_image(save(image, tmp_path / "rgb.png"), 1)[0].float() - luma).abs().max() <= 1
    rgba = np.concatenate([image, np.full((24, 32, 1), 7, np.uint8)], axis=-1)
    assert torch.equal(read_image(save(rgba, tmp_path / "rgba.png"), 3), read_image(tmp_path / "rgb.png", 3))
    palette = Image.fromarray(image).quantize(16)
    palette.save(tmp_path / "p.png")
    assert torch.equal(
        read_image(tmp_path / "p.png", 3).permute(1, 2, 0),
        torch.from_numpy(np.array(palette.convert("RGB"))),
    )


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_is_scaled_to_8_bit(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 256, 257, 32896], [65278, 65534, 65535, 128]])
    decoded = read_image(gray16(tmp_path / f"x{suffix}", values), 1)
    assert decoded.dtype == torch.uint8
    assert decoded[0].tolist() == [[0, 1, 1, 128], [254, 255, 255, 0]]  # round(v / 257)
    assert torch.equal(read_image(tmp_path / f"x{suffix}", 3), decoded.expand(3, -1, -1))


def png_rgb16(path: Path, values: np.ndarray) -> Path:
    """Write a 16-bit-per-channel RGB PNG (which Pillow reads but cannot write) holding (H, W, 3) `values`."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = values.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)  # filter 0, big-endian samples
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


def test_16_bit_rgb_png_and_32_bit_gray_tiff_are_scaled(tmp_path: Path) -> None:
    values = np.array([[[0, 255, 256], [65535, 32768, 65280]]])
    decoded = read_image(png_rgb16(tmp_path / "rgb16.png", values), 3)
    assert decoded.permute(1, 2, 0).tolist() == [[[0, 0, 1], [255, 128, 255]]]  # the high byte
    wide = np.array([[0, 257, 65535, 70000, -5]], dtype=np.int32)  # mode "I": clipped to 16 bits, then scaled
    Image.fromarray(wide).save(tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    assert read_image(tmp_path / "i32.tif", 1)[0].tolist() == [[0, 1, 255, 255, 0]]


def test_multi_page_tiff_gives_its_first_page(tmp_path: Path) -> None:
    first, second = Image.fromarray(rgb(seed=1)), Image.fromarray(rgb(16, 16, seed=2))
    first.save(tmp_path / "pages.tif", save_all=True, append_images=[second])
    assert Image.open(tmp_path / "pages.tif").n_frames == 2
    assert torch.equal(read_image(tmp_path / "pages.tif", 3).permute(1, 2, 0), torch.from_numpy(rgb(seed=1)))


def test_pixel_limit_names_the_file_and_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(rgb(24, 32), tmp_path / "big.png")  # 768 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over it: refused by us, after Pillow's warning
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(UnreadableImage, match=r"768 pixels is over the limit of 500") as error,
    ):
        read_image(path, 3)
    assert str(path) in str(error.value) and "MAX_IMAGE_PIXELS" in str(error.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # over twice it: Pillow refuses on open
    with pytest.raises(UnreadableImage, match="MAX_IMAGE_PIXELS") as error:
        read_image(path, 3)
    assert str(path) in str(error.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 768)
    assert read_image(path, 3).shape == (3, 24, 32)


def test_large_jpeg_decodes_reduced_but_not_below_min_side(tmp_path: Path) -> None:
    path = save(rgb(480, 640), tmp_path / "x.jpg", quality=95)
    assert read_image(path, 3).shape == (3, 480, 640)
    reduced = read_image(path, 3, min_side=100)
    assert reduced.shape == (3, 120, 160)  # 1/4: 1/8 would make the short side 60 < 100
    full = torch.nn.functional.interpolate(read_image(path, 3)[None].float(), size=(120, 160), mode="area")
    assert (reduced.float() - full[0]).abs().mean() < 3
    assert read_image(path, 1, min_side=100).shape == (1, 120, 160)


def pillow_decode(path: Path, channels: int, min_side: int) -> torch.Tensor:
    """The reference: Pillow alone (draft scale and colour conversion as `read_image` asks), as (C, H, W)."""
    with Image.open(path) as image:
        mode = "L" if channels == 1 else "RGB"
        image.draft(mode, (min_side, min_side) if min_side else None)
        array = np.asarray(image.convert(mode)).reshape(image.height, image.width, -1)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("RGB", {"subsampling": 2}),  # 4:2:0, as most photos and the chest X-rays
        ("RGB", {"subsampling": 0, "progressive": True}),
        ("RGB", {"keep_rgb": True}),  # stored as RGB, not YCbCr
        ("L", {}),
    ],
)
def test_jpeg_fast_path_gives_pillows_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, options: dict
) -> None:
    """libjpeg-turbo through simplejpeg decodes, scales and converts JPEGs to the pixels Pillow gives, without
    Pillow. Identical with libjpeg-turbo 3.1 (simplejpeg 1.9) and 3.2 (Pillow 13); ±1 allows another release's
    IDCT rounding."""
    array = rgb(301, 213, seed=11)  # odd sides: partial DCT blocks, rounded-up scaled sizes
    path = save(array if kind == "RGB" else array[..., 1], tmp_path / "x.jpg", quality=90, **options)
    cases = [(channels, min_side) for channels in (1, 3) for min_side in (0, 25, 40, 75, 150, 301)]
    expected = [pillow_decode(path, channels, min_side) for channels, min_side in cases]
    monkeypatch.setattr(Image, "open", None)  # Pillow is not used for these files
    for (channels, min_side), reference in zip(cases, expected, strict=True):
        decoded = read_image(path, channels, min_side)
        assert decoded.shape == reference.shape, (channels, min_side)
        assert (decoded.int() - reference.int()).abs().max() <= 1, (channels, min_side)
    assert read_image(path, 3, min_side=40).shape == (3, 76, 54)  # 1/4: 1/8 would make 213 -> 27 < 40


def test_jpegs_libjpeg_turbo_refuses_go_to_pillow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncated JPEGs are still refused (at any scale), CMYK ones get Pillow's colour conversion, and the pixel
    limit holds before any decoding."""
    whole = save(rgb(240, 320, seed=13), tmp_path / "whole.jpg", quality=90).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])  # cut in the pixels, not the headers
    for path in (truncated_jpeg(tmp_path / "cut_header.jpg"), tmp_path / "cut.jpg"):
        for min_side in (0, 1):
            with pytest.raises(UnreadableImage, match=path.name):
                read_image(path, 3, min_side)
    cmyk = Image.fromarray(rgb(seed=12)).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as image:
        assert image.mode == "CMYK"
        expected = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    assert torch.equal(read_image(tmp_path / "cmyk.jpg", 3), expected)
    motion = jpeg_with_trailing_data(tmp_path / "motion.jpg")
    assert torch.equal(read_image(motion, 3), pillow_decode(motion, 3, 0))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 24x32 = 768 pixels
    with pytest.raises(UnreadableImage, match=r"768 pixels is over the limit of 500"):
        read_image(motion, 3)


def test_jpegs_decode_without_simplejpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where simplejpeg is not installed (the GPU machine's own Python), Pillow decodes JPEGs, scaled alike."""
    path = save(rgb(301, 213, seed=14), tmp_path / "x.jpg", quality=90)
    monkeypatch.setattr(folder_module, "simplejpeg", None)
    for channels, min_side in ((3, 0), (1, 0), (3, 40)):
        assert torch.equal(read_image(path, channels, min_side), pillow_decode(path, channels, min_side))
    assert read_image(path, 3, min_side=40).shape == (3, 76, 54)


def trained_for(channels: int, folder: Path) -> Trained:
    """A model as `predict` loads it: from a plain weights file (ImageNet normalisation, the model's input size)."""
    path = folder / f"weights{channels}.safetensors"
    save_file(create_model("cifar_resnet20", num_classes=2, in_channels=channels).state_dict(), path)
    return load_trained(path, model="cifar_resnet20", num_classes=2, in_channels=channels)


def test_predict_loads_16_bit_images_in_range(tmp_path: Path) -> None:
    path = gray16(tmp_path / "x.png", np.full((40, 40), 65535))
    for channels in (1, 3):
        trained = trained_for(channels, tmp_path)
        image = load_image(path, trained)
        assert image.shape == (channels, *trained.image_size)
        white = (1 - torch.tensor(trained.mean)) / torch.tensor(
            trained.std
        )  # 65535 is white: 1.0 before normalising
        assert torch.allclose(image, white.view(-1, 1, 1).expand_as(image), atol=1e-5)


def test_predict_refuses_a_non_image_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=f"cannot decode {path}"):
        load_image(path, trained_for(3, tmp_path))


# --- which files a data set keeps -----------------------------------------------------------------------------


def jpeg_with_trailing_data(path: Path) -> Path:
    """A valid JPEG followed by 1 KB of other data, as phone "motion photos" and appended metadata are."""
    save(rgb(seed=3), path, quality=90)
    path.write_bytes(path.read_bytes() + bytes(range(256)) * 4)
    return path


def png_with_extras(path: Path, image: np.ndarray) -> Path:
    """A valid PNG with a text chunk after its pixels and 300 bytes after its IEND chunk."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    data = buffer.getvalue()
    text = b"Comment\x00" + b"x" * 100
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    iend = data.rindex(b"IEND") - 4
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:iend] + chunk + data[iend:] + b"\x00" * 300)
    return path


def truncated_jpeg(path: Path) -> Path:
    save(rgb(48, 64, seed=5), path, quality=90)
    path.write_bytes(path.read_bytes()[:400])
    return path


def mixed_folder(root: Path) -> dict[str, Path]:
    """Two classes of .bmp, 8- and 16-bit .tif, and the awkward-but-valid and broken files above."""
    files = {
        "bmp": save(rgb(seed=6), root / "a" / "one.bmp"),
        "tif8": save(rgb(seed=7), root / "a" / "two.tif"),
        "tif16": gray16(root / "b" / "three.tiff", np.arange(24 * 32).reshape(24, 32) * 80),
        "bmp_gray": save(rgb(seed=8)[..., 1], root / "b" / "four.bmp"),
        "trailing": jpeg_with_trailing_data(root / "a" / "motion.jpg"),
        "png_extras": png_with_extras(root / "b" / "extras.png", rgb(seed=4)),
        "gif": save(rgb(seed=9), root / "b" / "five.gif"),
        "truncated": truncated_jpeg(root / "a" / "cut.jpeg"),
    }
    return files


def test_valid_files_kept_truncated_dropped_with_reason(tmp_path: Path) -> None:
    files = mixed_folder(tmp_path / "data")
    with pytest.warns(
        UserWarning, match=r"skipped 1 corrupt or truncated image\(s\).*cut\.jpeg \(no JPEG end marker"
    ):
        bundle = load_dataset(f"folder:{tmp_path / 'data'}", val_split=0.3, image_size=16)
    kept = {
        path
        for split in (bundle.train, bundle.val, bundle.test)
        if split is not None
        for path, _ in split.samples
    }
    assert kept == set(files.values()) - {files["truncated"]}
    assert [path for path, _ in bundle.dropped] == [files["truncated"]] and bundle.skipped == 1
    assert "decoding failed" in bundle.dropped[0].reason
    for index in range(len(bundle.train)):
        image, _ = bundle.train[index]
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    section = dropped_section(bundle)
    assert "## Images left out (1)" in section and str(files["truncated"]) in section
    with pytest.raises(DataError, match=r"corrupt or truncated image: .*cut\.jpeg"):
        load_dataset(f"folder:{tmp_path / 'data'}", val_split=0.3, strict=True)


def test_png_tree_cache_keeps_trailing_data_and_drop_reasons(tmp_path: Path) -> None:
    """The decoded-array path (cifar10 PNG trees) keeps the same files and remembers why others were dropped."""
    root = tmp_path / "cifar"
    for split in ("train", "test"):
        for cls, seed in (("cat", 0), ("dog", 1)):
            for i in range(2):
                save(rgb(32, 32, seed=10 * seed + i), root / split / cls / f"{i}.png")
    png_with_extras(root / "train" / "cat" / "extras.png", rgb(32, 32, seed=5))
    (root / "train" / "dog" / "cut.png").write_bytes((root / "train" / "dog" / "0.png").read_bytes()[:200])
    for _ in ("decoded", "read from the cache"):
        with pytest.warns(UserWarning, match="skipped 1 corrupt"):
            bundle = load_dataset("cifar10", root)
        assert len(bundle.train) == 5 and [p.name for p, _ in bundle.dropped] == ["cut.png"]
        assert "IEND" in bundle.dropped[0].reason and "decoding failed" in bundle.dropped[0].reason


# --- flip TTA -------------------------------------------------------------------------------------------------


class FixedLogits(nn.Module):
    """Logits that depend only on whether the input is mirrored: [0, -1000] as given, [0, -1100] flipped."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mirrored = x[:, 0, 0, 0] < 0  # the test's inputs are +1 in the left column, -1 in the right
        row = torch.where(mirrored[:, None], torch.tensor([0.0, -1100.0]), torch.tensor([0.0, -1000.0]))
        return row


def test_tta_loss_is_finite_when_both_views_underflow() -> None:
    x = torch.ones(2, 1, 2, 2)
    x[..., 1] = -1
    y = torch.tensor([1, 0])
    runtime = Runtime(torch.device("cpu"), None, False)
    result = evaluate(FixedLogits(), [(x, y)], 2, runtime, tta=True)
    # log-mean of the two probabilities of class 1: log((e^-1000 + e^-1100) / 2) = -1000 - log 2 + log1p(e^-100)
    wrong = 1000 + math.log(2) - math.log1p(math.exp(-100))
    right = -math.log((1 + 1) / 2)  # class 0 has probability ~1 in both views
    assert math.isfinite(result.loss)
    assert result.loss == pytest.approx((wrong + right) / 2, rel=1e-6)
    assert result.top1 == 0.5


# --- progress without a terminal -------------------------------------------------------------------------------


def test_status_lines_every_interval_with_eta() -> None:
    ticks = iter(range(100))
    stream = io.StringIO()
    lines = StatusLines(range(10), "epoch 1/3", stream, interval=3, clock=lambda: float(next(ticks)))
    for i in lines:
        lines.set_postfix(loss=f"{1 / (i + 1):.3f}", img_s="512")
    printed = stream.getvalue().splitlines()
    assert len(printed) == 3  # at 3, 6 and 9 seconds (batches 3, 6, 9)
    assert printed[0] == "epoch 1/3: 3/10 batches (30%) loss=0.333 img_s=512 00:03 elapsed, ETA 00:07"
    assert printed[-1].startswith("epoch 1/3: 9/10 batches (90%) loss=0.111")


def test_progress_picks_bar_notebook_or_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress(range(3), "x", True, io.StringIO()), StatusLines)
    bar = progress(range(3), "x", True, Terminal())
    assert not isinstance(bar, StatusLines) and not bar.disable
    assert progress(range(3), "x", False, io.StringIO()).disable
    monkeypatch.setattr(progress_module, "in_notebook", lambda: True)
    assert isinstance(progress(range(3), "x", True, io.StringIO()), progress_module.auto_tqdm)


def test_folder_of_bmp_and_tif_trains_with_progress_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A run on .bmp/.tif/.gif (8- and 16-bit) and trailing-data files trains, reports the truncated file
    it dropped, and without a terminal prints status lines as it goes."""
    files = mixed_folder(tmp_path / "data")
    monkeypatch.setattr(progress_module, "STATUS_INTERVAL", 0.0)
    cfg = TrainConfig(
        model="cifar_resnet20", data=f"folder:{tmp_path / 'data'}", epochs=1, batch_size=2, val_split=0.3,
        image_size=16, workers=0, out=str(tmp_path / "run"), precision="fp32", channels_last=False,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="skipped 1 corrupt"):
        history = fit(cfg)
    assert math.isfinite(history.epochs[0]["train_loss"])
    lines = re.findall(
        r"epoch 1/1: (\d+)/(\d+) batches \(\d+%\) loss=\d\.\d+ .* elapsed, ETA ", capsys.readouterr().err
    )
    assert lines and lines[-1][0] == lines[-1][1], "a status line after every batch, the last one at the end"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Images left out (1)" in report and str(files["truncated"]) in report
