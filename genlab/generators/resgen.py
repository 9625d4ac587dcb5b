"""ResGen: masked generation of residual-VQ token stacks by predicting cumulative embeddings (Kim et al.,
"Efficient Generative Modeling with Residual Vector Quantization-Based Tokens", ICML 2025, arXiv 2412.10208; no
public code). It models the ``residual`` TokenSpec: D ids per position of an (h, w) grid (``rqvae``).

**Masking, deepest depth first** (paper §3.1). A sample's N·D tokens are masked n = round(γ(r)·N·D) at a time
(r ~ U[0, 1), γ the cosine schedule), spread over the positions at random and, at each position, from the finest
depth upward: position p keeps its first v_p codes and masks the D - v_p finer ones. (Per position, D uniforms
sorted ascending are its slots, finest first; the n smallest of all N·D slots are masked.)

**Input**: per position, the sum of its visible codes' embeddings (the tokenizer's own codebooks, frozen),
projected to the width, plus a learned embedding of its masked count D - v_p; a class token in front (MaskGIT's
conditioning and blocks, ``genlab.generators.maskgit``).

**Target** (§3.2): at every position with masked codes, the *cumulative* embedding of its masked codes,
z_p = Σ_{d >= v_p} e_d(x_{p,d}), modelled by a mixture of K diagonal Gaussians from the position's output:
-log Σ_k π_k Π_c N(z_c; μ_kc, σ_kc) (``mog_log_prob``), per dimension, averaged over the masked positions.

**Decoding**: T steps whatever the depth (one network evaluation each: nfe = T). Each step draws z_p from the
mixture at every position with masked codes (the component from softmax(logits), then μ + temperature·σ·ε), and
re-quantizes it progressively into the masked depths with the tokenizer's codebooks (r = z_p; for d = v_p..D-1:
x_d = nearest code of depth d to r, r -= e_d(x_d)). Its confidence is the log-density of the draw per dimension,
plus Gumbel noise annealed by 1 - (i+1)/T (MaskGIT's choice temperature), one draw per slot; the most confident
slots are revealed, coarse depths first at each position, so that ⌊N·D·γ((i+1)/T)⌋ tokens stay masked (none
after the last step). Guidance mixes the network's output features, h_u + w (h_c - h_u), before the head (the
head is linear, so every mixture parameter is guided); ``cfg_schedule`` as MaskGIT's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.base import Generator, GeneratorError, Sampled, TokenCodes, TokenSpec, option
from genlab.generators.maskgit import Block, MaskedSampleOptions, MaskGIT, decode_schedule, guidance_weight, ranks
from genlab.nn import LabelEmbedder, LayerNorm, per_sample_rand, per_sample_randn
from genlab.nn.sampling import gumbel, sample_from_logits
from genlab.registry import register

STREAM_RATIO, STREAM_SLOTS, STREAM_DROP = 1, 2, 3
STREAM_DECODE = 1000  # step i: component uniforms 1000 + 3i, normals 1001 + 3i, choice noise 1002 + 3i
LOG_SCALE_RANGE = (-9.0, 5.0)  # clamp of the predicted log sigma

# ----------------------------------------------------------------------------- the mixture of Gaussians


def mog_log_prob(z: Tensor, logits: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """log Σ_k softmax(logits)_k Π_c N(z_c; mu_kc, exp(log_sigma_kc)^2): z (..., C), logits (..., K),
    mu and log_sigma (..., K, C) -> (...)."""
    x = (z.unsqueeze(-2) - mu) * torch.exp(-log_sigma)  # (..., K, C)
    comp = (-0.5 * x * x - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)  # (..., K)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + comp, dim=-1)


def mog_sample(logits: Tensor, mu: Tensor, log_sigma: Tensor, u: Tensor, eps: Tensor, temperature: float) -> Tensor:
    """One draw per mixture: the component from softmax(logits) by the uniform u (...) (argmax at temperature 0),
    then mu_k + temperature·sigma_k·eps with eps (..., C) standard normal."""
    k = logits.argmax(-1) if temperature == 0 else sample_from_logits(logits, u)  # (...)
    pick = k[..., None, None].expand(*k.shape, 1, mu.shape[-1])
    m, s = mu.gather(-2, pick).squeeze(-2), log_sigma.gather(-2, pick).squeeze(-2).exp()
    return m + temperature * s * eps


class MoGHead(nn.Module):
    """h (..., D) -> (logits (..., K), mu (..., K, C), log_sigma (..., K, C)) of K diagonal Gaussians in C dims."""

    def __init__(self, hidden: int, dim: int, components: int):
        super().__init__()
        self.K, self.C = components, dim
        self.norm = LayerNorm(hidden, eps=1e-6)
        self.proj = nn.Linear(hidden, components * (1 + 2 * dim))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.proj(self.norm(h)).float()
        logits, rest = out.split([self.K, 2 * self.K * self.C], dim=-1)
        mu, log_sigma = rest.unflatten(-1, (self.K, 2, self.C)).unbind(-2)
        return logits, mu, log_sigma.clamp(*LOG_SCALE_RANGE)


# ----------------------------------------------------------------------------- model


@register("generator", "resgen")
class ResGen(Generator):
    ROLE = "generator"
    CODES = "residual"  # codebooks and nearest-code lookup per depth (genlab.tokenizers.base.ResidualCodes)
    TOKEN_KINDS = ("residual",)
    LOG_KEYS = ("mse",)  # squared error of the most likely component's mean, per dimension

    @dataclass
    class Config:
        depth: int = 4  # transformer layers
        hidden_size: int = 256  # width D
        num_heads: int = 4  # attention heads
        mlp_ratio: float = 4.0  # MLP width / D
        components: int = 8  # Gaussians in the mixture head
        class_dropout: float = 0.1  # probability of the null class while training (for CFG)

        def validate(self) -> None:
            if min(self.depth, self.hidden_size, self.num_heads, self.components) <= 0 or not self.mlp_ratio > 0:
                raise ValueError("depth, hidden_size, num_heads, components and mlp_ratio must be positive")
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
            if not 0.0 <= self.class_dropout < 1.0:
                raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")

    @dataclass
    class SampleOptions(MaskedSampleOptions):
        """MaskGIT's options (steps, guidance and its schedule, choice temperature, mask schedule); ``temperature``
        scales the mixture's sigma."""

        temperature: float = option(1.0, "scale of the mixture's sigma in the draws (0: the component's mean)",
                                    low=0.0, high=100.0)  # fmt: skip

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None):
        super().__init__()
        self.check_spec(spec)
        cfg.validate()
        if codes is None or not hasattr(codes, "codebook") or spec.code_dim < 1:
            raise GeneratorError("ResGen needs the residual tokenizer's codebooks (an rqvae tokenizer)")
        self.cfg, self.spec, self.num_classes, self.codes = cfg, spec, num_classes, codes
        N, D, C, self.depth = spec.num_positions, cfg.hidden_size, spec.code_dim, spec.depth
        self.in_proj = nn.Linear(C, D)  # the visible codes' cumulative embedding
        self.masked_embed = nn.Embedding(self.depth + 1, D)  # how many codes of the position are masked
        self.y_embedder = LabelEmbedder(num_classes, D)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + N, D))
        self.embed_norm = LayerNorm(D, eps=1e-6)
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, int(D * cfg.mlp_ratio)) for _ in range(cfg.depth))
        self.norm = LayerNorm(D, eps=1e-6)
        self.head = MoGHead(D, C, cfg.components)
        MaskGIT.initialize_weights(self)  # truncated N(0, 0.02) weights and embeddings, zero biases

    # -- embeddings and the network

    def code_embeddings(self, tokens: Tensor) -> Tensor:
        """(B, N, D_rvq) ids -> (B, N, D_rvq, C) each depth's code vector."""
        return torch.stack([self.codes.codebook(d)[tokens[..., d]] for d in range(self.depth)], dim=2)

    def split_sum(self, tokens: Tensor, n_masked: Tensor) -> tuple[Tensor, Tensor]:
        """(visible cumulative embedding, masked cumulative embedding), each (B, N, C); position p's last
        ``n_masked[p]`` depths are the masked ones."""
        e = self.code_embeddings(tokens)  # (B, N, Dr, C)
        visible = torch.arange(self.depth, device=tokens.device) < (self.depth - n_masked).unsqueeze(-1)  # (B, N, Dr)
        vis = visible.unsqueeze(-1).to(e.dtype)
        return (e * vis).sum(2), (e * (1 - vis)).sum(2)

    def features(self, visible_sum: Tensor, n_masked: Tensor, labels: Tensor) -> Tensor:
        """(B, N, C) visible cumulative embeddings, (B, N) masked counts, (B,) labels -> (B, N, D) features."""
        x = self.in_proj(visible_sum.to(self.in_proj.weight.dtype)) + self.masked_embed(n_masked)
        h = torch.cat([self.y_embedder(labels).unsqueeze(1), x], dim=1)  # (B, 1 + N, D)
        h = self.embed_norm(h + self.pos_embed)
        for block in self.blocks:
            h = block(h)
        return self.norm(h[:, 1:])

    def forward(self, tokens: Tensor, n_masked: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (B, h, w, D_rvq) (masked ids are ignored), n_masked (B, h, w) -> the mixture per position."""
        B = tokens.shape[0]
        ids, n = tokens.reshape(B, -1, self.depth).long(), n_masked.reshape(B, -1).long()
        return self.head(self.features(self.split_sum(ids, n)[0], n, labels))

    # -- training

    def training_mask(self, seeds: Tensor, N: int, device) -> Tensor:
        """(B, N) masked counts: n = round(cos(pi/2 u)·N·D) slots (at least 1), finest depths first."""
        total = N * self.depth
        r = torch.cos(math.pi / 2 * per_sample_rand(seeds, (), stream=STREAM_RATIO, device=device))
        n = (r * total).round().clamp(1, total).long()  # (B,)
        slots = per_sample_rand(seeds, (N, self.depth), stream=STREAM_SLOTS, device=device).sort(-1).values
        chosen = ranks(slots.reshape(-1, total)) < n[:, None]  # (B, N·D): the n smallest slots
        return chosen.reshape(-1, N, self.depth).sum(-1)

    def loss(self, tokens: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """Mixture negative log-likelihood (per dimension) of the masked codes' cumulative embedding (§3.2)."""
        B = tokens.shape[0]
        ids = tokens.reshape(B, -1, self.depth).long()  # (B, N, Dr)
        n_masked = self.training_mask(seeds, ids.shape[1], ids.device)  # (B, N)
        drop = per_sample_rand(seeds, (), stream=STREAM_DROP, device=ids.device) < self.cfg.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        visible_sum, target = self.split_sum(ids, n_masked)
        logits, mu, log_sigma = self.head(self.features(visible_sum, n_masked, labels))
        nll = -mog_log_prob(target.float(), logits, mu, log_sigma) / self.spec.code_dim  # (B, N)
        m = (n_masked > 0).float()
        best = mu.gather(-2, logits.argmax(-1)[..., None, None].expand(*logits.shape[:2], 1, mu.shape[-1]))
        mse = ((best.squeeze(-2) - target) ** 2).mean(-1)
        return {"loss": ((nll * m).sum(1) / m.sum(1)).mean(), "mse": ((mse * m).sum(1) / m.sum(1)).mean().detach()}

    # -- decoding

    def check_options(self, options: SampleOptions) -> None:
        total = self.spec.num_positions * self.depth
        if options.steps > total:
            raise GeneratorError(f"steps must be at most the number of tokens ({total}), got {options.steps}")

    def sample(self, labels: Tensor, seeds: Tensor, options: SampleOptions) -> Sampled:
        return self.decode(labels, seeds, options)

    @torch.no_grad()
    def decode(self, labels: Tensor, seeds: Tensor, options: SampleOptions) -> Sampled:
        """T steps from all-masked stacks; nfe = T for any RVQ depth."""
        options.validate()
        self.check_options(options)
        N, Dr, T = self.spec.num_positions, self.depth, int(options.steps)
        B, device = labels.shape[0], labels.device
        ids = torch.zeros(B, N, Dr, dtype=torch.long, device=device)
        n_masked = torch.full((B, N), Dr, dtype=torch.long, device=device)
        for i in range(T):
            ids, n_masked = self.decode_step(ids, n_masked, labels, seeds, options, i)
        return Sampled(tokens=ids.reshape(B, *self.spec.shape), nfe=T)

    def guided_mixture(self, visible_sum: Tensor, n_masked: Tensor, labels: Tensor, w: float):
        if w == 1.0:
            return self.head(self.features(visible_sum, n_masked, labels))
        null = torch.full_like(labels, self.num_classes)
        h = self.features(visible_sum.repeat(2, 1, 1), n_masked.repeat(2, 1), torch.cat([labels, null]))
        cond, uncond = h.chunk(2)
        return self.head(uncond + w * (cond - uncond))

    def requantize(self, z: Tensor, ids: Tensor, n_masked: Tensor) -> Tensor:
        """Codes for the masked depths of each position from its drawn cumulative embedding z (B, N, C)."""
        out, residual = ids.clone(), z
        for d in range(self.depth):
            todo = d >= self.depth - n_masked  # (B, N)
            if not todo.any():
                continue
            code = self.codes.nearest(d, residual[todo].float())
            out[..., d][todo] = code
            residual = residual.clone()
            residual[todo] = residual[todo] - self.codes.codebook(d)[code].to(residual.dtype)
        return out

    def decode_step(self, ids: Tensor, n_masked: Tensor, labels: Tensor, seeds: Tensor, options: SampleOptions,
                    i: int) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Step i of T: draw every masked stack's cumulative embedding, re-quantize, reveal the confident slots."""
        T, o, (B, N, Dr) = int(options.steps), options, ids.shape
        w = guidance_weight(o, i)
        visible_sum, _ = self.split_sum(ids, n_masked)
        logits, mu, log_sigma = self.guided_mixture(visible_sum, n_masked, labels, w)
        u = per_sample_rand(seeds, (N,), stream=STREAM_DECODE + 3 * i, device=ids.device)
        eps = per_sample_randn(seeds, (N, self.spec.code_dim), stream=STREAM_DECODE + 3 * i + 1, device=ids.device)
        z = mog_sample(logits, mu, log_sigma, u, eps, o.temperature)  # (B, N, C)
        drawn = self.requantize(z, ids, n_masked)
        confidence = mog_log_prob(z, logits, mu, log_sigma) / self.spec.code_dim  # (B, N)
        tau = o.choice_temperature * (1.0 - (i + 1) / T)
        slots = confidence.unsqueeze(-1).expand(B, N, Dr)
        if tau > 0:
            g = per_sample_rand(seeds, (N, Dr), stream=STREAM_DECODE + 3 * i + 2, device=ids.device)
            slots = slots + tau * gumbel(g)
        j = torch.arange(Dr, device=ids.device)
        slots = torch.where(j < n_masked.unsqueeze(-1), slots, -torch.inf).sort(-1, descending=True).values
        total, masked = N * Dr, n_masked.sum(1)  # slot j of a position reveals its j-th masked depth, coarse first
        keep = torch.floor(torch.full((B,), total * decode_schedule(o.mask_schedule, (i + 1) / T), dtype=torch.float64))
        keep = torch.minimum(keep.long().to(ids.device), masked - 1).clamp(min=0)
        if i == T - 1:
            keep = torch.zeros_like(keep)
        reveal = ranks(-slots.reshape(B, total)) < (masked - keep)[:, None]  # the most confident slots
        revealed = reveal.reshape(B, N, Dr).sum(-1)  # (B, N)
        first = Dr - n_masked  # the first masked depth of each position
        take = (j >= first.unsqueeze(-1)) & (j < (first + revealed).unsqueeze(-1))  # (B, N, Dr)
        return torch.where(take, drawn, ids), n_masked - revealed


# ----------------------------------------------------------------------------- named sizes

RESGEN_SIZES = {
    "tiny": dict(depth=2, hidden_size=64, num_heads=4, components=4),
    "imagenet256": dict(depth=28, hidden_size=1152, num_heads=16, components=16),
}


def resgen_param_count(size: str, *, grid: int = 8, rvq_depth: int = 16, code_dim: int = 256,
                       num_classes: int = 1000) -> int:  # fmt: skip
    """Parameters of a named size on a grid x grid x rvq_depth token stack, counted on the meta device."""

    class _Codes:  # only the shapes matter for a count
        def codebook(self, d: int) -> Tensor:
            raise NotImplementedError

    spec = TokenSpec("residual", (grid, grid, rvq_depth), vocab_size=16384, code_dim=code_dim)
    with torch.device("meta"):
        model = ResGen(ResGen.Config(**RESGEN_SIZES[size]), spec=spec, num_classes=num_classes, codes=_Codes())
    return sum(p.numel() for p in model.parameters())
