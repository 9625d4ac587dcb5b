"""``joint``: a main dataset with a second one's samples beside them in every batch (OmniTokenizer's joint
image + video stage: clips of moving-openmoji with still OpenMoji images).

Sample i is the main dataset's sample i (``image``, ``label``: what every task reads, so the epoch, the class names
and the reconstruction previews are the main dataset's) plus the extra dataset's sample i mod its length under
``key`` (and ``key + "_label"``), so it is fixed per index like every dataset's and the trainer's per-sample seeds
and data positions stay those of the main dataset. A batch of clips and a batch of images cannot be one tensor;
side by side they need no collate rule. Both parts are built at the joint's ``resolution``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from genlab import registry
from genlab.config import ConfigError, component_from_dict, to_dict
from genlab.data.base import batch_by_index
from genlab.registry import register


def _part(spec: Any, resolution: int, where: str):
    """A part's dataset component at ``resolution`` (its own resolution, if given, must agree)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: a dataset section ({{name: ..., ...}}), got {spec!r}")
    if spec.get("resolution", resolution) != resolution:
        raise ConfigError(f"{where}.resolution: the joint's resolution ({resolution}) is both parts'; leave it out")
    if spec.get("name") == "joint":
        raise ConfigError(f"{where}.name: a joint dataset's parts are plain datasets")
    return component_from_dict("dataset", {**spec, "resolution": resolution}, where)


@register("dataset", "joint")
class JointDataset(torch.utils.data.Dataset):
    @dataclass
    class Config:
        resolution: int = 32  # both parts' frame / image side
        main: dict[str, Any] = field(default_factory=lambda: {"name": "moving-openmoji"})  # image/label, the epoch
        extra: dict[str, Any] = field(default_factory=lambda: {"name": "openmoji"})  # the samples beside them
        key: str = "still"  # batch key of the extra samples' images (their labels: KEY_label)

        def validate(self) -> None:
            if not self.key.isidentifier() or self.key in ("image", "label", "seed", "tokens", "lengths"):
                raise ValueError(f"key must be a new identifier (not image, label, seed, ...), got {self.key!r}")
            self.main = to_dict(_part(self.main, self.resolution, "data.main"))
            self.extra = to_dict(_part(self.extra, self.resolution, "data.extra"))

    @staticmethod
    def num_classes(cfg: Config) -> int:
        part = component_from_dict("dataset", cfg.main, "data.main")
        return registry.get("dataset", part.name).num_classes(part.cfg)

    def __init__(self, cfg: Config):
        cfg.validate()
        self.cfg = cfg
        self.main = component_from_dict("dataset", cfg.main, "data.main").build()
        self.extra = component_from_dict("dataset", cfg.extra, "data.extra").build()
        if len(self.extra) < 1:
            raise ConfigError("data.extra: the extra dataset is empty")
        self.class_names = self.main.class_names

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def __len__(self) -> int:
        return len(self.main)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item, extra = self.main[int(i)], self.extra[int(i) % len(self.extra)]
        return {**item, self.cfg.key: extra["image"], f"{self.cfg.key}_label": extra["label"]}

    def get_batch(self, idx: Tensor, flip: Tensor | None = None) -> dict[str, Tensor]:
        """The main samples ``idx`` and the extra samples ``idx mod len(extra)``, neither flipped."""
        extra = batch_by_index(self.extra, idx % len(self.extra))
        return {**batch_by_index(self.main, idx), self.cfg.key: extra["image"], f"{self.cfg.key}_label": extra["label"]}
