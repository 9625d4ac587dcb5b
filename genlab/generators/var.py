"""VAR: visual autoregressive modelling by next-scale prediction (Tian et al., "Visual Autoregressive Modeling:
Scalable Image Generation via Next-Scale Prediction", NeurIPS 2024; FoundationVision/VAR).

The tokens are a multi-scale VQ's maps r_1 .. r_K (sides s_1 < .. < s_K, L = sum s_k^2 positions). VAR models
p(r_1 .. r_K | class) = prod_k p(r_k | r_<k, class) (paper eq. 6): a GPT-2-like transformer whose scale-k positions
all predict at once, attending to every position of scales <= k (the block-causal mask; full attention inside a
scale). Its input at scale k > 1 is the tokenizer's cumulative latent f_hat of scales < k, area-downsampled to
s_k x s_k and embedded by a linear (``word_embed``, code_dim -> width); scale 1's input is the class embedding plus
``pos_start``. Every position adds a learned position embedding and a level (scale) embedding. Each block is
adaLN-modulated by the class embedding (``adaLN_modulation``, six vectors in VAR's order gamma1, gamma2, scale1,
scale2, shift1, shift2), and so is the head. With ``attn_l2_norm`` q and k are l2-normalised and q is scaled by a
learned per-head factor (VAR's ``scale_mul_1H11``, clamped to <= 100); otherwise the logit scale is VAR's
0.25 / sqrt(head_dim). Training: cross-entropy over all L positions (uniform weights), class dropout to the null
class ``num_classes``. Sampling (VAR's ``autoregressive_infer_cfg``): one forward per scale over that scale's
positions with a KV cache; classifier-free guidance ramped over scales, t = (cfg - 1) * k / (K - 1),
logits = (1 + t) cond - t uncond; top-k / top-p. genlab's ``cfg`` is 1 + VAR's (VAR's cfg 1.5 is genlab's 2.5), so
that cfg 1 means no guidance in every genlab family.

Sizes (``var_size``): width 64 * depth, heads = depth; VAR's README lists d16 / d20 / d24 / d30 as 310M / 600M /
1.0B / 2.0B parameters (``var_param_count``; the counts are in the presets imagenet256/var-d*). VAR-d36's shared
adaLN (``saln``) is not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.base import Generator, GeneratorError, Sampled, SampleOptions, TokenCodes, TokenSpec, option
from genlab.nn import LabelEmbedder, Mlp, per_sample_rand
from genlab.nn.attention import attention
from genlab.nn.kv_cache import KVCache
from genlab.nn.sampling import drop_labels, guide_logits, sample_tokens
from genlab.registry import register
from genlab.tokenizers.base import MultiScaleCodes

VAR_DEPTHS = (16, 20, 24, 30)  # the released ImageNet 256 models (README: 310M, 600M, 1.0B, 2.0B parameters)
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR's patch_nums on a 16x16 latent: L = 680


def scale_levels(scales: tuple[int, ...]) -> Tensor:
    """(L,) scale index of every position, scales coarse to fine, each in raster order."""
    return torch.cat([torch.full((s * s,), k, dtype=torch.long) for k, s in enumerate(scales)])


def block_causal_mask(scales: tuple[int, ...]) -> Tensor:
    """(L, L) bool, True where query row i may attend key column j: scale(j) <= scale(i) (VAR's
    ``attn_bias_for_masking`` is 0 there and -inf elsewhere)."""
    lvl = scale_levels(scales)
    return lvl[None, :] <= lvl[:, None]


class NextScaleAttention(nn.Module):
    """VAR's self-attention: a bias-free qkv linear plus q and v biases (the k bias would cancel in the softmax),
    optional l2-normalised q/k with a learned per-head scale, SDPA with a mask or over a KV cache."""

    def __init__(self, dim: int, num_heads: int, l2_norm: bool):
        super().__init__()
        if dim % num_heads:
            raise GeneratorError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim, self.l2_norm = num_heads, dim // num_heads, l2_norm
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        if l2_norm:  # log of the multiplier of the normalised q, initialised to 4 and clamped to <= 100
            self.scale_mul = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        B, N, D = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        if self.l2_norm:
            q = F.normalize(q, dim=-1) * self.scale_mul.clamp_max(math.log(100.0)).exp()
            k = F.normalize(k, dim=-1)
            scale = 1.0
        else:
            scale = 0.25 / math.sqrt(self.head_dim)  # VAR's logit scale without the l2 norm
        if cache is not None:
            k, v = cache.extend(layer, k, v)  # (B, H, N_prefix + N, Dh)
        out = attention(q.to(v.dtype), k.to(v.dtype), v, mask=mask, scale=scale)  # (B, H, N, Dh); norms may give fp32
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


def adaln(norm: nn.Module, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """norm(x) * (1 + scale) + shift, with (B, 1, D) modulations."""
    return norm(x) * (1 + scale) + shift


class AdaLNSelfAttnBlock(nn.Module):
    """x += gamma1 * attn(adaLN1(x)); x += gamma2 * mlp(adaLN2(x)); one LayerNorm without affine serves both."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, l2_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn = NextScaleAttention(dim, num_heads, l2_norm)
        self.mlp = Mlp(dim, round(dim * mlp_ratio))  # VAR's FFN: fc1, tanh-GELU, fc2
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, mask=None, cache=None, layer=0, keep: Tensor | None = None) -> Tensor:
        """x (B, N, D), c (B, D); ``keep`` (B, 2): stochastic-depth factors of the two branches (0 or 1/p)."""
        B, _, D = x.shape
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.adaLN_modulation(c).view(B, 1, 6, D).unbind(2)
        h = self.attn(adaln(self.norm, x, scale1, shift1), mask, cache, layer) * gamma1
        x = x + (h if keep is None else h * keep[:, 0, None, None])
        h = self.mlp(adaln(self.norm, x, scale2, shift2)) * gamma2
        return x + (h if keep is None else h * keep[:, 1, None, None])


class AdaLNHead(nn.Module):
    """adaLN before the classifier (VAR's ``AdaLNBeforeHead`` + ``head``): (B, N, D) -> logits (B, N, V)."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, vocab_size)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.adaLN_modulation(c).view(x.shape[0], 1, 2, x.shape[-1]).unbind(2)
        return self.linear(adaln(self.norm, x, scale, shift))


def guided_logits(logits: Tensor, B: int, t: float) -> Tensor:
    """VAR's ramped guidance on a (2B, ...) batch [conditional; unconditional]: (1 + t) cond - t uncond."""
    return guide_logits(logits[:B], logits[B:], t, rule="extrapolate")


@register("generator", "var")
class VAR(Generator):
    ROLE = "generator"
    TOKEN_KINDS = ("multiscale",)
    CODES = "multiscale"  # teacher-forcing and next-scale inputs (MultiScaleCodes)
    LOG_KEYS = ("acc",)

    @dataclass
    class Config:
        depth: int = 16  # transformer blocks (VAR-d16 .. d30)
        hidden_size: int = 0  # model width; 0: 64 * depth (VAR)
        num_heads: int = 0  # attention heads; 0: depth (VAR)
        mlp_ratio: float = 4.0  # MLP hidden width / model width
        attn_l2_norm: bool = True  # l2-normalised q/k with a learned scale (VAR's anorm, on in its releases)
        class_dropout: float = 0.1  # probability of training on the null class (for classifier-free guidance)
        drop_path: float = 0.0  # stochastic depth, rising linearly over blocks to this (VAR: 0.1 * depth / 24)
        label_smoothing: float = 0.0  # of the cross-entropy (VAR's ls)
        init_adaln: float = 0.5  # multiplier of the adaLN linears' init (VAR's aln)
        init_adaln_gamma: float = 1e-5  # multiplier of their gamma rows' init (VAR's alng: 1e-3 for d16/d20)
        init_head: float = 0.02  # multiplier of the classifier's init (VAR's hd)

        def validate(self) -> None:
            if self.depth < 1 or self.hidden_size < 0 or self.num_heads < 0 or self.mlp_ratio <= 0:
                raise ValueError("depth must be >= 1, hidden_size and num_heads >= 0 (0: VAR's rule), mlp_ratio > 0")
            if self.dims[0] % self.dims[1]:
                raise ValueError(f"width {self.dims[0]} is not divisible by {self.dims[1]} heads")
            for key in ("class_dropout", "drop_path", "label_smoothing"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")

        @property
        def dims(self) -> tuple[int, int]:
            """(width, heads) with VAR's rules filled in."""
            return self.hidden_size or 64 * self.depth, self.num_heads or self.depth

    @dataclass
    class SampleOptions(SampleOptions):
        # VAR's FID settings (README / autoregressive_infer_cfg): cfg 1.5 (genlab's 2.5), top_p 0.96, top_k 900
        cfg: float = option(2.5, "guidance ramped over scales: t = (cfg-1)*k/(K-1), (1+t)*cond - t*uncond; 1 = none "
                            "(VAR's cfg + 1)", low=0.0, high=100.0)  # fmt: skip
        top_k: int = option(900, "sample among the k most likely tokens (0: all)", low=0)
        top_p: float = option(0.96, "sample among the most likely tokens holding probability p; 1 = all", low=0, high=1)
        temperature: float = option(1.0, "divide the guided logits by this", low=1e-3)

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None):
        super().__init__()
        self.check_spec(spec)
        cfg.validate()
        if spec.code_dim < 1:
            raise GeneratorError("VAR embeds code vectors: the tokenizer's TokenSpec needs a code_dim")
        self.cfg, self.spec, self.codes, self.num_classes = cfg, spec, codes, num_classes
        self.scales = tuple(spec.scales)
        D, H = cfg.dims
        L, first = spec.num_positions, self.scales[0] ** 2
        self.begin_ends = [(sum(s * s for s in self.scales[:k]), sum(s * s for s in self.scales[: k + 1]))
                           for k in range(len(self.scales))]  # fmt: skip
        self.word_embed = nn.Linear(spec.code_dim, D)
        self.class_emb = LabelEmbedder(num_classes, D)  # row num_classes: the null class
        self.pos_start = nn.Parameter(torch.zeros(1, first, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, L, D))
        self.lvl_embed = nn.Embedding(len(self.scales), D)
        self.blocks = nn.ModuleList(AdaLNSelfAttnBlock(D, H, cfg.mlp_ratio, cfg.attn_l2_norm) for _ in range(cfg.depth))
        self.head = AdaLNHead(D, spec.vocab_size)
        self.register_buffer("levels", scale_levels(self.scales), persistent=False)
        self.register_buffer("mask", block_causal_mask(self.scales), persistent=False)
        if torch.empty(0).device.type != "meta":
            self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """VAR's ``init_weights`` (init_std sqrt(1 / (3 D))): truncated normals, output projections divided by
        sqrt(2 depth), small adaLN (gamma rows smaller still) and head."""
        D, std = self.cfg.dims[0], math.sqrt(1 / self.cfg.dims[0] / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.pos_start, self.pos_embed):
            nn.init.trunc_normal_(p, std=std)
        self.head.linear.weight.mul_(self.cfg.init_head)
        self.head.adaLN_modulation[-1].weight.mul_(self.cfg.init_adaln)
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * self.cfg.depth))
            block.mlp.fc2.weight.div_(math.sqrt(2 * self.cfg.depth))
            w = block.adaLN_modulation[-1].weight
            w[2 * D :].mul_(self.cfg.init_adaln)
            w[: 2 * D].mul_(self.cfg.init_adaln_gamma)

    # -- the network

    def position_embeddings(self, scales: tuple[int, ...]) -> Tensor:
        """(1, sum s_k^2, D) of a scale schedule: VAR's learned position embedding + level embedding, which exist for
        its tokenizer's scales only (FlexVAR, generator "flexvar", takes any schedule)."""
        if tuple(scales) != self.scales:
            raise GeneratorError(f"VAR samples at its tokenizer's scales {self.scales}; FlexVAR takes any schedule")
        return self.lvl_embed(self.levels)[None] + self.pos_embed

    def schedule(self, options: SampleOptions) -> tuple[int, ...]:
        """The scale sides a sample walks through: VAR's are its tokenizer's."""
        return self.scales

    def next_input(self, k: int, scales: tuple[int, ...], codes: Tensor, f_hat: Tensor | None):
        """(state, input codes (B, C, s_{k+1}, s_{k+1}) or None after the last scale) after scale k's codes (B, C, s_k,
        s_k): VAR adds them to the running latent f_hat (the tokenizer's next_scale_input) and reads it downsampled."""
        if f_hat is None:
            f_hat = codes.new_zeros(codes.shape[0], codes.shape[1], self.scales[-1], self.scales[-1])
        return self.require_codes().next_scale_input(k, f_hat, codes)

    def embed(self, labels: Tensor, inputs_BLC: Tensor | None) -> tuple[Tensor, Tensor]:
        """(x (B, L, D), c (B, D)) from class ids and the code inputs of scales 2..K (B, L - s_1^2, code_dim)."""
        c = self.class_emb(labels)  # (B, D)
        x = c[:, None].expand(-1, self.scales[0] ** 2, -1) + self.pos_start  # the start token(s)
        if inputs_BLC is not None:
            x = torch.cat([x, self.word_embed(inputs_BLC.to(x.dtype))], dim=1)
        return x + self.position_embeddings(self.scales)[:, : x.shape[1]], c

    def blocks_and_head(self, x: Tensor, c: Tensor, mask=None, cache=None, keep: Tensor | None = None) -> Tensor:
        """Logits (B, N, V) of positions x (B, N, D): under ``mask`` (teacher forcing) or after ``cache``'s prefix."""
        for i, block in enumerate(self.blocks):
            x = block(x, c, mask, cache, i, None if keep is None else keep[:, i])
        return self.head(x, c).float()

    def forward(self, labels: Tensor, inputs_BLC: Tensor | None, keep: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, L, V) of every scale at once, under the block-causal mask."""
        x, c = self.embed(labels, inputs_BLC)
        return self.blocks_and_head(x, c, self.mask[: x.shape[1], : x.shape[1]], keep=keep)

    def require_codes(self) -> MultiScaleCodes:
        if self.codes is None:
            raise GeneratorError("VAR needs the tokenizer's code protocol: build it with codes=tokenizer.codes()")
        return self.codes

    @torch.no_grad()
    def teacher_forcing(self, tokens: list[Tensor]) -> Tensor | None:
        """(B, L - s_1^2, code_dim): the tokenizer's inputs of scales 2..K from ground-truth maps, flattened (None for
        a single scale)."""
        maps = self.require_codes().teacher_forcing_inputs(tokens)
        if not maps:
            return None
        return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

    # -- the Generator contract

    def loss(self, tokens: list[Tensor], labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over all scales (VAR: uniform weight per position) and next-scale accuracy."""
        if len(tokens) != len(self.scales):
            raise GeneratorError(f"VAR expects {len(self.scales)} token maps, got {len(tokens)}")
        device = labels.device
        labels = drop_labels(labels, seeds, self.cfg.class_dropout, self.num_classes, stream=0)
        x_BLC = self.teacher_forcing(tokens)
        logits_BLV = self(labels, x_BLC, keep=self.drop_path_factors(seeds, device))
        target_BL = torch.cat([t.reshape(t.shape[0], -1) for t in tokens], dim=1).to(device)
        V = logits_BLV.shape[-1]
        loss = F.cross_entropy(
            logits_BLV.reshape(-1, V), target_BL.reshape(-1), label_smoothing=self.cfg.label_smoothing
        )
        acc = (logits_BLV.argmax(-1) == target_BL).float().mean()
        return {"loss": loss, "acc": acc.detach()}

    def drop_path_factors(self, seeds: Tensor, device) -> Tensor | None:
        """(B, depth, 2) stochastic-depth factors per sample, block and branch (timm's rule: 0 or 1 / keep), with
        VAR's rates rising linearly from 0 to ``drop_path``; None when off or not training."""
        if not (self.training and self.cfg.drop_path > 0):
            return None
        rate = torch.linspace(0, self.cfg.drop_path, self.cfg.depth, device=device)[None, :, None]  # (1, depth, 1)
        u = per_sample_rand(seeds, (self.cfg.depth, 2), stream=1, device=device)
        return (u >= rate).float() / (1 - rate)

    def guidance_t(self, k: int, side: int, K: int, options: SampleOptions) -> float:
        """VAR's guidance ramp at step k of K (side ``side``): t = (cfg - 1) * k / (K - 1)."""
        return (options.cfg - 1) * k / max(K - 1, 1)

    def top_k_at(self, side: int, options: SampleOptions) -> int:
        """The top-k of the step at side ``side`` (VAR: the option's at every side; 1 decodes greedily)."""
        return options.top_k

    @torch.no_grad()
    def sample(self, labels: Tensor, seeds: Tensor, options: SampleOptions) -> Sampled:
        """VAR's ``autoregressive_infer_cfg``: scale by scale with a KV cache; tokens: K maps (B, s_k, s_k)."""
        options.validate()
        codes = self.require_codes()
        scales = self.schedule(options)
        B, K, device = labels.shape[0], len(scales), labels.device
        guided = options.cfg != 1  # cfg 1 is t = 0 at every scale: the conditional pass alone
        y = torch.cat([labels, torch.full_like(labels, self.num_classes)]) if guided else labels
        c = self.class_emb(y)
        pos = self.position_embeddings(scales)  # (1, L, D)
        x = c[:, None].expand(-1, scales[0] ** 2, -1) + self.pos_start + pos[:, : scales[0] ** 2]
        cache, state, maps, begin = KVCache(sum(s * s for s in scales)), None, [], 0
        for k, s in enumerate(scales):
            logits = self.blocks_and_head(x, c, cache=cache)  # (B or 2B, s*s, V)
            if guided:
                logits = guided_logits(logits, B, self.guidance_t(k, s, K, options))
            u = per_sample_rand(seeds, (s * s,), stream=k, device=device)  # row i from seed i alone
            o = options  # VAR's sample_with_top_k_top_p_ rule
            top_k = self.top_k_at(s, options)
            ids = sample_tokens(logits, u, temperature=o.temperature, top_k=top_k, top_p=o.top_p, rule="vocab")
            ids = ids.view(B, s, s)
            maps.append(ids)
            state, nxt = self.next_input(k, scales, codes.scale_codes(k, ids), state)
            begin += s * s
            if nxt is not None:
                x = (
                    self.word_embed(nxt.flatten(2).transpose(1, 2).to(c.dtype))
                    + pos[:, begin : begin + scales[k + 1] ** 2]
                )
                x = x.repeat(2, 1, 1) if guided else x
        return Sampled(maps, nfe=K)


# ----------------------------------------------------------------------------- named sizes


def var_config(depth: int, **overrides) -> VAR.Config:
    """VAR-d{depth} as VAR's ``build_vae_var`` makes it: width 64 * depth, heads = depth, l2-normalised attention,
    drop path 0.1 * depth / 24 (the ``init_adaln_gamma`` of the README's recipes is set by the presets)."""
    return VAR.Config(depth=depth, drop_path=round(0.1 * depth / 24, 6), **overrides)


def var_spec(scales: tuple[int, ...] = VAR_SCALES, vocab_size: int = 4096, code_dim: int = 32) -> TokenSpec:
    """The TokenSpec of VAR's VQVAE (vae_ch160v4096z32): 10 scales up to 16x16, 4096 codes of dimension 32."""
    return TokenSpec("multiscale", (scales[-1], scales[-1]), vocab_size=vocab_size, scales=scales, code_dim=code_dim)


def var_param_count(depth: int, num_classes: int = 1000) -> int:
    """Parameters of VAR-d{depth} on VAR's VQVAE tokens, counted on the meta device."""
    with torch.device("meta"):
        model = VAR(var_config(depth), spec=var_spec(), num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
