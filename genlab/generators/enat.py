"""ENAT: MaskGIT-style masked token generation with spatial disentangling and temporal reuse (Ni et al.,
"ENAT: Rethinking Spatial-temporal Interactions in Token-based Image Synthesis", NeurIPS 2024; public code
LeapLabTHU/ENAT, ``libs/models.py`` and ``libs/nat_misc.py``). Same tokens, training target and decoding loop as
``genlab.generators.maskgit`` (whose helpers it uses); what changes is where the computation goes.

**Spatial disentangling** (paper §4.1). Visible tokens are encoded by the ``encoder_depth`` blocks *alone* (no
[MASK] token in their attention); a small decoder (``decoder_depth`` blocks) processes only the [MASK] tokens, its
attention reading [encoded visible ‖ mask] (keys and values of the visible part through their own projection,
ENAT's multiway KV). ENAT-L is 22 + 2. Logits are computed for the masked positions only.

**Temporal reuse** (§4.2). At decoding step k the previous step's encoder features of the tokens that were already
visible are reused; only the tokens revealed at step k - 1 are encoded, attending to [proj(cached) ‖ themselves]
where ``proj`` is ENAT's PrevProj (x + MLP(LN(x))). The decoder reads the cached features of the old tokens and
the fresh ones of the new. Deviation from ENAT: ENAT hands the decoder proj(cached) for old tokens (so features
are re-projected at every step); here the decoder reads the cached features themselves and the projection only
injects them into the new tokens' encoding. So when no token is newly revealed, the reuse path is *exactly* the
full recompute that produced the cache (tested), and features never drift across steps.

**Training** (``loss``): MaskGIT's masked cross-entropy with label smoothing 0.1; the mask ratio from Beta(12, 3)
(AutoNAT / ENAT) per sample. With probability ``reuse_prob`` (0.5, ENAT's) a sample is trained through the reuse
path: its cache is the encoding of a *more-masked* version of the same tokens (the current mask plus a uniform
fraction of the visible tokens, from the sample's seed). Deviation: ENAT encodes that version with the EMA model;
genlab's loss has no EMA model, so the online weights under ``torch.no_grad`` make it (the cache is detached in
ENAT too).

**Decoding**: MaskGIT's confidence decoding (cosine schedule) with ENAT's annealing: the token temperature
``temperature·(1 - (i+1)/T)`` (at least 1e-3) and the choice (Gumbel) temperature ``choice_temperature·(1 -
(i+1)/T)`` (ENAT: 1.5), guidance ``w_i = 1 + (cfg - 1)·i/T`` (ENAT's ``cfg_scale·i/T`` on cond - uncond: cfg = 1 +
cfg_scale); 8 steps. One network evaluation per step; the guided pair is batched with its own cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.base import Generator, Sampled, TokenCodes, TokenSpec, option
from genlab.generators.maskgit import (
    TRAIN_SCHEDULES,
    MaskedSampleOptions,
    MaskGIT,
    MlmHead,
    decode_schedule,
    ranks,
    start_ids,
)  # fmt: skip
from genlab.nn import LabelEmbedder, LayerNorm, per_sample_rand
from genlab.nn.attention import attention
from genlab.nn.sampling import gumbel, sample_from_logits
from genlab.registry import register

CFG_SCHEDULES = ("constant", "linear", "step")
# per-sample RNG streams (genlab.nn.rng); 1-3 are MaskGIT's (ratio, positions, class drop)
STREAM_POSITIONS, STREAM_DROP, STREAM_REUSE, STREAM_PREV = 2, 3, 4, 5
STREAM_DECODE = 1000  # step i: tokens from stream 1000 + 2i, choice noise from 1001 + 2i

# ----------------------------------------------------------------------------- token bookkeeping


class Cache(NamedTuple):
    """Encoder features of one step: ``feats`` (B, N, D), valid where ``visible`` (B, N) is True."""

    feats: Tensor
    visible: Tensor


class Split(NamedTuple):
    """Positions where a (B, N) selection is True, first ones first: ``idx`` (B, M) padded to the largest count,
    ``valid`` (B, M) False on the padding."""

    idx: Tensor
    valid: Tensor


def split(sel: Tensor) -> Split:
    counts = sel.sum(1)  # (B,)
    M = int(counts.max()) if sel.numel() else 0
    idx = (~sel).to(torch.uint8).argsort(dim=1, stable=True)[:, :M]  # selected positions, in raster order
    return Split(idx, torch.arange(M, device=sel.device)[None] < counts[:, None])


def gather(x: Tensor, s: Split) -> Tensor:
    """(B, N, D) -> (B, M, D) rows at ``s.idx``."""
    return x.gather(1, s.idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter(out: Tensor, s: Split, rows: Tensor) -> Tensor:
    """``out`` (B, N, D) with its rows at the valid ``s.idx`` replaced by ``rows`` (B, M, D)."""
    b = torch.arange(out.shape[0], device=out.device)[:, None].expand_as(s.idx)
    out = out.clone()
    out[b[s.valid], s.idx[s.valid]] = rows[s.valid].to(out.dtype)
    return out


def key_mask(valid: Tensor) -> Tensor:
    """(B, S) valid keys -> an SDPA mask (B, 1, 1, S); a sample with no valid key sees all (its rows are padding,
    unused, and would otherwise be NaN)."""
    return (valid | ~valid.any(1, keepdim=True))[:, None, None, :]


# ----------------------------------------------------------------------------- blocks


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ContextAttention(nn.Module):
    """Attention of queries x over keys/values [context ‖ x]; the context's keys and values come from their own
    projection (ENAT's multiway KV)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # of the tokens themselves
        self.kv_ctx = nn.Linear(dim, 2 * dim)  # of the context
        self.proj = nn.Linear(dim, dim)

    def heads(self, t: Tensor) -> Tensor:  # (B, S, D) -> (B, H, S, Dh)
        B, S, D = t.shape
        return t.view(B, S, self.num_heads, D // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, ctx: Tensor | None, valid: Tensor) -> Tensor:
        """x (B, N, D), ctx (B, S, D) or None, valid (B, S + N) keys -> (B, N, D)."""
        kv = self.kv(x) if ctx is None else torch.cat([self.kv_ctx(ctx), self.kv(x)], dim=1)  # (B, S + N, 2D)
        k, v = kv.chunk(2, dim=-1)
        out = attention(self.heads(self.q(x)), self.heads(k), self.heads(v), mask=key_mask(valid))
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))


class Block(nn.Module):
    """DiT's adaLN-Zero block with a second (shift, scale) pair for the context's norm: 8 modulation vectors."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_ctx = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = ContextAttention(dim, num_heads)
        self.norm2 = LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 8 * dim))

    def forward(self, x: Tensor, c: Tensor, valid: Tensor, ctx: Tensor | None = None) -> Tensor:
        """x (B, N, D), c (B, D), valid (B, S + N), ctx (B, S, D) -> (B, N, D)."""
        sh, sc, sh_c, sc_c, g, sh2, sc2, g2 = self.ada(c).chunk(8, dim=-1)
        kv_ctx = None if ctx is None else modulate(self.norm_ctx(ctx), sh_c, sc_c)
        x = x + g.unsqueeze(1) * self.attn(modulate(self.norm1(x), sh, sc), kv_ctx, valid)
        return x + g2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh2, sc2))


class PrevProj(nn.Module):
    """ENAT's injection of cached features: x + MLP(LN(x))."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class Out(NamedTuple):
    logits: Tensor  # (B, M, V) at the masked positions
    masked: Split  # where they are
    cache: Cache  # this step's encoder features


# ----------------------------------------------------------------------------- model


@register("generator", "enat")
class ENAT(Generator):
    ROLE = "generator"
    TOKEN_KINDS = ("discrete",)
    LOG_KEYS = ("acc",)

    @dataclass
    class Config:
        encoder_depth: int = 4  # blocks over the visible tokens (ENAT-L: 22)
        decoder_depth: int = 1  # blocks over the [MASK] tokens (ENAT-L: 2)
        hidden_size: int = 256  # width D
        num_heads: int = 4  # attention heads
        mlp_ratio: float = 4.0  # MLP width / D
        mask_schedule: Literal["cosine", "beta"] = "beta"  # training mask ratio: Beta(12, 3) (ENAT) or cos(pi/2 u)
        label_smoothing: float = 0.1  # of the masked-token cross-entropy (ENAT: 0.1)
        class_dropout: float = 0.15  # probability of the null class while training (ENAT: p_uncond 0.15)
        reuse_prob: float = 0.5  # fraction of samples trained through the reuse path (ENAT: 0.5)

        def validate(self) -> None:
            if min(self.encoder_depth, self.decoder_depth, self.hidden_size, self.num_heads) <= 0:
                raise ValueError("encoder_depth, decoder_depth, hidden_size and num_heads must be positive")
            if self.hidden_size % self.num_heads or not self.mlp_ratio > 0:
                raise ValueError("hidden_size must divide by num_heads and mlp_ratio must be positive")
            if self.mask_schedule not in TRAIN_SCHEDULES:
                raise ValueError(f"mask_schedule must be one of {', '.join(TRAIN_SCHEDULES)}")
            for name in ("label_smoothing", "class_dropout", "reuse_prob"):
                if not 0.0 <= getattr(self, name) <= (1.0 if name == "reuse_prob" else 0.999):
                    raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @dataclass
    class SampleOptions(MaskedSampleOptions):
        cfg_schedule: Literal["constant", "linear", "step"] = option(
            "step",
            "guidance over the steps: constant w; linear in 1 - mask ratio (MaskGIT); step: 1 + (w-1) i/T (ENAT)",
        )
        temperature: float = option(1.0, "token temperature, annealed by 1 - (i+1)/T (ENAT's samp_temp)", low=0.0,
                                    high=100.0)  # fmt: skip
        choice_temperature: float = option(1.5, "Gumbel noise on the confidences, annealed by 1 - (i+1)/T (ENAT: 1.5)",
                                           low=0.0, high=100.0)  # fmt: skip
        no_reuse: bool = option(False, "turn temporal reuse off: encode every visible token at every step")

        def check(self) -> None:  # MaskGIT's rules, with ENAT's "step" guidance schedule added
            if self.cfg_schedule == "step":
                return MaskedSampleOptions.check(dataclasses.replace(self, cfg_schedule="constant"))
            if self.cfg_schedule not in CFG_SCHEDULES:
                raise ValueError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {self.cfg_schedule!r}")
            return super().check()

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None):
        super().__init__()
        self.check_spec(spec)
        cfg.validate()
        self.cfg, self.spec, self.num_classes = cfg, spec, num_classes
        self.vocab_size, self.mask_id = spec.vocab_size, spec.vocab_size
        N, D, H = spec.num_positions, cfg.hidden_size, int(cfg.hidden_size * cfg.mlp_ratio)
        self.tok_embedder = nn.Embedding(spec.vocab_size + 1, D)  # id vocab_size = [MASK]
        self.pos_embed = nn.Parameter(torch.zeros(1, N, D))
        self.embed_norm = LayerNorm(D, eps=1e-6)
        self.y_embedder = LabelEmbedder(num_classes, D)  # adaLN conditioning; row num_classes = null
        self.prev_proj = PrevProj(D)
        self.encoder = nn.ModuleList(Block(D, cfg.num_heads, H) for _ in range(cfg.encoder_depth))
        self.decoder = nn.ModuleList(Block(D, cfg.num_heads, H) for _ in range(cfg.decoder_depth))
        self.norm = LayerNorm(D, eps=1e-6)
        self.head = MlmHead(D, spec.vocab_size)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """ENAT's (DiT's): Xavier-uniform linears, zero biases, N(0, 0.02) embeddings, zero adaLN outputs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        for block in (*self.encoder, *self.decoder):
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)

    # -- the network

    def run(self, ids: Tensor, labels: Tensor, cache: Cache | None = None) -> Out:
        """ids (B, N) with [MASK] = vocab_size, labels (B,). Without ``cache`` every visible token is encoded; with
        one (features of a subset of today's visible tokens) only the others are, attending to proj(cached)."""
        x = self.embed_norm(self.tok_embedder(ids) + self.pos_embed)  # (B, N, D)
        c = self.y_embedder(labels)  # (B, D)
        is_mask = ids == self.mask_id
        visible = ~is_mask
        ctx, ctx_valid, feats = None, None, torch.zeros_like(x)
        new = visible
        if cache is not None:
            if (cache.visible & is_mask).any():
                raise ValueError("a reuse cache may only hold tokens that are still visible")
            old = split(cache.visible)
            ctx, ctx_valid = self.prev_proj(gather(cache.feats, old)), old.valid  # (B, S, D)
            feats = torch.where(cache.visible.unsqueeze(-1), cache.feats.to(x.dtype), feats)
            new = visible & ~cache.visible
        enc = split(new)
        h = gather(x, enc)  # (B, M_new, D)
        if h.shape[1]:
            valid = enc.valid if ctx is None else torch.cat([ctx_valid, enc.valid], 1)
            for block in self.encoder:
                h = block(h, c, valid, ctx)
            feats = scatter(feats, enc, h)
        vis, masked = split(visible), split(is_mask)
        context, m = gather(feats, vis), gather(x, masked)  # (B, S, D), (B, M, D)
        valid = torch.cat([vis.valid, masked.valid], 1)
        for block in self.decoder:
            m = block(m, c, valid, context)
        logits = self.head(self.norm(m), self.tok_embedder.weight)  # (B, M, V)
        return Out(logits, masked, Cache(feats, visible))

    def forward(self, ids: Tensor, labels: Tensor, cache: Cache | None = None) -> Tensor:
        """Logits (B, N, V), zero at visible positions."""
        out = self.run(ids, labels, cache)
        full = out.logits.new_zeros(*ids.shape, self.vocab_size)
        return scatter(full, out.masked, out.logits)

    # -- training

    def loss(self, tokens: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """Masked-token cross-entropy (MaskGIT eq. 1) at a Beta(12, 3) ratio; half the samples through reuse."""
        ids = tokens.reshape(tokens.shape[0], -1).long()  # (B, N)
        B, N = ids.shape
        n_masked = (MaskGIT.mask_ratio(self, seeds, ids.device) * N).round().clamp(1, N).long()  # (B,)
        order = ranks(per_sample_rand(seeds, (N,), stream=STREAM_POSITIONS, device=ids.device))  # (B, N)
        mask = order < n_masked[:, None]
        drop = per_sample_rand(seeds, (), stream=STREAM_DROP, device=ids.device) < self.cfg.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        cache = None
        reuse = per_sample_rand(seeds, (), stream=STREAM_REUSE, device=ids.device) < self.cfg.reuse_prob
        if reuse.any():  # the cache: a more-masked version (mask plus a uniform share of the visible tokens)
            extra = per_sample_rand(seeds, (), stream=STREAM_PREV, device=ids.device) * (N - n_masked + 1)
            prev_mask = order < (n_masked + extra.floor().long()).clamp(max=N)[:, None]
            with torch.no_grad():
                cache = self.run(torch.where(prev_mask, self.mask_id, ids), labels).cache
            cache = Cache(cache.feats.detach(), cache.visible & reuse[:, None])
        out = self.run(torch.where(mask, self.mask_id, ids), labels, cache)
        target = ids.gather(1, out.masked.idx)  # (B, M)
        ce = F.cross_entropy(out.logits.float().transpose(1, 2), target, reduction="none",
                             label_smoothing=self.cfg.label_smoothing)  # fmt: skip
        m = out.masked.valid.float()
        acc = ((out.logits.argmax(-1) == target).float() * m).sum(1) / m.sum(1)
        return {"loss": ((ce * m).sum(1) / m.sum(1)).mean(), "acc": acc.mean().detach()}

    # -- decoding

    def check_options(self, options: SampleOptions) -> None:
        MaskGIT.check_options(self, options)

    def sample(self, labels: Tensor, seeds: Tensor, options: SampleOptions) -> Sampled:
        return self.decode(labels, seeds, options)

    @torch.no_grad()
    def decode(self, labels: Tensor, seeds: Tensor, options: SampleOptions, tokens: Tensor | None = None,
               known: Tensor | None = None) -> Sampled:  # fmt: skip
        """ENAT's decoding from all [MASK] or from ``tokens`` where ``known`` (default: all) is True."""
        options.validate()
        self.check_options(options)
        N, T = self.spec.num_positions, int(options.steps)
        B = labels.shape[0]
        ids = start_ids(B, N, self.mask_id, labels.device, tokens, known)
        unknown0, cache = (ids == self.mask_id).sum(1), None
        if options.cfg != 1.0:  # the guided pair runs from the first step, so its cache has one batch size
            labels = torch.cat([labels, torch.full_like(labels, self.num_classes)])
        for i in range(T):
            if not (ids == self.mask_id).any():
                break
            ids, cache = self.decode_step(ids, labels, seeds, options, i, unknown0, cache)
        return Sampled(tokens=ids.reshape(B, *self.spec.shape), nfe=T)

    def guided_logits(self, ids: Tensor, labels: Tensor, w: float, cache: Cache | None) -> tuple[Tensor, Cache]:
        """uncond + w (cond - uncond) (B, N, V) in float32; ``labels`` holds the null half when guided."""
        pair = labels.shape[0] != ids.shape[0]
        out = self.run(torch.cat([ids, ids]) if pair else ids, labels, cache)
        full = scatter(out.logits.new_zeros(labels.shape[0], ids.shape[1], self.vocab_size), out.masked, out.logits)
        if not pair:
            return full.float(), out.cache
        cond, uncond = full.float().chunk(2)
        return uncond + w * (cond - uncond), out.cache

    def decode_step(self, ids: Tensor, labels: Tensor, seeds: Tensor, options: SampleOptions, i: int,
                    unknown0: Tensor, cache: Cache | None) -> tuple[Tensor, Cache | None]:  # fmt: skip
        """Step i of T: draw every masked token at the annealed temperature, keep the confident ones."""
        T, o = int(options.steps), options
        progress = (i + 1) / T
        if o.cfg_schedule == "constant":
            w = o.cfg
        elif o.cfg_schedule == "step":
            w = 1.0 + (o.cfg - 1.0) * i / T
        else:
            w = 1.0 + (o.cfg - 1.0) * (1.0 - decode_schedule(o.mask_schedule, i / T))
        logits, new_cache = self.guided_logits(ids, labels, w, None if o.no_reuse else cache)
        is_mask = ids == self.mask_id
        B, N = ids.shape
        temperature = max(o.temperature * (1.0 - progress), 1e-3)
        if o.temperature == 0:
            drawn = logits.argmax(-1)
        else:
            u = per_sample_rand(seeds, (N,), stream=STREAM_DECODE + 2 * i, device=ids.device)
            drawn = sample_from_logits(logits / temperature, u)
        drawn = torch.where(is_mask, drawn, ids)
        confidence = logits.log_softmax(-1).gather(-1, drawn.unsqueeze(-1)).squeeze(-1)  # (B, N)
        tau = o.choice_temperature * (1.0 - progress)
        if tau > 0:
            u = per_sample_rand(seeds, (N,), stream=STREAM_DECODE + 2 * i + 1, device=ids.device)
            confidence = confidence + tau * gumbel(u)
        confidence = torch.where(is_mask, confidence, torch.inf)
        keep = torch.floor(unknown0.cpu().double() * decode_schedule(o.mask_schedule, progress)).long()
        keep = torch.minimum(keep.to(ids.device), is_mask.sum(1) - 1).clamp(min=0)
        if i == T - 1:
            keep = torch.zeros_like(keep)
        remask = ranks(confidence) < keep[:, None]
        return torch.where(remask, self.mask_id, drawn), new_cache


# ----------------------------------------------------------------------------- named sizes

# name -> Config fields. l: ENAT's README (--enc_dec 22 2 --embed_dim 1024 --num_heads 16, MLP ratio 4);
# s and b: our guesses at the paper's smaller sizes (see docs/enat_resgen.md), not from the released code.
ENAT_SIZES = {
    "tiny": dict(encoder_depth=2, decoder_depth=1, hidden_size=64, num_heads=4),
    "s": dict(encoder_depth=11, decoder_depth=1, hidden_size=512, num_heads=8),
    "b": dict(encoder_depth=22, decoder_depth=2, hidden_size=768, num_heads=12),
    "l": dict(encoder_depth=22, decoder_depth=2, hidden_size=1024, num_heads=16),
}


def enat_param_count(size: str, *, vocab_size: int = 1024, grid: int = 16, num_classes: int = 1000) -> int:
    """Parameters of a named size on a ``grid`` x ``grid`` token map, counted on the meta device."""
    spec = TokenSpec("discrete", (grid, grid), vocab_size=vocab_size)
    with torch.device("meta"):
        model = ENAT(ENAT.Config(**ENAT_SIZES[size]), spec=spec, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
