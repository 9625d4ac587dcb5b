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

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.config import ConfigError, RunConfig, from_dict, to_dict
from genlab.pipeline import load_tokenizer
from genlab.registry import register
from genlab.runs.store import RunError, RunFolder
from genlab.tasks.base import fit, training_data
from genlab.tasks.tokenizer import TokenizerTraining, tokenizer_hooks
from genlab.tokenizers.encoders import Frozen


@dataclass
class TeacherConfig:
    run: str = ""  # the frozen 2-D VQ tokenizer run whose codes stage 1 learns (genlab train --preset ...-vq)
    sha256: str = ""  # written by the task: the sha256 of the teacher's tokenizer/model.safetensors


@dataclass
class TiTokRunConfig(RunConfig):
    """A tokenizer run (data, tokenizer, train, sample) plus the teacher of stage 1."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    task: str = "titok"

    @classmethod
    def from_dict(cls, data: dict) -> TiTokRunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a run config is a mapping of sections, got {data!r}")
        rest = {k: v for k, v in data.items() if k != "teacher"}
        base = RunConfig.from_dict({**rest, "task": "tokenizer"})
        teacher = from_dict(TeacherConfig, data.get("teacher"), "teacher")
        parts = {f.name: getattr(base, f.name) for f in fields(RunConfig) if f.name != "task"}
        if base.tokenizer.name != "titok":
            raise ConfigError(f"task titok trains a titok tokenizer, got tokenizer.name={base.tokenizer.name!r}")
        return cls(**parts, teacher=teacher)

    def to_dict(self) -> dict:
        return {k: v for k, v in to_dict(self).items() if v is not None}


@dataclass
class Teacher:
    tokenizer: nn.Module  # frozen, eval
    path: Path
    sha256: str
    config: dict  # its tokenizer section


def _load_teacher(teacher_cfg: TeacherConfig, *, device=None) -> Teacher:  # merge: genlab.tasks.teacher.load_teacher
    """The frozen tokenizer of a tokenizer run: eval, no gradients, with the sha256 of its weights."""
    path = Path(teacher_cfg.run)
    try:
        _, tok = load_tokenizer(path, device=device)
    except RunError as e:
        raise ConfigError(f"teacher.run: {e}") from None
    weights = RunFolder(path).file("tokenizer/model.safetensors")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    spec = RunFolder(path).read_component_config("tokenizer")
    return Teacher(tok.eval().requires_grad_(False), path, digest, spec)


class TiTokTraining(TokenizerTraining):
    """The tokenizer's loss with the teacher's codes of each image in ``batch["proxy_codes"]`` (stage 1)."""

    def __init__(self, tokenizer: nn.Module, teacher: Teacher | None):
        super().__init__(tokenizer)
        self.teacher = Frozen(teacher.tokenizer) if teacher is not None else None  # outside the module tree

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.teacher is not None:
            with torch.no_grad():
                codes = self.teacher.module.to(batch["image"].device).encode(batch["image"])  # (B, h, w)
            batch = {**batch, "proxy_codes": codes}
        return super().forward(batch)


def init_from(module: nn.Module, spec: str, default_part: str) -> str:
    """Strictly load ``RUN[:component]``'s exported weights into ``module``; returns what was loaded."""
    run, _, part = spec.partition(":")
    part = part or default_part
    folder = RunFolder(run)
    if not folder.has(f"{part}/model.safetensors"):
        raise ConfigError(f"train.init_from: {run} has no {part}/model.safetensors (train that run first)")
    try:
        module.load_state_dict(folder.read_weights(part), strict=True)
    except (RuntimeError, RunError) as e:
        raise ConfigError(f"train.init_from: {run}:{part} does not fit ({str(e).splitlines()[0]})") from None
    return f"{run}:{part}"


@register("task", "titok")
class TiTokRun:
    Config = TiTokRunConfig

    @staticmethod
    def train(cfg: TiTokRunConfig, out: Path, *, resume: str | None = None) -> Path:
        dataset = training_data(cfg)
        tcfg = cfg.tokenizer.cfg
        stage1 = tcfg.head == "legacy" and not tcfg.freeze_encoder
        teacher = None
        if stage1:
            if not cfg.teacher.run:
                raise ConfigError("stage 1 (head: legacy) learns a teacher's codes: set teacher.run=RUN (a VQ run)")
            teacher = _load_teacher(cfg.teacher)
            if tcfg.proxy and tcfg.proxy != teacher.config:
                print(f"tokenizer.proxy: the teacher's tokenizer ({teacher.path}) replaces the preset's")
            tcfg.proxy = teacher.config  # the proxy is the teacher's quantizer and decoder
            cfg.teacher.sha256 = teacher.sha256
        tokenizer = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
        if teacher is not None:
            tokenizer.load_proxy(teacher.tokenizer.state_dict())
        model = TiTokTraining(tokenizer, teacher)
        if cfg.train.init_from:
            model.initialised_from = init_from(tokenizer, cfg.train.init_from, "tokenizer")
            print(f"initialised from {model.initialised_from}")
        return fit(cfg.train, model, dataset, out, tokenizer_hooks(cfg, dataset), cfg.to_dict(), resume)
