"""The imagefolder dataset on tiny trees built in tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from genlab.data.base import DataError
from genlab.data.imagefolder import ImageFolderDataset, center_crop, to_rgb
from genlab.registry import get

CLASSES = ["cat", "ant", "bee"]  # deliberately not sorted


def _noise(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _make_tree(base, split: str | None = None) -> str:
    """3 classes x 2 images of odd sizes and modes; returns the root."""
    root = base / "data"
    top = root / split if split else root
    images = {
        "ant": [Image.fromarray(_noise(300, 200, 0)), Image.fromarray(_noise(64, 90, 1)).convert("L")],
        "bee": [Image.fromarray(_noise(40, 41, 2)).convert("RGBA"), Image.fromarray(_noise(17, 33, 3))],
        "cat": [Image.fromarray(_noise(50, 20, 4)).convert("P"), Image.fromarray(_noise(33, 33, 5))],
    }
    suffixes = {"ant": [".jpg", ".png"], "bee": [".png", ".JPEG"], "cat": [".bmp", ".webp"]}
    for name in CLASSES:
        (top / name).mkdir(parents=True)
        for k, (img, suf) in enumerate(zip(images[name], suffixes[name])):
            img.save(top / name / f"img{k}{suf}")
        (top / name / "notes.txt").write_text("not an image")
        (top / name / "._img0.jpg").write_bytes(b"macOS resource fork")  # hidden: skipped
    return str(root)


def _cfg(root: str, **kw) -> ImageFolderDataset.Config:
    cfg = ImageFolderDataset.Config(root=root, **{"num_classes": 3, **kw})
    cfg.validate()
    return cfg


def test_registered():
    assert get("dataset", "imagefolder") is ImageFolderDataset


@pytest.mark.parametrize("res", [16, 32])
def test_shapes_range_labels(tmp_path, res):
    ds = ImageFolderDataset(_cfg(_make_tree(tmp_path), resolution=res))
    assert ds.class_names == sorted(CLASSES)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, res, res) and item["image"].dtype == torch.float32
        assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
        assert item["label"].dtype == torch.long and item["label"].ndim == 0
        folder = ds.path(i).split("/")[-2]
        assert ds.class_names[int(item["label"])] == folder


def test_flip_tuple_mirrors_exactly(tmp_path):
    ds = ImageFolderDataset(_cfg(_make_tree(tmp_path), resolution=16))
    for i in (0, 3):
        a, b = ds[(i, False)], ds[(i, True)]
        assert torch.equal(b["image"], a["image"].flip(-1))
        assert torch.equal(a["image"], ds[i]["image"])
        assert int(a["label"]) == int(b["label"])
    off = ImageFolderDataset(_cfg(_make_tree(tmp_path / "x"), resolution=16, hflip=False))
    assert torch.equal(off[(0, True)]["image"], off[0]["image"])


def test_center_crop_keeps_centre():
    arr = np.zeros((384, 512, 3), dtype=np.uint8)
    arr[..., 2] = 255  # blue border
    arr[142:242, 206:306] = (255, 0, 0)  # red centre, 100 x 100
    out = center_crop(Image.fromarray(arr), 256)
    assert out.size == (256, 256)
    o = np.asarray(out)
    assert tuple(o[128, 128]) == (255, 0, 0)
    assert tuple(o[2, 2]) == (0, 0, 255)
    # the ADM halving: 1024x768 to 256 goes through a BOX halving first, still 256x256
    assert center_crop(Image.fromarray(np.zeros((768, 1024, 3), np.uint8)), 256).size == (256, 256)
    assert center_crop(Image.fromarray(np.zeros((10, 7, 3), np.uint8)), 16).size == (16, 16)  # upsampling


def test_to_rgb_modes():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent -> white
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]
    gray16 = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert np.asarray(to_rgb(gray16))[0, 0].tolist() == [255, 255, 255]
    assert to_rgb(Image.new("CMYK", (4, 4))).mode == "RGB"


def test_truncated_jpeg_raises_data_error(tmp_path):
    root = _make_tree(tmp_path)
    ds = ImageFolderDataset(_cfg(root, resolution=16))
    bad = ds.path(0)
    assert bad.endswith(".jpg")
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot read image") as e:
        ds[0]
    assert bad in str(e.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_text_file_named_jpg_raises_data_error(tmp_path):
    root = _make_tree(tmp_path)
    fake = tmp_path / "data" / "ant" / "zzz.jpg"
    fake.write_text("hello, I am not a JPEG")
    ds = ImageFolderDataset(_cfg(root, resolution=16))
    i = [ds.path(k) for k in range(len(ds))].index(str(fake))
    with pytest.raises(DataError, match="cannot read image") as e:
        ds[(i, True)]
    assert str(fake) in str(e.value)


def test_missing_root_and_empty_tree(tmp_path):
    with pytest.raises(DataError, match="does not exist") as e:
        ImageFolderDataset(_cfg(str(tmp_path / "nope")))
    assert "nope" in str(e.value) and "<class_name>" in str(e.value)
    with pytest.raises(DataError, match="not set"):
        ImageFolderDataset(ImageFolderDataset.Config())
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        ImageFolderDataset(_cfg(str(tmp_path / "empty"), num_classes=0))
    with pytest.raises(DataError):
        ImageFolderDataset.num_classes(_cfg(str(tmp_path / "nope"), num_classes=0))


def test_class_count_mismatch(tmp_path):
    root = _make_tree(tmp_path)
    with pytest.raises(DataError, match="data.num_classes=0") as e:
        ImageFolderDataset(_cfg(root, num_classes=1000))
    assert "3 class folders" in str(e.value) and "1000" in str(e.value)
    ds = ImageFolderDataset(_cfg(root, num_classes=0, resolution=16))
    assert len(ds.class_names) == 3
    assert ImageFolderDataset.num_classes(_cfg(root, num_classes=0)) == 3
    assert ImageFolderDataset.num_classes(_cfg(root, num_classes=7)) == 7


def test_split_subfolder(tmp_path):
    root = _make_tree(tmp_path, split="val")
    ds = ImageFolderDataset(_cfg(root, split="val", resolution=16))
    assert ds.data_dir.endswith("/val") and ds.class_names == sorted(CLASSES)
    with pytest.raises(DataError, match="no 'train'"):  # root has split folders, but not this one
        ImageFolderDataset(_cfg(root, split="train"))
    flat = ImageFolderDataset(_cfg(_make_tree(tmp_path / "flat"), split="train", resolution=16))
    assert flat.class_names == sorted(CLASSES)  # no root/train: root itself


def test_config_validate():
    for bad in ({"resolution": 4}, {"num_classes": -1}, {"split": "../x"}):
        with pytest.raises(ValueError):
            ImageFolderDataset.Config(**bad).validate()
    ImageFolderDataset.Config().validate()  # defaults are valid (root is checked when built)


def test_dataloader_with_flip_batches(tmp_path):
    ds = ImageFolderDataset(_cfg(_make_tree(tmp_path), resolution=16))
    batches = [[(0, False), (1, True), (5, False)], [(2, True), (3, False), (4, True)]]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches)
    out = list(loader)
    assert len(out) == 2
    for got, want in zip(out, batches):
        assert got["image"].shape == (3, 3, 16, 16) and got["label"].shape == (3,)
        assert got["label"].dtype == torch.long
        assert got["label"].tolist() == [ds.label(i) for i, _ in want]
        assert torch.equal(got["image"][1], ds[want[1]]["image"])
