"""Task ``titok``: TiTok's two-stage recipe (Yu et al. 2024, sec. 3.3; bytedance/1d-tokenizer, Stage1 / Stage2 losses).

- **Stage 1** (``head: legacy``): a frozen 2-D VQ *teacher* tokenizer run (``teacher.run=RUN``) encodes each image
  to its h x w codes ("proxy codes"); TiTok's decoder learns them by cross-entropy, plus the quantizer loss. The
  teacher's quantizer and decoder are copied into TiTok (``tokenizer.proxy``, filled in from the teacher's config),
  so the exported run decodes pixels on its own.
- **Stage 2** (``tokenizer.freeze_encoder: true``, ``train.init_from: STAGE1_RUN:tokenizer``): encoder, latent tokens
  and quantizer frozen; the decoder and the proxy decoder are fine-tuned on pixels (L2 + perceptual + GAN with a
  delayed start: the shared tokenizer criterion). No teacher is needed.
- ``head: pixel`` with this task is the single-stage recipe, as ``task: tokenizer`` trains it.

The run config is a tokenizer run's plus a ``teacher: {run: PATH}`` section; the run records the teacher's path and
the sha256 of its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor, nn

from genlab.config import ConfigError, RunConfig, to_dict
from genlab.registry import register
from genlab.runs.store import RunFolder
from genlab.tasks.base import fit, init_from, not_sampleable, training_data
from genlab.tasks.teacher import TeacherConfig, load_teacher, teacher_record
from genlab.tasks.tokenizer import TokenizerTraining, tokenizer_hooks
from genlab.tokenizers.encoders import Frozen


@dataclass
class TiTokRunConfig(RunConfig):
    """A tokenizer run (data, tokenizer, train, sample) plus the teacher of stage 1."""

    teacher: TeacherConfig | None = None  # stage 1's frozen 2-D VQ tokenizer run (stage 2 needs none)
    task: str = "titok"

    @classmethod
    def from_dict(cls, data: dict) -> TiTokRunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a run config is a mapping of sections, got {data!r}")
        rest = {k: v for k, v in data.items() if k != "teacher"}
        base = RunConfig.from_dict({**rest, "task": "tokenizer"})
        given = data.get("teacher")
        named = given.get("run") if isinstance(given, dict) else given  # a preset leaves it empty: set on the CLI
        teacher = TeacherConfig.from_dict(given) if named else None
        parts = {f.name: getattr(base, f.name) for f in fields(RunConfig) if f.name != "task"}
        if base.tokenizer.name != "titok":
            raise ConfigError(f"task titok trains a titok tokenizer, got tokenizer.name={base.tokenizer.name!r}")
        return cls(**parts, teacher=teacher)

    def to_dict(self) -> dict:
        out = {k: v for k, v in to_dict(self).items() if v is not None and k != "teacher"}
        return {**out, **({"teacher": self.teacher.to_dict()} if self.teacher is not None else {})}


class TiTokTraining(TokenizerTraining):
    """The tokenizer's loss with the teacher's codes of each image in ``batch["proxy_codes"]`` (stage 1)."""

    def __init__(self, tokenizer: nn.Module, teacher):  # a genlab.tasks.teacher.Teacher, or None
        super().__init__(tokenizer)
        self.teacher = Frozen(teacher.tokenizer) if teacher is not None else None  # outside the module tree

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.teacher is not None:
            with torch.no_grad():
                codes = self.teacher.module.to(batch["image"].device).encode(batch["image"])  # (B, h, w)
            batch = {**batch, "proxy_codes": codes}
        return super().forward(batch)


@register("task", "titok")
class TiTokRun:
    Config = TiTokRunConfig

    @staticmethod
    def record(cfg: TiTokRunConfig) -> dict:
        """The config.yaml ``train`` writes: the teacher's resolved path and sha256 (stage 1)."""
        teacher = {"teacher": teacher_record(cfg.teacher)} if cfg.teacher is not None else {}
        return {**cfg.to_dict(), **teacher}

    @staticmethod
    def load(run: RunFolder, *, device=None) -> NoReturn:
        raise not_sampleable(run, "tokenizer")

    @staticmethod
    def train(cfg: TiTokRunConfig, out: Path, *, resume: str | None = None) -> Path:
        dataset = training_data(cfg)
        tcfg = cfg.tokenizer.cfg
        stage1 = tcfg.head == "legacy" and not tcfg.freeze_encoder
        teacher = None
        if stage1:
            if cfg.teacher is None:
                raise ConfigError("stage 1 (head: legacy) learns a teacher's codes: set teacher.run=RUN (a VQ run)")
            teacher = load_teacher(cfg.teacher)
            if teacher.pipeline is not None:
                raise ConfigError(f"teacher.run: {teacher.path} is a generator run; stage 1 needs a VQ tokenizer run")
            proxy = RunFolder(teacher.path).read_component_config("tokenizer")
            if tcfg.proxy and tcfg.proxy != proxy:
                print(f"tokenizer.proxy: the teacher's tokenizer ({teacher.path}) replaces the preset's")
            tcfg.proxy = proxy  # the proxy is the teacher's quantizer and decoder
            cfg.teacher = TeacherConfig.from_dict(teacher.record())
        tokenizer = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
        if teacher is not None:
            tokenizer.load_proxy(teacher.tokenizer.state_dict())
        init_from(cfg.train, {"tokenizer": tokenizer})
        model = TiTokTraining(tokenizer, teacher)
        return fit(cfg.train, model, dataset, out, tokenizer_hooks(cfg, dataset), cfg.to_dict(), resume)
