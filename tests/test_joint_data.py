"""The ``joint`` dataset: a main dataset's samples with an extra dataset's beside them, fixed per index."""

from __future__ import annotations

import pytest
import torch

from genlab import registry
from genlab.config import ConfigError, component_from_dict, to_dict

CLIPS = {"name": "moving-openmoji", "frames": 3, "clips": 6, "limit": 48}


def joint(**kw):
    return component_from_dict("dataset", {"name": "joint", "resolution": 16, "main": CLIPS,
                                           "extra": {"name": "digits"}, **kw}, "data")  # fmt: skip


def test_a_joint_batch_holds_the_main_samples_and_the_extra_ones_beside_them():
    comp = joint()
    data = comp.build()
    main, extra = component_from_dict("dataset", {**CLIPS, "resolution": 16}, "m").build(), data.extra
    assert len(data) == len(main) == 6 and data.class_names == main.class_names
    assert registry.get("dataset", "joint").num_classes(comp.cfg) == len(main.class_names)
    idx = torch.tensor([5, 0, 2])
    batch = data.get_batch(idx)
    assert batch["image"].shape == (3, 3, 3, 16, 16) and batch["still"].shape == (3, 3, 16, 16)
    assert torch.equal(batch["image"], main.get_batch(idx)["image"])
    assert torch.equal(batch["still"], extra.get_batch(idx)["image"])  # digits' 5, 0, 2
    assert torch.equal(batch["still_label"], extra.get_batch(idx)["label"])
    item = data[5]  # an item is the same sample as the batch's
    assert torch.equal(item["image"], batch["image"][0]) and torch.equal(item["still"], batch["still"][0])
    # the config is fully resolved (config.yaml): the parts carry every field, at the joint's resolution
    assert to_dict(comp)["main"]["resolution"] == 16 and to_dict(comp)["extra"]["name"] == "digits"


def test_the_extra_index_wraps_around_a_shorter_extra_dataset():
    data = component_from_dict("dataset", {"name": "joint", "resolution": 16, "main": {"name": "digits"},
                                           "extra": {**CLIPS, "clips": 4}, "key": "clip"}, "data").build()  # fmt: skip
    batch = data.get_batch(torch.tensor([1, 5, 9]))
    assert batch["clip"].shape == (3, 3, 3, 16, 16)
    assert torch.equal(batch["clip"][0], batch["clip"][1]) and torch.equal(batch["clip"][1], batch["clip"][2])


@pytest.mark.parametrize(
    "kw,match",
    [({"extra": {"name": "digits", "resolution": 8}}, "joint's resolution"), ({"key": "label"}, "new identifier"),
     ({"main": {"name": "joint"}}, "plain datasets"), ({"extra": "digits"}, "expected a mapping")],
)  # fmt: skip
def test_bad_joint_configs_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        joint(**kw)
