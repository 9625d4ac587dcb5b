"""Quantizers: continuous latents (B, C, h, w) -> discrete codes, each registered as a "quantizer".

- ``vq``: nearest-code VQ (van den Oord et al. 2017) with straight-through gradients, commitment and codebook
  losses; options from the modern tokenizers: l2-normalised (cosine) lookup and a factorised low-dimensional
  lookup space with projections (ViT-VQGAN, LlamaGen), EMA codebook updates (VQ-VAE-2, SoundStream, RQ-VAE)
  and re-seeding of dead codes from the batch.
- ``fsq``: finite scalar quantisation (Mentzer et al. 2023): bound, round per dimension, K = prod(levels).
- ``lfq``: lookup-free quantisation with MAGVIT-v2's entropy penalty (Yu et al. 2023): sign per bit, K = 2^bits.
- ``rvq``: residual quantisation of depth D (RQ-VAE, Lee et al. 2022), shared or separate codebooks.
- ``msvq``: VAR's multi-scale residual VQ (Tian et al. 2024): one codebook, a schedule of scales, phi convs.

Every quantizer runs in float32 with autocast off, returns one ``Quantized`` and reports codebook usage and
perplexity. Collectives (EMA statistics, dead-code re-seeding, usage counts) happen only in a training forward
with gradients enabled, which every process runs in lockstep; evaluation and sampling, often on the main
process only or under ``no_grad``, never communicate, so they cannot hang.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from itertools import product

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.conv import Conv2d
from genlab.registry import register

# ----------------------------------------------------------------------------- shared helpers


@dataclass
class Quantized:
    """What every quantizer returns."""

    codes: Tensor  # (B, C, h, w) quantised latent; straight-through: d codes / d input = identity
    indices: Tensor | list[Tensor]  # (B, h, w) | rvq: (B, h, w, D) | msvq: [(B, s_k, s_k) per scale]
    loss: Tensor  # scalar auxiliary loss, already weighted (commitment, codebook, entropy)
    terms: dict[str, Tensor] = field(default_factory=dict)  # its unweighted pieces, detached, for logging
    stats: dict[str, Tensor] = field(default_factory=dict)  # usage (fraction of codes used), perplexity


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def fp32(fn):
    """Run a quantizer method on float32 inputs with autocast off (bf16 cannot even represent 257)."""

    @functools.wraps(fn)
    def wrapper(self, z, *args, **kwargs):
        with torch.autocast(device_type=z.device.type, enabled=False):
            return fn(self, z.float(), *args, **kwargs)

    return wrapper


def syncing(module: nn.Module) -> bool:
    """True in a training forward with gradients on: the only place collectives may run."""
    return module.training and torch.is_grad_enabled()


def code_stats(indices: Tensor, codebook_size: int, sync: bool) -> dict[str, Tensor]:
    """Usage (fraction of the codebook hit) and perplexity exp(H(p)) of the code histogram."""
    hist = torch.bincount(indices.reshape(-1), minlength=codebook_size).float()
    if sync and distributed():
        dist.all_reduce(hist)
    p = hist / hist.sum().clamp_min(1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return {"usage": (hist > 0).float().mean(), "perplexity": entropy.exp()}


def to_rows(z: Tensor) -> Tensor:
    """(B, C, h, w) -> (B*h*w, C)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def from_rows(x: Tensor, like: tuple[int, int, int]) -> Tensor:
    """(B*h*w, C) -> (B, C, h, w) for a grid of shape ``like`` = (B, h, w)."""
    B, h, w = like
    return x.reshape(B, h, w, -1).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- VQ


@register("quantizer", "vq")
class VectorQuantizer(nn.Module):
    """Nearest-code VQ. Loss (VQ-VAE eq. 3): ||sg(z) - e||^2 + beta ||z - sg(e)||^2; with EMA, the first term
    is replaced by k-means-style running averages: N_k <- d N_k + (1-d) n_k, m_k <- d m_k + (1-d) sum z, e_k = m_k / N_k.
    """

    @dataclass
    class Config:
        codebook_size: int = 1024  # K
        code_dim: int = 0  # 0: look up in the input's dimension; >0: factorised lookup (project in and out)
        l2_norm: bool = False  # cosine lookup on l2-normalised vectors and codes (ViT-VQGAN, LlamaGen)
        beta: float = 0.25  # commitment weight
        codebook_weight: float = 1.0  # weight of ||sg(z) - e||^2 (learned codebooks; unused with EMA)
        ema_decay: float = 0.0  # > 0: EMA codebook updates instead of the codebook loss (RQ-VAE: 0.99)
        ema_eps: float = 1e-5  # Laplace smoothing of EMA cluster sizes
        dead_code_threshold: float = 0.0  # re-seed codes whose running usage count is below this; 0: never
        usage_decay: float = 0.99  # decay of the running usage counts of learned codebooks

        def validate(self) -> None:
            if self.codebook_size < 2 or self.code_dim < 0:
                raise ValueError("codebook_size must be >= 2 and code_dim >= 0")
            if not (0.0 <= self.ema_decay < 1.0 and 0.0 < self.usage_decay < 1.0):
                raise ValueError("ema_decay must be in [0, 1) and usage_decay in (0, 1)")

    def __init__(self, cfg: Config, *, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        K, d = cfg.codebook_size, cfg.code_dim or dim
        self.codebook_size, self.lookup_dim = K, d
        self.in_proj = nn.Linear(dim, d) if cfg.code_dim else nn.Identity()
        self.out_proj = nn.Linear(d, dim) if cfg.code_dim else nn.Identity()
        self.ema = cfg.ema_decay > 0
        if self.ema:  # a parameter (so it is counted and saved like RQ-VAE's) that no optimizer touches
            self.codebook = nn.Parameter(torch.randn(K, d), requires_grad=False)
            self.register_buffer("embed_sum", self.codebook.detach().clone())
        else:
            self.codebook = nn.Parameter(torch.empty(K, d).uniform_(-1.0 / K, 1.0 / K))
        self.register_buffer("cluster_size", torch.ones(K))  # running usage counts (EMA's N_k)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("reseeded", torch.zeros((), dtype=torch.long))  # dead codes re-seeded so far

    def extra_repr(self) -> str:
        return f"K={self.codebook_size}, dim={self.dim}, lookup_dim={self.lookup_dim}, l2={self.cfg.l2_norm}, ema={self.ema}"

    # -- lookup

    def embeddings(self) -> Tensor:
        """(K, d) codes in the lookup space."""
        return F.normalize(self.codebook, dim=-1) if self.cfg.l2_norm else self.codebook

    @torch.no_grad()
    def lookup(self, x: Tensor, chunk: int = 1 << 24) -> Tensor:
        """Nearest code (K,) for each row of x (N, d), computed in float32 in chunks of ``chunk`` distances."""
        e = self.embeddings().float()
        e_sq = (e * e).sum(1)
        out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        step = max(1, chunk // self.codebook_size)
        for i in range(0, x.shape[0], step):
            xi = x[i : i + step].float()
            # ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2; ||x||^2 does not change the argmin
            out[i : i + step] = (e_sq[None] - 2 * xi @ e.T).argmin(1)
        return out

    def project_in(self, x: Tensor) -> Tensor:
        x = self.in_proj(x)
        return F.normalize(x, dim=-1) if self.cfg.l2_norm else x

    # -- training-time codebook maintenance

    @torch.no_grad()
    def update(self, x: Tensor, idx: Tensor) -> None:
        """EMA statistics and dead-code re-seeding from rows x (N, d) assigned to idx (N,); synced across ranks."""
        K, cfg = self.codebook_size, self.cfg
        counts = torch.bincount(idx, minlength=K).float()
        sums = torch.zeros(K, x.shape[1], device=x.device).index_add_(0, idx, x.float()) if self.ema else None
        if distributed():
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        decay = cfg.ema_decay if self.ema else cfg.usage_decay
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        if self.ema:
            self.embed_sum.mul_(cfg.ema_decay).add_(sums, alpha=1 - cfg.ema_decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + cfg.ema_eps) / (n + K * cfg.ema_eps) * n
            self.codebook.data.copy_(self.embed_sum / smoothed[:, None])
        if cfg.dead_code_threshold > 0:
            self._reseed(x)
        self.num_updates += 1

    def _reseed(self, x: Tensor) -> None:
        """Replace codes used less than the threshold by vectors of the (global) batch, chosen identically
        on every rank (a generator seeded by the update count over the gathered batch), broadcast from rank 0."""
        dead = (self.cluster_size < self.cfg.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:  # the same decision on every rank: cluster sizes are all-reduced
            return
        pool = x.float()
        if distributed():
            parts = [torch.empty_like(pool) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, pool.contiguous())
            pool = torch.cat(parts)  # rank order = the order of the global batch
        g = torch.Generator().manual_seed(int(self.num_updates) * 2654435761 % (1 << 62) + 1)
        pick = torch.randint(pool.shape[0], (dead.numel(),), generator=g).to(pool.device)
        new = pool[pick]
        if distributed():
            dist.broadcast(new, src=0)
        if self.cfg.l2_norm:
            new = F.normalize(new, dim=-1)
        self.codebook.data[dead] = new.to(self.codebook.dtype)
        self.reseeded += dead.numel()
        typical = self.cluster_size.mean().clamp_min(self.cfg.dead_code_threshold)
        self.cluster_size[dead] = typical  # a fresh code gets time to be chosen before it counts as dead
        if self.ema:
            self.embed_sum[dead] = new * typical

    # -- the public interface

    def quantize_rows(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rows x (N, d) in the lookup space -> codes (N, d) (with codebook gradients), indices, codebook loss."""
        idx = self.lookup(x)
        e = self.embeddings()[idx]
        codebook_loss = x.new_zeros(()) if self.ema else F.mse_loss(e, x.detach())
        return e, idx, codebook_loss

    @fp32
    def forward(self, z: Tensor) -> Quantized:
        B, _, h, w = z.shape
        x = self.project_in(to_rows(z))  # (N, d)
        e, idx, codebook_loss = self.quantize_rows(x)
        commit = F.mse_loss(x, e.detach())
        if syncing(self):
            self.update(x.detach(), idx)
        q = self.out_proj(x + (e - x).detach())  # straight-through
        loss = self.cfg.beta * commit + self.cfg.codebook_weight * codebook_loss
        terms = {"commit": commit.detach(), "codebook": codebook_loss.detach()}
        stats = code_stats(idx, self.codebook_size, syncing(self))
        return Quantized(from_rows(q, (B, h, w)), idx.reshape(B, h, w), loss, terms, stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(B, h, w) -> (B, C, h, w)."""
        B, h, w = indices.shape
        return from_rows(self.out_proj(self.embeddings()[indices.reshape(-1)]), (B, h, w))


# ----------------------------------------------------------------------------- FSQ


@register("quantizer", "fsq")
class FSQ(nn.Module):
    """Finite scalar quantisation: z_i -> round(tanh-bounded z_i) on L_i levels, scaled to [-1, 1]; no aux loss."""

    @dataclass
    class Config:
        levels: tuple[int, ...] = (8, 5, 5, 5)  # levels per dimension; K = prod (FSQ paper: 2^10 = 8,5,5,5)

        def validate(self) -> None:
            if not self.levels or min(self.levels) < 2:
                raise ValueError("fsq levels must be a non-empty list of integers >= 2")

    def __init__(self, cfg: Config, *, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        n = len(cfg.levels)
        self.codebook_size = math.prod(cfg.levels)
        self.in_proj = nn.Linear(dim, n) if dim != n else nn.Identity()
        self.out_proj = nn.Linear(n, dim) if dim != n else nn.Identity()
        levels = torch.tensor(cfg.levels, dtype=torch.float32)
        self.register_buffer("levels", levels, persistent=False)
        basis = torch.cumprod(torch.tensor([1, *cfg.levels[:-1]], dtype=torch.long), 0)
        self.register_buffer("basis", basis, persistent=False)

    def bound(self, x: Tensor, eps: float = 1e-3) -> Tensor:
        """Map reals into (-L/2, L/2) so that rounding gives exactly L values (an offset for even L)."""
        half = (self.levels - 1) * (1 + eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(x + shift) * half - offset

    def quantize_rows(self, x: Tensor) -> Tensor:
        b = self.bound(x)
        return (b + (b.round() - b).detach()) / (self.levels // 2)  # straight-through round, codes in [-1, 1]

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        digits = (codes * (self.levels // 2) + self.levels // 2).round().long()
        return (digits * self.basis).sum(-1)

    def indices_to_rows(self, idx: Tensor) -> Tensor:
        digits = (idx[..., None] // self.basis) % self.levels.long()
        return (digits.float() - self.levels // 2) / (self.levels // 2)

    @fp32
    def forward(self, z: Tensor) -> Quantized:
        B, _, h, w = z.shape
        x = self.in_proj(to_rows(z))
        q = self.quantize_rows(x)
        idx = self.codes_to_indices(q.detach())
        zero = z.new_zeros(())
        stats = code_stats(idx, self.codebook_size, syncing(self))
        return Quantized(from_rows(self.out_proj(q), (B, h, w)), idx.reshape(B, h, w), zero, {}, stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        B, h, w = indices.shape
        return from_rows(self.out_proj(self.indices_to_rows(indices.reshape(-1))), (B, h, w))


# ----------------------------------------------------------------------------- LFQ


@register("quantizer", "lfq")
class LFQ(nn.Module):
    """Lookup-free quantisation: q = sign(z) per bit. MAGVIT-v2's entropy penalty, with p(c|z) = softmax over
    codes c of -||z - c||^2 / tau: loss = E_z[H(p(.|z))] - diversity * H(E_z[p(.|z)]). The distribution factorises
    over bits, so it is computed exactly within groups of ``entropy_group_bits`` bits and summed over groups
    (exact when one group holds every bit; an upper bound on the codebook entropy otherwise)."""

    @dataclass
    class Config:
        bits: int = 10  # K = 2^bits
        beta: float = 0.25  # commitment weight
        entropy_weight: float = 0.1  # weight of the entropy penalty (MAGVIT-v2: 0.1)
        diversity_weight: float = 1.0  # gamma: weight of the codebook-entropy term inside it
        temperature: float = 0.01  # tau
        entropy_group_bits: int = 10  # bits per exactly-computed group

        def validate(self) -> None:
            if not 1 <= self.bits <= 62 or self.entropy_group_bits < 1 or self.temperature <= 0:
                raise ValueError("lfq needs 1 <= bits <= 62, entropy_group_bits >= 1 and temperature > 0")

    def __init__(self, cfg: Config, *, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        self.codebook_size = 2**cfg.bits
        self.in_proj = nn.Linear(dim, cfg.bits) if dim != cfg.bits else nn.Identity()
        self.out_proj = nn.Linear(cfg.bits, dim) if dim != cfg.bits else nn.Identity()
        self.register_buffer("powers", 2 ** torch.arange(cfg.bits, dtype=torch.long), persistent=False)

    def entropy_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(per-sample entropy, codebook entropy) of p(c|x) for rows x (N, bits), in nats."""
        per_sample, codebook = x.new_zeros(()), x.new_zeros(())
        g = self.cfg.entropy_group_bits
        for start in range(0, x.shape[1], g):
            xg = x[:, start : start + g]
            codes = torch.tensor(list(product((-1.0, 1.0), repeat=xg.shape[1])), device=x.device)  # (2^g, g)
            p = torch.softmax(2 * xg @ codes.T / self.cfg.temperature, dim=-1)  # -||x-c||^2 up to a constant
            per_sample = per_sample - (p * p.clamp_min(1e-12).log()).sum(-1).mean()
            mean_p = p.mean(0)
            codebook = codebook - (mean_p * mean_p.clamp_min(1e-12).log()).sum()
        return per_sample, codebook

    @fp32
    def forward(self, z: Tensor) -> Quantized:
        B, _, h, w = z.shape
        x = self.in_proj(to_rows(z))
        q = torch.where(x > 0, 1.0, -1.0)
        idx = ((q > 0).long() * self.powers).sum(-1)
        commit = F.mse_loss(x, q)
        loss = self.cfg.beta * commit
        terms = {"commit": commit.detach()}
        if self.cfg.entropy_weight > 0 and self.training:
            per_sample, codebook = self.entropy_terms(x)
            loss = loss + self.cfg.entropy_weight * (per_sample - self.cfg.diversity_weight * codebook)
            terms |= {"sample_entropy": per_sample.detach(), "codebook_entropy": codebook.detach()}
        out = self.out_proj(x + (q - x).detach())
        stats = code_stats(idx, self.codebook_size, syncing(self))
        return Quantized(from_rows(out, (B, h, w)), idx.reshape(B, h, w), loss, terms, stats)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        B, h, w = indices.shape
        bits = (indices.reshape(-1, 1) // self.powers) % 2
        return from_rows(self.out_proj(bits.float() * 2 - 1), (B, h, w))


# ----------------------------------------------------------------------------- RVQ


@register("quantizer", "rvq")
class ResidualVQ(nn.Module):
    """Residual VQ (RQ-VAE eq. 2-3): r_0 = z, k_d = Q(r_{d-1}), r_d = r_{d-1} - e(k_d); the quantised latent is the
    cumulative sum of the D chosen codes. Commitment: mean_d ||z - sg(sum_{i<=d} e(k_i))||^2."""

    @dataclass
    class Config:
        depth: int = 4  # D codes per position
        shared_codebook: bool = True  # one codebook for every depth (RQ-VAE) or one per depth
        vq: VectorQuantizer.Config = field(default_factory=VectorQuantizer.Config)  # each codebook's options

        def validate(self) -> None:
            if self.depth < 1:
                raise ValueError("rvq depth must be >= 1")
            if self.vq.code_dim:
                raise ValueError("rvq quantises residuals in the latent's own space: set vq.code_dim to 0")

    def __init__(self, cfg: Config, *, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        n = 1 if cfg.shared_codebook else cfg.depth
        self.vqs = nn.ModuleList(VectorQuantizer(cfg.vq, dim=dim) for _ in range(n))
        self.codebook_size = cfg.vq.codebook_size

    def vq_at(self, d: int) -> VectorQuantizer:
        return self.vqs[0 if self.cfg.shared_codebook else d]

    @fp32
    def forward(self, z: Tensor) -> Quantized:
        B, C, h, w = z.shape
        x = to_rows(z)
        residual, cum = x, torch.zeros_like(x)
        commit, codebook_loss, idxs, inputs = x.new_zeros(()), x.new_zeros(()), [], []
        for d in range(self.cfg.depth):
            vq = self.vq_at(d)
            r = vq.project_in(residual)
            e, idx, cb = vq.quantize_rows(r)
            inputs.append(r.detach())
            idxs.append(idx)
            residual = residual - e.detach()
            cum = cum + e
            commit = commit + F.mse_loss(x, cum.detach())
            codebook_loss = codebook_loss + cb
        if syncing(self):
            for k, vq in enumerate(self.vqs):
                ds = range(self.cfg.depth) if self.cfg.shared_codebook else [k]
                vq.update(torch.cat([inputs[d] for d in ds]), torch.cat([idxs[d] for d in ds]))
        D = self.cfg.depth
        loss = self.cfg.vq.beta * commit / D + self.cfg.vq.codebook_weight * codebook_loss / D
        q = x + (cum - x).detach()
        idx = torch.stack(idxs, -1).reshape(B, h, w, D)
        stats = self._stats(idx)
        terms = {"commit": (commit / D).detach(), "codebook": (codebook_loss / D).detach()}
        return Quantized(from_rows(q, (B, h, w)), idx, loss, terms, stats)

    def _stats(self, idx: Tensor) -> dict[str, Tensor]:
        if self.cfg.shared_codebook:
            return code_stats(idx, self.codebook_size, syncing(self))
        per = [code_stats(idx[..., d], self.codebook_size, syncing(self)) for d in range(self.cfg.depth)]
        return {k: torch.stack([s[k] for s in per]).mean() for k in per[0]}

    def indices_to_codes(self, indices: Tensor, depth: int | None = None) -> Tensor:
        """(B, h, w, D) -> (B, C, h, w): the sum of the first ``depth`` (default all) depths' codes."""
        depth = indices.shape[-1] if depth is None else depth
        B, h, w, _ = indices.shape
        out = torch.zeros(B, self.dim, h, w, device=indices.device)
        for d in range(depth):
            out = out + self.vq_at(d).indices_to_codes(indices[..., d])
        return out


# ----------------------------------------------------------------------------- multi-scale residual VQ (VAR)


class Phi(Conv2d):
    """VAR's phi: h <- (1 - r) h + r conv3x3(h), applied to each scale's upsampled codes."""

    def __init__(self, dim: int, ratio: float):
        super().__init__(dim, dim, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: Tensor) -> Tensor:
        return h * (1 - self.ratio) + super().forward(h) * self.ratio


@register("quantizer", "msvq")
class MultiScaleVQ(nn.Module):
    """VAR's multi-scale residual quantisation (VAR Alg. 1): for each scale s_k, from coarse to fine,
    r_k = Q(area-downsample(f - f_hat, s_k)); f_hat += phi_k(bicubic-upsample(e(r_k))). The latent's side must
    equal the last scale. Loss: mean over scales of beta ||sg(f_hat) - f||^2 + ||f_hat - sg(f)||^2."""

    @dataclass
    class Config:
        scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # token-map sides, coarse to fine
        phi_ratio: float = 0.5  # r in phi (VAR: quant_resi 0.5); 0 turns phi off
        phi_count: int = 4  # phi convs shared across scales by position (VAR: 4); 0: one per scale
        vq: VectorQuantizer.Config = field(default_factory=lambda: VectorQuantizer.Config(codebook_size=4096))

        def validate(self) -> None:
            if not self.scales or list(self.scales) != sorted(set(self.scales)) or self.scales[0] < 1:
                raise ValueError("msvq scales must be increasing positive integers")
            if self.vq.code_dim:
                raise ValueError("msvq looks codes up in the latent's own space: set vq.code_dim to 0")

    def __init__(self, cfg: Config, *, dim: int):
        super().__init__()
        self.cfg, self.dim = cfg, dim
        self.vq = VectorQuantizer(cfg.vq, dim=dim)
        self.codebook_size = cfg.vq.codebook_size
        n = cfg.phi_count or len(cfg.scales)
        self.phis = nn.ModuleList(Phi(dim, cfg.phi_ratio) for _ in range(n)) if cfg.phi_ratio else None
        k = len(self.phis) if self.phis is not None else 1
        # VAR's ticks: phi j serves the scales whose position k/(K-1) is nearest to tick j (float64, as VAR's numpy)
        lo = 1 / 3 / k if k == 4 else 1 / 2 / k
        ticks = [i * (((1 - lo) - lo) / max(k - 1, 1)) + lo for i in range(k)]
        ticks[-1] = 1 - lo if k > 1 else lo  # numpy.linspace's arithmetic, so ties break as in VAR
        self.ticks = torch.tensor(ticks, dtype=torch.float64)

    @property
    def scales(self) -> tuple[int, ...]:
        return tuple(self.cfg.scales)

    def phi(self, k: int, h: Tensor) -> Tensor:
        if self.phis is None:
            return h
        pos = k / max(len(self.scales) - 1, 1)
        return self.phis[int((self.ticks - pos).abs().argmin())](h)

    def scale_contribution(self, k: int, codes: Tensor, size: tuple[int, int]) -> Tensor:
        """phi_k(upsample(codes)): what scale k adds to f_hat; codes (B, C, s_k, s_k)."""
        if codes.shape[-2:] != size:
            codes = F.interpolate(codes, size=size, mode="bicubic")
        return self.phi(k, codes)

    @fp32
    def forward(self, f: Tensor) -> Quantized:
        B, C, H, W = f.shape
        if (H, W) != (self.scales[-1],) * 2:
            raise ValueError(f"msvq: latent is {H}x{W} but the last scale is {self.scales[-1]}")
        f_rest, f_hat = f.detach().clone(), torch.zeros_like(f)
        loss, idxs, inputs, flat = f.new_zeros(()), [], [], []
        for k, s in enumerate(self.scales):
            r = F.interpolate(f_rest, size=(s, s), mode="area") if s != H else f_rest
            x = self.vq.project_in(to_rows(r))
            e, idx, _ = self.vq.quantize_rows(x)
            inputs.append(x.detach())
            flat.append(idx)
            idxs.append(idx.reshape(B, s, s))
            h = self.scale_contribution(k, from_rows(e, (B, s, s)), (H, W))
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            loss = loss + self.cfg.vq.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f.detach())
        if syncing(self):
            self.vq.update(torch.cat(inputs), torch.cat(flat))
        loss = loss / len(self.scales)
        stats = code_stats(torch.cat(flat), self.codebook_size, syncing(self))
        q = f + (f_hat - f).detach()
        return Quantized(q, idxs, loss, {"vq": loss.detach()}, stats)

    def indices_to_codes(self, indices: list[Tensor]) -> Tensor:
        """f_hat from the token maps of the first len(indices) scales (any prefix; ground-truth maps too)."""
        H = self.scales[-1]
        f_hat = 0
        for k, idx in enumerate(indices):
            f_hat = f_hat + self.scale_contribution(k, self.vq.indices_to_codes(idx), (H, H))
        return f_hat

    def next_scale_input(self, k: int, f_hat: Tensor, codes: Tensor) -> tuple[Tensor, Tensor | None]:
        """VAR's sampler step: add scale k's codes (B, C, s_k, s_k) to f_hat; return (f_hat, f_hat area-downsampled
        to scale k+1, or None after the last scale)."""
        H = self.scales[-1]
        f_hat = f_hat + self.scale_contribution(k, codes, (H, H))
        if k + 1 == len(self.scales):
            return f_hat, None
        s = self.scales[k + 1]
        return f_hat, F.interpolate(f_hat, size=(s, s), mode="area")

    def teacher_forcing_inputs(self, indices: list[Tensor]) -> list[Tensor]:
        """VAR's training inputs for scales 1..K-1 from ground-truth maps: [(B, C, s_k, s_k)]."""
        H = self.scales[-1]
        f_hat = torch.zeros(indices[0].shape[0], self.dim, H, H, device=indices[0].device)
        out = []
        for k in range(len(self.scales) - 1):
            f_hat, nxt = self.next_scale_input(k, f_hat, self.vq.indices_to_codes(indices[k]))
            out.append(nxt)
        return out
