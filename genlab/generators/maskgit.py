"""MaskGIT: a bidirectional transformer over discrete tokens, trained to fill in masked tokens and decoded by
iterative confidence-based parallel decoding (Chang et al., "MaskGIT: Masked Generative Image Transformer", 2022;
the public code is google-research/maskgit, JAX). The first genlab generator of discrete tokens: it models any
``discrete`` TokenSpec, a grid (h, w) from a VQ / FSQ / LFQ tokenizer or a 1-D sequence (N,) (TiTok).

**Network.** Token embeddings over ``vocab_size + 1`` ids (id ``vocab_size`` is [MASK]), a learned position
embedding over the N token positions plus the class position, a pre-LN transformer (genlab's Attention and Mlp),
and BERT's MLM head as MaskGIT has it (dense, GELU, LayerNorm, then logits through the *tied* token embeddings
plus a bias), over the ``vocab_size`` codes only.

**Class conditioning: a class token**, as MaskGIT does (its vocabulary holds the 1000 class ids after the 1024
codes, and the class id is token 0 of a 257-token sequence); here the class token comes from its own table
(``LabelEmbedder``, whose row ``num_classes`` is the null class of classifier-free guidance). Why not adaLN
(DiT-style, ENAT's choice): (1) the named ImageNet size is then MaskGIT's own network, parameter for parameter
(adaLN-Zero would add 6·D² + 6·D per block, +85M at D = 768, depth 24, a different model from the paper's);
(2) the class reaches every position through attention, so grids and 1-D sequences take one code path with no
per-block conditioning; (3) CFG needs only the null row of the table.

**Training** (``loss``): per sample, a mask ratio r — MaskGIT's r = cos(π/2·u), u ~ U[0, 1), or AutoNAT/ENAT's
r ~ Beta(12, 3) — masks round(r·N) positions (at least one), chosen from the sample's seed; cross-entropy with
label smoothing on the masked positions only, averaged per sample then over the batch (so a sample's term does
not depend on its batch); class dropout to the null class. Unlike MaskGIT (dropout 0.1) there is no dropout:
it would draw from the global RNG and break per-sample determinism.

**Decoding** (``sample`` / ``decode``), MaskGIT's Algorithm (libml/parallel_decode.py): start from all [MASK]
(or from given tokens); at step i of T every masked position draws a token from softmax(logits / temperature)
(argmax at temperature 0); its confidence is its log-prob under softmax(logits) plus Gumbel noise scaled by
``choice_temperature · (1 - (i+1)/T)`` (MaskGIT's annealing; 4.5 is its ImageNet value); known tokens keep
infinite confidence; the least confident are re-masked so that ⌊U·γ((i+1)/T)⌋ stay masked (U: the masked count
at the start, γ the decoding schedule), at least one fewer per step, none after the last. One network evaluation
per step (nfe = steps; a CFG pair counts once). All noise comes from per-sample seeds, per step.

**Guidance**: logits = uncond + w·(cond - uncond), the two passes batched. ``cfg_schedule = "linear"`` ramps w with
the mask ratio r_i = γ(i/T) of step i's input: w_i = 1 + (cfg - 1)·(1 - r_i), so the first step (all masked) is
unguided and w approaches ``cfg`` as the image fills in. ENAT ramps its scale with the step fraction instead
(libs/nat_misc.py: logits = cond + s·(cond - uncond), s = cfg_scale·i/T, from the second step); with
``mask_schedule = "linear"`` (γ(t) = 1 - t) ours is exactly that with cfg = 1 + cfg_scale; ``cfg_schedule =
"step"`` is that ramp under any mask schedule, ``"power-cosine"`` MDT's 1 + (cfg - 1)(1 - cos(π (i/T)^p)) / 2.

**TiTok's rules** (bytedance/1d-tokenizer ``modeling/maskgit.py`` ``ImageBert.generate``, as its FID script calls
it), each an option defaulting to MaskGIT's: ``mask_schedule = "arccos"`` (γ(t) = arccos(t) / (π/2); training
``Config.mask_schedule = "arccos"`` draws its ratio the same way); ``confidence = "logit"`` ranks by the raw guided
logit of the drawn token instead of its log-prob; ``temperature_schedule = "anneal"`` draws the tokens at
temperature·(1 - (i+1)/T) (TiTok's Gumbel-max draw at ``randomize_temperature`` annealed is that temperature: the
same law, from genlab's per-sample uniforms); ``logit_temperature`` + ``logit_temperature_ramp``·(1 - (i+1)/T)
divides the logits before both (its ``softmax_temperature_annealing``: 0.5 + 0.8 (1 - (i+1)/T)). Not reproduced:
TiTok keeps one token masked when only one is left before the last step, and re-masks every tie of the cut-off
(genlab: stable ranks); neither arises when the tokens outnumber the steps and the confidences differ.

**Layout** switches (``Config``; defaults: the network above): ``norm_position = "post"`` (BERT's LN(x + f(x)) and
no final norm), ``head = "linear"`` (an untied read-out), ``gelu = "exact"``, ``norm_eps``, ``qkv_bias``,
``embed_norm`` and ``skips`` (U-ViT's long skips: k in-blocks, a middle block, k out-blocks that fuse the matching
in-block's output by a linear on the concatenation; depth 2k + 1). TiTok's released generators are BERT
(L-32, B-64: post, linear, exact, eps 1e-12) and U-ViT (S-128: skips, no q/k/v bias, no embedding norm, eps 1e-5):
``genlab import titok-maskgit`` (``genlab/imports/titok_maskgit.py``).

Sizes (``MASKGIT_SIZES``): ``imagenet256`` is MaskGIT's ImageNet-256 transformer (configs/maskgit_class_cond_config
.py: 24 layers, width 768, 16 heads, MLP 3072) on its VQGAN's 16x16 tokens of 1024 codes, 1000 classes:
``maskgit_param_count("imagenet256")`` = 172,458,496, the public code's transformer has 172,457,193 (+1,303: the
null-class row, a final LayerNorm that pre-LN needs, and a head bias over 1024 codes instead of 2025 ids). The
227M of the VAR and TiTok comparison tables is not the transformer alone: 172.5M + the 54.5M of MaskGIT's VQGAN
(``imagenet256/maskgit-vqgan.yaml``) = 227.0M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.base import Generator, GeneratorError, Sampled, TokenCodes, TokenSpec, option
from genlab.generators.base import SampleOptions as BaseSampleOptions
from genlab.nn import Attention, LabelEmbedder, LayerNorm, Mlp, per_sample_rand
from genlab.nn.sampling import drop_labels, guide_logits, gumbel, sample_tokens
from genlab.registry import register

TRAIN_SCHEDULES = ("cosine", "beta", "arccos")
DECODE_SCHEDULES = ("cosine", "linear", "arccos")
CFG_SCHEDULES = ("constant", "linear")  # the guidance schedules every masked generator shares (MaskGIT, ResGen)
MASKGIT_CFG_SCHEDULES = (*CFG_SCHEDULES, "step", "power-cosine")  # MaskGIT's own: TiTok's released generators
BETA = (12, 3)  # AutoNAT / ENAT's mask-ratio distribution Beta(a, b)
# per-sample RNG streams (genlab.nn.rng): one per kind of draw, so draws never share numbers
STREAM_RATIO, STREAM_POSITIONS, STREAM_DROP = 1, 2, 3
STREAM_DECODE = 1000  # step i draws its tokens from stream 1000 + 2i and its choice noise from 1001 + 2i

# ----------------------------------------------------------------------------- helpers


def decode_schedule(name: str, t: float) -> float:
    """γ(t): the fraction of the initially masked tokens still masked after progress t in [0, 1]: cos(π/2 t)
    (MaskGIT), 1 - t, or arccos(t) / (π/2) (TiTok's ``modeling/maskgit.py``: on 64 tokens x 8 steps 58, 53, 48, 42,
    36, 29, 20, 0 stay masked, against the cosine's 62, 59, 53, 45, 35, 24, 12, 0)."""
    if name == "cosine":
        return math.cos(math.pi / 2 * t)
    return math.acos(t) / (math.pi / 2) if name == "arccos" else 1.0 - t


def guidance_weight(options, i: int) -> float:
    """The guidance w of step i of T (uncond + w (cond - uncond)) under ``options.cfg_schedule``: ``constant``;
    ``linear`` in 1 - the mask ratio r_i = γ(i/T) of the step's input; ``step``: 1 + (w - 1) i/T (ENAT; TiTok's
    ``guidance_decay: linear``, whose scale s = g i/T on cond + s (cond - uncond) is w = 1 + g); ``power-cosine``
    (MDT, TiTok-S-128): 1 + (w - 1)(1 - cos(π (i/T)^p)) / 2 with p = ``cfg_power``."""
    o, T = options, int(options.steps)
    if o.cfg_schedule == "constant":
        return o.cfg
    if o.cfg_schedule == "linear":
        return 1.0 + (o.cfg - 1.0) * (1.0 - decode_schedule(o.mask_schedule, i / T))
    if o.cfg_schedule == "step":
        return 1.0 + (o.cfg - 1.0) * i / T
    return 1.0 + (o.cfg - 1.0) * (1.0 - math.cos(math.pi * (i / T) ** o.cfg_power)) / 2


def ranks(scores: Tensor) -> Tensor:
    """The rank (0 = smallest) of each entry along the last axis; ties broken by position (stable)."""
    order = scores.argsort(dim=-1, stable=True)
    return torch.empty_like(order).scatter_(
        -1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order)
    )


def start_ids(B: int, N: int, mask_id: int, device, tokens: Tensor | None, known: Tensor | None) -> Tensor:
    """(B, N) decoding input: [MASK] everywhere, or ``tokens`` where ``known`` (default: everywhere) is True."""
    ids = torch.full((B, N), mask_id, dtype=torch.long, device=device)
    if tokens is None:
        return ids
    given = known.reshape(B, N).to(device) if known is not None else torch.ones_like(ids, dtype=torch.bool)
    return torch.where(given, tokens.reshape(B, N).to(device).long(), ids)


# ----------------------------------------------------------------------------- blocks


class Block(nn.Module):
    """Transformer layer, bidirectional (no attention mask). ``post_norm`` False: pre-LN, x + attn(norm(x)) then
    x + mlp(norm(x)); True: BERT's post-LN, norm(x + attn(x)) then norm(x + mlp(x)). ``skip``: U-ViT's long skip,
    x = Linear(concat(x, skip)) first (Bao et al. 2023, eq. in §3: the out-blocks' ``skip_linear``)."""

    def __init__(self, hidden: int, num_heads: int, mlp_hidden: int, *, post_norm: bool = False, eps: float = 1e-6,
                 gelu: str = "tanh", qkv_bias: bool = True, skip: bool = False):  # fmt: skip
        super().__init__()
        self.post_norm = post_norm
        self.norm1 = LayerNorm(hidden, eps=eps)
        self.attn = Attention(hidden, num_heads, qkv_bias=qkv_bias)
        self.norm2 = LayerNorm(hidden, eps=eps)
        self.mlp = Mlp(hidden, mlp_hidden, approximate="none" if gelu == "exact" else "tanh")
        self.skip_linear = nn.Linear(2 * hidden, hidden) if skip else None

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:  # (B, 1 + N, D)
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        if self.post_norm:
            x = self.norm1(x + self.attn(x))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MlmHead(nn.Module):
    """BERT's masked-LM head (MaskGIT's MlmLayer): dense, GELU, LayerNorm, logits through the tied token embeddings
    (the ``vocab_size`` code rows; [MASK] is never predicted) plus a bias."""

    def __init__(self, hidden: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = LayerNorm(hidden, eps=1e-6)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, embeddings: Tensor) -> Tensor:  # h (B, N, D), embeddings (V + 1, D)
        h = self.norm(F.gelu(self.dense(h)))
        return F.linear(h, embeddings[: self.bias.shape[0]].to(h.dtype), self.bias.to(h.dtype))  # (B, N, V)


class LinearHead(nn.Linear):
    """An untied linear read-out over the ``vocab_size`` codes (TiTok's generators' ``lm_head``)."""

    def forward(self, h: Tensor, embeddings: Tensor | None = None) -> Tensor:  # (B, N, D) -> (B, N, V)
        return super().forward(h)


# ----------------------------------------------------------------------------- sampling options


@dataclass
class MaskedSampleOptions(BaseSampleOptions):
    """The decoding options every masked-token generator shares (MaskGIT, ENAT, ResGen)."""

    guidance_schedules: ClassVar[tuple[str, ...]] = CFG_SCHEDULES  # the cfg_schedule values this generator knows

    steps: int = option(8, "decoding steps = network evaluations (1 .. number of tokens)", low=1)
    cfg: float = option(1.0, "classifier-free guidance scale w (1: none, 0: unconditional)", low=0.0, high=100.0)
    cfg_schedule: Literal["constant", "linear"] = option(
        "linear", "guidance over the steps: constant w, or linear: 1 + (w - 1)(1 - mask ratio of the step's input)"
    )
    temperature: float = option(1.0, "temperature of the token draws (0: argmax)", low=0.0, high=100.0)
    choice_temperature: float = option(
        4.5,
        "Gumbel noise on the confidences, annealed by 1 - (i+1)/T (0: keep the most likely)",
        low=0.0,
        high=100.0,
    )
    mask_schedule: Literal["cosine", "linear", "arccos"] = option(
        "cosine", "fraction still masked after progress t: cos(pi/2 t) (MaskGIT), 1 - t, arccos(t)/(pi/2) (TiTok)"
    )

    def check(self) -> None:
        if isinstance(self.steps, bool) or int(self.steps) != self.steps:
            raise ValueError(f"steps must be an integer, got {self.steps}")
        if self.cfg_schedule not in self.guidance_schedules:
            raise ValueError(
                f"cfg_schedule must be one of {', '.join(self.guidance_schedules)}, got {self.cfg_schedule!r}"
            )
        if self.mask_schedule not in DECODE_SCHEDULES:
            raise ValueError(f"mask_schedule must be one of {', '.join(DECODE_SCHEDULES)}, got {self.mask_schedule!r}")


@dataclass
class MaskGITSampleOptions(MaskedSampleOptions):
    """MaskGIT's: the shared options plus the rules of TiTok's released generators (``modeling/maskgit.py``
    ``ImageBert.generate``), each defaulting to MaskGIT's own."""

    guidance_schedules: ClassVar[tuple[str, ...]] = MASKGIT_CFG_SCHEDULES

    cfg_schedule: Literal["constant", "linear", "step", "power-cosine"] = option(
        "linear",
        "guidance over the steps: constant w; linear: 1 + (w - 1)(1 - mask ratio of the step's input); step: "
        "1 + (w - 1) i/T (TiTok's linear decay, ENAT); power-cosine: 1 + (w - 1)(1 - cos(pi (i/T)^p))/2 (MDT)",
    )
    cfg_power: float = option(3.0, "p of the power-cosine guidance schedule (TiTok-S-128, MDT: 3)", low=0.0, high=100.0)
    temperature_schedule: Literal["constant", "anneal"] = option(
        "constant", "token temperature over the steps: constant, or anneal: temperature (1 - (i+1)/T) (TiTok)"
    )
    logit_temperature: float = option(
        1.0, "logits are divided by logit_temperature + logit_temperature_ramp (1 - (i+1)/T) before the draw and the "
        "ranking (TiTok's sampling script: 0.5 and 0.8)", low=1e-3, high=100.0,
    )  # fmt: skip
    logit_temperature_ramp: float = option(0.0, "see logit_temperature", low=0.0, high=100.0)
    confidence: Literal["log_prob", "logit"] = option(
        "log_prob", "what ranks the drawn tokens: their log-probability (MaskGIT) or their raw guided logit (TiTok)"
    )

    def check(self) -> None:
        super().check()
        for name, allowed in (("temperature_schedule", ("constant", "anneal")), ("confidence", ("log_prob", "logit"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------- model


@register("generator", "maskgit")
class MaskGIT(Generator):
    ROLE = "generator"
    TOKEN_KINDS = ("discrete",)
    LOG_KEYS = ("acc",)  # logged beside the loss: top-1 accuracy on the masked positions

    @dataclass
    class Config:
        depth: int = 4  # transformer layers (skips: 2k + 1, k in-blocks, a middle block, k out-blocks)
        hidden_size: int = 256  # width D
        num_heads: int = 4  # attention heads (D must divide by it)
        mlp_ratio: float = 4.0  # MLP width / D (MaskGIT: 3072 / 768)
        mask_schedule: Literal["cosine", "beta", "arccos"] = "cosine"  # training mask ratio: cos(pi/2 u) (MaskGIT),
        # Beta(12, 3) (AutoNAT/ENAT), arccos(u) / (pi/2) (TiTok's masking_input_tokens)
        label_smoothing: float = 0.1  # of the masked-token cross-entropy (MaskGIT, ENAT: 0.1)
        class_dropout: float = 0.1  # probability of training a sample with the null class (for CFG)
        # the network's layout (defaults: genlab's MaskGIT; TiTok's BERT generators: post, linear, exact, 1e-12)
        norm_position: Literal["pre", "post"] = "pre"  # pre-LN blocks + a final LayerNorm, or BERT's post-LN
        head: Literal["mlm", "linear"] = "mlm"  # MaskGIT's MLM head (tied embeddings) or an untied linear read-out
        gelu: Literal["tanh", "exact"] = "tanh"  # the MLPs' GELU: tanh approximation or exact (erf: BERT, U-ViT)
        norm_eps: float = 1e-6  # the blocks' and embedding's LayerNorm epsilon (BERT: 1e-12; torch's default 1e-5)
        qkv_bias: bool = True  # biases on q, k, v (U-ViT: none)
        embed_norm: bool = True  # LayerNorm on the embedded sequence (MaskGIT, BERT); U-ViT has none
        skips: bool = False  # U-ViT's long skips from the in-blocks to the out-blocks (TiTok-S-128's generator)

        def validate(self) -> None:
            if min(self.depth, self.hidden_size, self.num_heads) <= 0 or not self.mlp_ratio > 0:
                raise ValueError("depth, hidden_size, num_heads and mlp_ratio must be positive")
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
            if self.mask_schedule not in TRAIN_SCHEDULES:
                raise ValueError(f"mask_schedule must be one of {', '.join(TRAIN_SCHEDULES)}")
            for name in ("label_smoothing", "class_dropout"):
                v = getattr(self, name)
                if not 0.0 <= v < 1.0:
                    raise ValueError(f"{name} must be in [0, 1), got {v}")
            for name, allowed in (("norm_position", ("pre", "post")), ("head", ("mlm", "linear")),
                                  ("gelu", ("tanh", "exact"))):  # fmt: skip
                if getattr(self, name) not in allowed:
                    raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
            if not 0.0 < self.norm_eps < 1.0:
                raise ValueError(f"norm_eps must be in (0, 1), got {self.norm_eps}")
            if self.skips and (self.depth % 2 == 0 or self.norm_position == "post"):
                raise ValueError("skips need an odd depth (k in-blocks, a middle block, k out-blocks) and pre-LN")

    SampleOptions = MaskGITSampleOptions

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None):
        super().__init__()
        self.check_spec(spec)
        cfg.validate()
        self.cfg, self.spec, self.num_classes = cfg, spec, num_classes
        self.vocab_size = spec.vocab_size
        self.mask_id = spec.vocab_size  # the [MASK] token id
        N, D, eps = spec.num_positions, cfg.hidden_size, cfg.norm_eps
        self.tok_embedder = nn.Embedding(spec.vocab_size + 1, D)
        self.y_embedder = LabelEmbedder(num_classes, D)  # the class token; row num_classes = null class
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + N, D))  # class position first, then tokens in raster order
        self.embed_norm = LayerNorm(D, eps=eps) if cfg.embed_norm else nn.Identity()
        post, half = cfg.norm_position == "post", cfg.depth // 2
        layout = dict(post_norm=post, eps=eps, gelu=cfg.gelu, qkv_bias=cfg.qkv_bias)
        self.blocks = nn.ModuleList(
            Block(D, cfg.num_heads, int(D * cfg.mlp_ratio), **layout, skip=cfg.skips and i > half)
            for i in range(cfg.depth)
        )
        self.norm = nn.Identity() if post else LayerNorm(D, eps=eps)  # post-LN blocks end normalised
        self.head = MlmHead(D, spec.vocab_size) if cfg.head == "mlm" else LinearHead(D, spec.vocab_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """MaskGIT's init: truncated N(0, 0.02) for every weight and embedding, zero biases, unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)

    def forward(self, ids: Tensor, labels: Tensor) -> Tensor:
        """ids (B, N) in 0 .. vocab_size (= [MASK]), labels (B,) (num_classes = null) -> logits (B, N, vocab_size)."""
        x = self.tok_embedder(ids)  # (B, N, D)
        c = self.y_embedder(labels).unsqueeze(1)  # (B, 1, D)
        h = self.embed_norm(torch.cat([c, x], dim=1) + self.pos_embed)  # (B, 1 + N, D)
        if not self.cfg.skips:
            for block in self.blocks:
                h = block(h)
        else:  # U-ViT: in-blocks keep their outputs, the middle block, out-blocks take them back in reverse
            half, kept = self.cfg.depth // 2, []
            for block in self.blocks[:half]:
                h = block(h)
                kept.append(h)
            h = self.blocks[half](h)
            for block in self.blocks[half + 1 :]:
                h = block(h, kept.pop())
        return self.head(self.norm(h[:, 1:]), self.tok_embedder.weight)

    # -- training

    def mask_ratio(self, seeds: Tensor, device) -> Tensor:
        """(B,) mask ratios from the training schedule. Beta(a, b) with integer a, b is the a-th smallest of
        a + b - 1 uniforms."""
        if self.cfg.mask_schedule in ("cosine", "arccos"):
            u = per_sample_rand(seeds, (), stream=STREAM_RATIO, device=device)
            if self.cfg.mask_schedule == "arccos":  # TiTok's, clamped as it clamps (1e-6 .. 1)
                return (torch.acos(u) / (math.pi / 2)).clamp(1e-6, 1.0)
            return torch.cos(math.pi / 2 * u)
        a, b = BETA
        u = per_sample_rand(seeds, (a + b - 1,), stream=STREAM_RATIO, device=device)  # (B, a + b - 1)
        return u.sort(dim=-1).values[:, a - 1]

    def loss(self, tokens: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """Masked-token cross-entropy (MaskGIT eq. 1, with label smoothing) on ``tokens`` (B, *spec.shape)."""
        ids = tokens.reshape(tokens.shape[0], -1).long()  # (B, N)
        B, N = ids.shape
        n_masked = (self.mask_ratio(seeds, ids.device) * N).round().clamp(1, N).long()  # (B,)
        scores = per_sample_rand(seeds, (N,), stream=STREAM_POSITIONS, device=ids.device)  # (B, N)
        mask = ranks(scores) < n_masked[:, None]  # (B, N) True = masked
        labels = drop_labels(labels, seeds, self.cfg.class_dropout, self.num_classes, stream=STREAM_DROP)
        logits = self(torch.where(mask, self.mask_id, ids), labels)  # (B, N, V)
        ce = F.cross_entropy(
            logits.float().transpose(1, 2), ids, reduction="none", label_smoothing=self.cfg.label_smoothing
        )  # (B, N)
        m = mask.float()
        per_sample = (ce * m).sum(1) / m.sum(1)
        acc = ((logits.argmax(-1) == ids).float() * m).sum(1) / m.sum(1)
        return {"loss": per_sample.mean(), "acc": acc.mean().detach()}

    # -- decoding

    def guided_logits(self, ids: Tensor, labels: Tensor, w: float) -> Tensor:
        """uncond + w (cond - uncond) (B, N, V) in float32; the conditional pass alone at w = 1."""
        if w == 1.0:
            return self(ids, labels).float()
        null = torch.full_like(labels, self.num_classes)
        cond, uncond = self(torch.cat([ids, ids]), torch.cat([labels, null])).float().chunk(2)
        return guide_logits(cond, uncond, w, rule="lerp")

    def sample(self, labels: Tensor, seeds: Tensor, options: SampleOptions) -> Sampled:
        return self.decode(labels, seeds, options)

    def check_options(self, options: SampleOptions) -> None:
        N = self.spec.num_positions
        if options.steps > N:
            raise GeneratorError(f"steps must be at most the number of tokens ({N}), got {options.steps}")

    @torch.no_grad()
    def decode(
        self, labels: Tensor, seeds: Tensor, options: SampleOptions, tokens: Tensor | None = None,
        known: Tensor | None = None,
    ) -> Sampled:  # fmt: skip
        """MaskGIT's iterative decoding from all [MASK], or from ``tokens`` (B, *spec.shape) where ``known`` (same
        shape, bool) is True; known tokens are returned unchanged."""
        options.validate()
        self.check_options(options)
        N, T = self.spec.num_positions, int(options.steps)
        B = labels.shape[0]
        ids = start_ids(B, N, self.mask_id, labels.device, tokens, known)
        unknown0 = (ids == self.mask_id).sum(1)  # (B,) masked at the start
        for i in range(T):
            ids = self.decode_step(ids, labels, seeds, options, i, unknown0)
        return Sampled(tokens=ids.reshape(B, *self.spec.shape), nfe=T)

    def decode_step(
        self, ids: Tensor, labels: Tensor, seeds: Tensor, options: SampleOptions, i: int, unknown0: Tensor
    ) -> Tensor:
        """Step i of T: draw every masked token, keep the confident ones, re-mask the rest by the schedule."""
        T, o = int(options.steps), options
        anneal = 1.0 - (i + 1) / T  # MaskGIT's annealing factor of the choice temperature
        logits = self.guided_logits(ids, labels, guidance_weight(o, i))  # (B, N, V)
        scale = o.logit_temperature + o.logit_temperature_ramp * anneal
        logits = logits / scale if scale != 1.0 else logits
        is_mask = ids == self.mask_id  # (B, N)
        B, N = ids.shape
        temperature = o.temperature * anneal if o.temperature_schedule == "anneal" else o.temperature
        u = per_sample_rand(seeds, (N,), stream=STREAM_DECODE + 2 * i, device=ids.device) if temperature else None
        drawn = sample_tokens(logits, u, temperature=temperature, rule="vocab")  # (B, N); MaskGIT filters nothing
        drawn = torch.where(is_mask, drawn, ids)
        score = logits.log_softmax(-1) if o.confidence == "log_prob" else logits  # TiTok ranks by the raw logit
        confidence = score.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)  # (B, N)
        tau = o.choice_temperature * anneal
        if tau > 0:
            u = per_sample_rand(seeds, (N,), stream=STREAM_DECODE + 2 * i + 1, device=ids.device)
            confidence = confidence + tau * gumbel(u)
        confidence = torch.where(is_mask, confidence, torch.inf)  # known tokens are never re-masked
        gamma = decode_schedule(o.mask_schedule, (i + 1) / T)  # in float64 on the host: floor(U * gamma) as written
        keep_masked = torch.floor(unknown0.cpu().double() * gamma).long().to(ids.device)
        keep_masked = torch.minimum(keep_masked, is_mask.sum(1) - 1).clamp(min=0)  # at least one fewer per step
        if i == T - 1:
            keep_masked = torch.zeros_like(keep_masked)
        remask = ranks(confidence) < keep_masked[:, None]
        return torch.where(remask, self.mask_id, drawn)


# ----------------------------------------------------------------------------- named sizes

# name -> Config fields; imagenet256: google-research/maskgit configs/maskgit_class_cond_config.py
MASKGIT_SIZES = {
    "tiny": dict(depth=2, hidden_size=64, num_heads=4, mlp_ratio=4.0),
    "imagenet256": dict(depth=24, hidden_size=768, num_heads=16, mlp_ratio=4.0),  # MLP 3072
}


def maskgit_param_count(size: str, *, vocab_size: int = 1024, grid: int = 16, num_classes: int = 1000) -> int:
    """Parameters of a named size on a ``grid`` x ``grid`` token map, counted on the meta device."""
    spec = TokenSpec("discrete", (grid, grid), vocab_size=vocab_size)
    with torch.device("meta"):
        model = MaskGIT(MaskGIT.Config(**MASKGIT_SIZES[size]), spec=spec, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
