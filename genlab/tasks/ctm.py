"""Task ``ctm``: a consistency trajectory model (Kim et al., ICLR 2024) distilled from a frozen flow teacher run.

The student is the ``ctm`` objective (``genlab.generators.objectives.ctm``) on the teacher's backbone with a second
time input (requested by the objective through ``backbone_overrides``), initialised from the teacher (its s
embedding starts at zero, so step 0 is the teacher's one-step Euler jump). It trains on the teacher run's own data
(encoded on the fly by the teacher's tokenizer) with CTM's soft consistency matching against the teacher's Heun
solver and the DSM term; the target network G_sg is an EMA of the student (``objective.target_decay``) updated
once per optimizer step, kept in the checkpoints. ``genlab sample --run OUT --steps N --gamma G`` samples the new
run with γ-sampling.

CTM's optional GAN term (``ctm.gan``, off unless ``ctm.gan.weight > 0``): CTM's total loss is
L_CTM + λ_DSM L_DSM + λ_GAN L_GAN (Kim et al., §4), where a discriminator tells the data x0 from the student's jump
to data, the CTM estimate G_sg(G_θ(x_t, t, s), s, 0) (sony/ctm's ImageNet-64 GAN recipe: ``gan_fake_outer_type
target_model_sg``, ``gan_fake_inner_type model``, ``gan_real_free``). The generator's term is λ_GAN =
``gan.weight`` × ||∇_W L_CTM|| / (||∇_W L_GAN|| + 1e-4), W the backbone's last layer, clipped to
[``min_weight``, ``max_weight``] (VQGAN's eq. 7 through ``genlab.tokenizers.losses.adaptive_weight``; CTM's clip
[0.01, 10], ``karras_diffusion.py get_GAN_loss``), from optimizer step ``gan.start`` on. The discriminator is the
tokenizers' PatchGAN (``genlab.tokenizers.losses``, GroupNorm, hinge losses) on the decoded images (``space:
images``, real = the decoded data tokens, so the tokenizer's own artefacts tell nothing apart) or on the token
grids (``space: tokens``); unconditional (CTM's StyleGAN-XL discriminator on pretrained features is not
reproduced). The trainer gives it its own optimizer (``train.disc_lr``) and checkpoints it with its optimizer
state, like a tokenizer's GAN, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.config import ConfigError
from genlab.generators.objectives.ctm import ConsistencyTrajectory
from genlab.registry import register
from genlab.tasks.base import fit
from genlab.tasks.fewstep import FewStepRunConfig, _load_teacher, build_student, preview, resolved_record
from genlab.tasks.generator import GeneratorRun, GeneratorTraining
from genlab.tokenizers.losses import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_pass_loss,
    frozen_logits,
    generator_gan_loss,
)  # fmt: skip
from genlab.train import Hooks


@dataclass
class CTMGANConfig:
    """CTM's GAN term (the module docstring); ``weight: 0`` (the default) builds no discriminator at all."""

    weight: float = 0.0  # scale of λ_GAN L_GAN (CTM's discriminator_weight: 1); 0: off
    start: int = 0  # optimizer step from which the generator gets the term (CTM: after its CTM+DSM phase)
    disc_train_start: int = 0  # step from which the discriminator trains (may precede start)
    adaptive: bool = True  # λ_GAN = ||∇_W L_CTM|| / ||∇_W L_GAN|| at the backbone's last layer W; false: 1
    min_weight: float = 0.01  # the adaptive weight's clip (CTM: [0.01, 10])
    max_weight: float = 10.0
    space: Literal["images", "tokens"] = "images"  # what the discriminator sees: decoded images or token grids
    disc_layers: int = 2  # PatchGAN layers (each halves the input; 16x16 inputs take at most 2)
    disc_ch: int = 64  # PatchGAN base width
    disc_loss: Literal["hinge", "vanilla"] = "hinge"  # the discriminator's loss (CTM: hinge)
    gen_loss: Literal["hinge", "non-saturating"] = "hinge"  # the generator's term (CTM: -D(fake))

    def validate(self) -> None:
        for key in ("weight", "min_weight", "max_weight"):
            v = getattr(self, key)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{key} must be a number >= 0, got {v}")
        if not 0 < self.min_weight <= self.max_weight:
            raise ValueError(f"need 0 < min_weight <= max_weight, got {self.min_weight}, {self.max_weight}")
        if min(self.start, self.disc_train_start) < 0 or self.disc_layers < 1 or self.disc_ch < 1:
            raise ValueError("start and disc_train_start must be >= 0, disc_layers and disc_ch >= 1")


@dataclass
class CTMConfig:
    init: Literal["teacher", "scratch"] = "teacher"  # the student's initial weights
    gan: CTMGANConfig = field(default_factory=CTMGANConfig)  # CTM's optional GAN term (off by default)


def gan_weight(ctm: Tensor, gan: Tensor, last_layer: Tensor, low: float, high: float) -> Tensor:
    """CTM's λ_GAN: ||∇_W L_CTM|| / (||∇_W L_GAN|| + 1e-4) at the last layer W (VQGAN's eq. 7, averaged over
    processes), clipped to [low, high] (CTM: [0.01, 10]); no gradient flows through it."""
    return adaptive_weight(ctm, gan, last_layer, max_weight=high).clamp_min(low)


class CTMAdversary(nn.Module):
    """The discriminator and CTM's GAN terms; the objective calls it from its loss (helper ``"adversary"``).

    ``step`` (set by the training module before each optimizer step) switches the generator's term on at
    ``cfg.start`` and the discriminator's training at ``cfg.disc_train_start``; before then the terms are zeros
    (the discriminator's loss stays in the graph times 0, so data parallelism sees its weights)."""

    def __init__(self, cfg: CTMGANConfig, tokenizer: nn.Module, spec, resolution: int):
        super().__init__()
        self.cfg, self.step = cfg, 0
        if cfg.space == "tokens" and len(spec.shape) != 3:
            raise ConfigError(f"ctm.gan.space: tokens needs (C, H, W) token grids; these are {tuple(spec.shape)} "
                              "(use space: images)")  # fmt: skip
        channels, side = (3, resolution) if cfg.space == "images" else (spec.shape[0], spec.shape[-1])
        if PatchDiscriminator.output_size(side, cfg.disc_layers) < 1:
            fit = [n for n in range(1, cfg.disc_layers) if PatchDiscriminator.output_size(side, n) >= 1]
            raise ConfigError(f"ctm.gan.disc_layers={cfg.disc_layers}: a PatchGAN of that depth sees {side}x{side} "
                              f"inputs as an empty map; " + (f"use at most {fit[-1]}" if fit else "they are too "
                              "small for one"))  # fmt: skip
        # a plain dict: the frozen tokenizer (the training module's) is no submodule here
        self.decoder = {"decode": tokenizer.decode} if cfg.space == "images" else {}
        self.discriminator = PatchDiscriminator(cfg.disc_layers, cfg.disc_ch, in_channels=channels)

    def seen(self, tokens: Tensor, seeds: Tensor) -> Tensor:
        """What the discriminator looks at: (B, 3, H, W) decoded images, or the (B, C, h, w) tokens."""
        return self.decoder["decode"](tokens, seeds=seeds) if self.cfg.space == "images" else tokens

    def forward(self, *, real: Tensor, fake: Tensor, ctm: Tensor, last_layer: Tensor, seeds: Tensor) -> dict:
        """``real`` x0 and ``fake`` the student's jumps (B, ...) as tokens; ``ctm`` L_CTM with its graph."""
        cfg, D = self.cfg, self.discriminator
        with torch.no_grad():
            real_in = self.seen(real, seeds)
        fake_in = self.seen(fake, seeds)
        term = weight = ctm.new_zeros(())
        if self.step >= cfg.start:
            g = generator_gan_loss(cfg.gen_loss, frozen_logits(D, fake_in.float()))
            adaptive = cfg.adaptive and torch.is_grad_enabled()
            weight = gan_weight(ctm, g, last_layer, cfg.min_weight, cfg.max_weight) if adaptive else ctm.new_ones(())
            term = cfg.weight * weight * g
        d_loss = discriminator_pass_loss(D, cfg.disc_loss, real_in.float(), fake_in.float())
        on = 1.0 if self.step >= cfg.disc_train_start else 0.0
        return {"loss": term, "discriminator_loss": on * d_loss, "gan": term.detach(), "gan_weight": weight,
                "disc": d_loss.detach()}  # fmt: skip


class CTMTraining(GeneratorTraining):
    """The CTM objective's loss on the teacher run's tokens; the frozen teacher and the EMA target as submodules
    (moved to the device and checkpointed with the model, never optimized); with ``gan.weight > 0`` the adversary
    too, whose ``discriminator`` the trainer gives its own optimizer."""

    def __init__(self, tokenizer: nn.Module, student: ConsistencyTrajectory, teacher: nn.Module,
                 gan: CTMGANConfig | None = None, resolution: int = 0):  # fmt: skip
        super().__init__(tokenizer, student)
        self.teacher = teacher.eval().requires_grad_(False)
        self.target = copy.deepcopy(student.backbone).requires_grad_(False)
        student.attach("teacher", self.teacher)
        student.attach("target", self.target)
        self.adversary = None
        if gan is not None and gan.weight > 0:
            if not callable(getattr(student.backbone, "last_layer", None)):
                raise ConfigError(f"ctm.gan: the backbone {type(student.backbone).__name__} names no last_layer() "
                                  "for the adaptive weight; use a DiT or ctm.gan.weight=0")  # fmt: skip
            self.adversary = CTMAdversary(gan, self.tokenizer, student.spec, resolution)
            student.attach("adversary", self.adversary)
            self.log_keys = (*self.log_keys, "gan", "gan_weight", "disc")

    @property
    def discriminator(self) -> nn.Module | None:
        return self.adversary.discriminator if self.adversary is not None else None

    def set_step(self, step: int) -> None:
        if step > 0:
            self.generator.update_target()  # after each optimizer step (the trainer calls this before the next)
        if self.adversary is not None:
            self.adversary.step = step


@dataclass
class CTMRunConfig(FewStepRunConfig):
    """``task: ctm``: a CTM student of a frozen flow teacher run."""

    ctm: CTMConfig = field(default_factory=CTMConfig)
    METHOD = "ctm"
    SECTION = CTMConfig
    DEFAULT_OBJECTIVE = {"name": "ctm"}


@register("task", "ctm")
class CTMRun:
    Config = CTMRunConfig

    record = staticmethod(resolved_record)  # what config.yaml holds, for --resume's run-folder guard

    @staticmethod
    def load(run, *, device=None):
        """A student run is a generator run: its tokenizer, its backbone under its objective, EMA weights."""
        return GeneratorRun.load(run, device=device)

    @staticmethod
    def train(cfg: CTMRunConfig, out: Path, *, resume: str | None = None) -> Path:
        teacher = _load_teacher(cfg.teacher)
        cfg = cfg.resolve(teacher)
        student = build_student(cfg, teacher, init=cfg.ctm.init)
        if not isinstance(student.generator, ConsistencyTrajectory):
            raise ConfigError(f"objective: a ctm run trains objective ctm, not {cfg.objective.name}")
        dataset = cfg.data.build()
        if len(dataset) < 1:
            raise ConfigError(f"dataset {cfg.data.name} (the teacher's) is empty")
        gan = cfg.ctm.gan
        model = CTMTraining(student.tokenizer, student.generator, teacher.pipeline.weights, gan,
                            cfg.data.cfg.resolution)  # fmt: skip
        n = sum(p.numel() for p in student.weights.parameters())
        print(f"ctm: student {n:,} parameters, init {cfg.ctm.init}, teacher {teacher.path} ({teacher.sha256[:12]})")
        if model.adversary is not None:
            d = sum(p.numel() for p in model.discriminator.parameters())
            print(f"ctm: GAN term weight {gan.weight:g} from step {gan.start} (discriminator {d:,} parameters on "
                  f"{gan.space}, trained from step {gan.disc_train_start})")  # fmt: skip
        hooks = Hooks(sample=preview(student, cfg.sample.options), export=lambda m, run_dir: student.save(run_dir))
        return fit(cfg.train, model, dataset, out, hooks, cfg.to_dict(), resume)
