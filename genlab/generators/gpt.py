"""GPT over tokens: a class-conditional decoder-only transformer (LlamaGen, Sun et al. 2024, "Autoregressive Model
Beats Diffusion: Llama for Scalable Image Generation"; FoundationVision/LlamaGen ``autoregressive/models/gpt.py``).

Any discrete tokens a genlab tokenizer makes: a raster grid (h, w) (VQ, FSQ, LFQ) or a 1-D sequence (N,) (TiTok,
FlexTok). The sequence is ``[class, t_0, ..., t_{N-2}]`` and position i predicts t_i (next-token cross-entropy over
the raster order). Llama blocks: pre-RMSNorm, bias-free attention with RoPE on q and k, a bias-free SwiGLU.

LlamaGen's choices, as its ``gpt.py`` builds the class-conditional models (all kept here):
- SwiGLU width ``find_multiple(int(2 * 4 * dim / 3), 256)``: GPT-B 2048, GPT-L 2816;
- no bias in any linear; untied token embedding and output head (both vocab x dim); the output head zero-initialised,
  every other linear and embedding N(0, 0.02); RMSNorm eps 1e-5; no QK-norm; one class token (``cls_token_num`` 1)
  from a table of num_classes + 1 rows (the last is the null class of CFG), class dropout 0.1;
- dropout 0.1 on the token embeddings, after the attention output and after the feed-forward (``token_dropout``,
  ``dropout``); genlab's defaults are 0 because dropout masks come from torch's global generator, not from the
  per-sample seeds (with dropout > 0 a sample's loss depends on its batch), the ImageNet presets set LlamaGen's 0.1;
- 2-D RoPE (theta 10000) over the grid: the first half of each head rotated by the token's row, the second half by
  its column. LlamaGen gives the class token an all-zero cos/sin table, which zeroes the class token's query and key;
  here the class token is not rotated (cos 1, sin 0). A 1-D sequence uses 1-D RoPE with the class at position 0 and
  t_j at position j + 1. The input at sequence position i is rotated by the position of the token it holds.

Sampling (``decode``) lives outside the model, as in nanochat: a ``KVCache`` and ``forward_step(tokens_new, cache,
pos)``, so it runs on any model with that method (the tests use a mock). One forward per token (nfe = tokens
generated); CFG batches the conditional and null rows in one forward and one cache. Image i depends only on seed i:
each sample draws one uniform per token from its own seed and picks its token by inverse CDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.base import Generator, GeneratorError, Sampled, SampleOptions, TokenCodes, TokenSpec, option
from genlab.nn import LabelEmbedder, RMSNorm, SwiGLU, apply_rope, per_sample_rand, rope_1d, rope_2d
from genlab.nn.attention import attention
from genlab.nn.kv_cache import KVCache
from genlab.nn.sampling import drop_labels, guide_logits, sample_tokens
from genlab.registry import register

# name -> (depth, hidden_size, num_heads): LlamaGen's class-conditional GPT_B / GPT_L, and a tiny one for tests
GPT_SIZES = {"tiny": (2, 64, 4), "B": (12, 768, 12), "L": (24, 1024, 16)}
CLASS_DROP_STREAM, SAMPLE_STREAM = 0, 1  # per-sample random streams (genlab.nn.rng)


def ffn_hidden(dim: int, multiple_of: int) -> int:
    """Llama's SwiGLU width: 2/3 of 4 * dim, rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * 4 * dim / 3)
    return -(-hidden // multiple_of) * multiple_of


class CausalSelfAttention(nn.Module):
    """Bias-free fused q/k/v, RoPE on q and k, causal SDPA; with a cache, the new queries see every cached key."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, rope: Tensor, cache: KVCache | None = None, layer: int = 0, pos: int = 0) -> Tensor:
        B, n, D = x.shape
        q, k, v = self.wqkv(x).view(B, n, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = apply_rope(q, rope), apply_rope(k, rope)  # (B, H, n, Dh) each
        if cache is None:
            out = attention(q, k, v, is_causal=True)
        else:
            k, v = cache.update(layer, pos, k, v)  # (B, H, pos+n, Dh)
            # one new token sees everything cached; several see the cache and the causal part of their own block
            mask = (
                None
                if n == 1
                else torch.arange(pos + n, device=x.device) <= pos + torch.arange(n, device=x.device)[:, None]
            )
            out = attention(q, k, v, mask=mask)
        return self.resid_dropout(self.wo(out.transpose(1, 2).reshape(B, n, D)))


class Block(nn.Module):
    """x + attn(norm(x)), then x + swiglu(norm(x)) (Llama's pre-norm block)."""

    def __init__(self, cfg: GPT.Config):
        super().__init__()
        D = cfg.hidden_size
        self.attention_norm = RMSNorm(D, eps=cfg.norm_eps)
        self.attention = CausalSelfAttention(D, cfg.num_heads, cfg.dropout)
        self.ffn_norm = RMSNorm(D, eps=cfg.norm_eps)
        self.feed_forward = SwiGLU(D, ffn_hidden(D, cfg.ffn_multiple_of), bias=False, fused=False)
        self.ffn_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, rope: Tensor, cache: KVCache | None = None, layer: int = 0, pos: int = 0) -> Tensor:
        x = x + self.attention(self.attention_norm(x), rope, cache, layer, pos)
        return x + self.ffn_dropout(self.feed_forward(self.ffn_norm(x)))


@register("generator", "gpt")
class GPT(Generator):
    ROLE = "generator"
    TOKEN_KINDS = ("discrete",)
    LOG_KEYS = ("acc",)

    @dataclass
    class Config:
        depth: int = 2  # transformer blocks (GPT_SIZES: B 12, L 24)
        hidden_size: int = 64  # width (B 768, L 1024)
        num_heads: int = 4  # attention heads (B 12, L 16)
        ffn_multiple_of: int = 256  # SwiGLU width = int(8 * hidden_size / 3) rounded up to a multiple of this
        norm_eps: float = 1e-5  # RMSNorm epsilon (LlamaGen 1e-5)
        rope_theta: float = 10000.0  # RoPE base
        class_dropout: float = 0.1  # probability that a training label becomes the null class (for CFG)
        token_dropout: float = 0.0  # dropout on the input embeddings (LlamaGen 0.1; global RNG, see the module doc)
        dropout: float = 0.0  # dropout after the attention output and the feed-forward (LlamaGen 0.1; global RNG)
        # the class token's RoPE row on a 2-D grid: "identity" (unrotated, genlab's) or "zero" (LlamaGen's all-zero
        # cos/sin row, which zeroes the class token's query and key; what imported LlamaGen checkpoints compute)
        class_rope: Literal["identity", "zero"] = "identity"

        def validate(self) -> None:
            if min(self.depth, self.hidden_size, self.num_heads, self.ffn_multiple_of) <= 0:
                raise ValueError("depth, hidden_size, num_heads and ffn_multiple_of must be positive")
            if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
                raise ValueError(
                    f"hidden_size {self.hidden_size} / num_heads {self.num_heads} must be a whole head dimension "
                    "divisible by 4 (2-D RoPE rotates a half per axis, in pairs)"
                )
            for key in ("class_dropout", "token_dropout", "dropout"):
                if not 0.0 <= getattr(self, key) < 1.0:
                    raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")

    @dataclass
    class SampleOptions(SampleOptions):
        temperature: float = option(1.0, "softmax temperature; 0 = argmax (greedy)", low=0.0)
        top_k: int = option(0, "sample among the k most likely tokens; 0 = all", low=0)
        top_p: float = option(1.0, "sample in the smallest set of tokens holding probability top_p; 1 = all", low=0.0,
                              high=1.0)  # fmt: skip
        cfg: float = option(1.0, "classifier-free guidance scale; 1 = conditional only, 0 = unconditional", low=0.0,
                            high=100.0)  # fmt: skip
        cfg_schedule: Literal["constant", "linear"] = option(
            "constant", "guidance over the tokens: constant, or linear from 1 at the first token to cfg at the last"
        )
        num_tokens: int = option(0, "tokens to generate for a variable-length 1-D tokenizer; 0 = all", low=0)

        def check(self) -> None:
            if self.cfg_schedule not in ("constant", "linear"):
                raise ValueError(f"cfg_schedule must be constant or linear, got {self.cfg_schedule!r}")
            if self.top_p <= 0:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None):
        super().__init__()
        self.check_spec(spec)
        self.cfg, self.spec, self.num_classes = cfg, spec, num_classes
        D, N, head_dim = cfg.hidden_size, spec.num_positions, cfg.hidden_size // cfg.num_heads
        self.cls_embedding = LabelEmbedder(num_classes, D)  # num_classes + 1 rows; the last is the null class
        self.tok_embeddings = nn.Embedding(spec.vocab_size, D)
        self.tok_dropout = nn.Dropout(cfg.token_dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(D, eps=cfg.norm_eps)
        self.output = nn.Linear(D, spec.vocab_size, bias=False)
        if spec.grid is None:  # class at position 0, t_j at j + 1
            rope = rope_1d(head_dim, N, theta=cfg.rope_theta)
        else:  # class unrotated, t_j at its (row, column)
            identity = torch.stack([torch.ones(1, head_dim), torch.zeros(1, head_dim)])
            if cfg.class_rope == "zero":
                identity = torch.zeros_like(identity)
            rope = torch.cat([identity, rope_2d(head_dim, spec.grid, theta=cfg.rope_theta)[:, : N - 1]], dim=1)
        self.register_buffer("rope", rope, persistent=False)  # (2, N, Dh): one row per input position
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """LlamaGen's init: N(0, 0.02) for linears and embeddings, a zero output head."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.output.weight)

    def embed(self, seq: Tensor, pos: int) -> Tensor:
        """(B, n) inputs at positions pos .. pos+n-1 -> (B, n, D); the input at position 0 is a class id."""
        if pos > 0:
            return self.tok_dropout(self.tok_embeddings(seq))
        cls = self.cls_embedding(seq[:, :1])  # (B, 1, D)
        return self.tok_dropout(torch.cat([cls, self.tok_embeddings(seq[:, 1:])], dim=1))

    def head(self, h: Tensor) -> Tensor:
        return self.output(self.norm(h))  # (B, n, V)

    def forward(self, seq: Tensor) -> Tensor:
        """Full causal pass: seq (B, T) = [class, t_0, ..., t_{T-2}] -> logits (B, T, V) of t_0 .. t_{T-1}."""
        h, rope = self.embed(seq, 0), self.rope[:, : seq.shape[1]]
        for layer in self.layers:
            h = layer(h, rope)
        return self.head(h)

    def forward_step(self, tokens_new: Tensor, cache: KVCache, pos: int) -> Tensor:
        """Inputs (B, n) at positions pos .. pos+n-1 against the cache -> logits (B, n, V); writes their keys."""
        h, rope = self.embed(tokens_new, pos), self.rope[:, pos : pos + tokens_new.shape[1]]
        for i, layer in enumerate(self.layers):
            h = layer(h, rope, cache, i, pos)
        return self.head(h)

    def loss(self, tokens: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """Next-token cross-entropy over the raster order; labels dropped to the null class with class_dropout."""
        ids = tokens.reshape(tokens.shape[0], -1)  # (B, N)
        labels = drop_labels(labels, seeds, self.cfg.class_dropout, self.num_classes, stream=CLASS_DROP_STREAM)
        logits = self(torch.cat([labels[:, None], ids[:, :-1]], dim=1)).float()  # (B, N, V)
        loss = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
        return {"loss": loss, "acc": (logits.argmax(-1) == ids).float().mean().detach()}

    def sample_length(self, options: GPT.SampleOptions) -> int:
        N = self.spec.num_positions
        if options.num_tokens and not self.spec.variable_length and options.num_tokens != N:
            raise GeneratorError(f"num_tokens applies to variable-length 1-D tokenizers; these tokens are {N} long")
        if options.num_tokens > N:
            raise GeneratorError(f"num_tokens {options.num_tokens} exceeds the tokenizer's {N} tokens")
        return options.num_tokens or N

    @torch.no_grad()
    def sample(self, labels: Tensor, seeds: Tensor, options: GPT.SampleOptions) -> Sampled:
        options.validate()
        n, was_training = self.sample_length(options), self.training
        self.eval()
        try:
            ids = decode(self, labels, seeds, n, options, null_class=self.num_classes)  # (B, n)
        finally:
            self.train(was_training)
        grid = self.spec.grid
        return Sampled(tokens=ids if grid is None else ids.view(len(ids), *grid), nfe=n)


# ----------------------------------------------------------------------------- sampling (any forward_step model)


def guidance_scales(cfg: float, schedule: str, n: int) -> list[float]:
    """The CFG scale of each of n tokens: ``constant`` gives cfg throughout; ``linear`` gives
    s_i = 1 + (cfg - 1) * i / (n - 1) for token i = 0 .. n-1 (1 at the first token, cfg at the last; cfg if n = 1).
    LlamaGen's released sampler uses a constant scale; the ramp is the usual AR variant (VAR ramps over scales)."""
    if schedule == "constant" or n == 1:
        return [cfg] * n
    return [1.0 + (cfg - 1.0) * i / (n - 1) for i in range(n)]


def decode(model, labels: Tensor, seeds: Tensor, n: int, options, *, null_class: int) -> Tensor:
    """Generate n tokens (B, n) after the class token with a KV cache: one ``model.forward_step`` per token. With
    CFG the conditional and null rows run as one batch of 2B sharing one cache, and logits are
    l_uncond + s_i * (l_cond - l_uncond) with s_i from ``guidance_scales``."""
    B = labels.shape[0]
    scales = guidance_scales(options.cfg, options.cfg_schedule, n)
    guided = any(s != 1.0 for s in scales)
    x = torch.cat([labels, torch.full_like(labels, null_class)]) if guided else labels
    x = x[:, None]  # (B or 2B, 1): the class token at position 0
    u = per_sample_rand(seeds, (n,), stream=SAMPLE_STREAM, device=labels.device)  # (B, n), one draw per token
    cache, out = KVCache(n), torch.empty(B, n, dtype=torch.long, device=labels.device)
    for i in range(n):
        logits = model.forward_step(x, cache, i)[:, -1].float()  # (B or 2B, V)
        if guided:
            cond, uncond = logits.chunk(2)
            logits = guide_logits(cond, uncond, scales[i], rule="lerp")
        o = options  # LlamaGen's top-k / top-p rule
        tok = sample_tokens(logits, u[:, i], temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, rule="sorted")
        out[:, i] = tok
        x = (torch.cat([tok, tok]) if guided else tok)[:, None]
    return out


# ----------------------------------------------------------------------------- named sizes


def gpt_config(size: str, **overrides) -> GPT.Config:
    """A named size (GPT_SIZES) as a Config; ffn rounding, eps and dropouts as LlamaGen unless overridden."""
    depth, hidden, heads = GPT_SIZES[size]
    return GPT.Config(depth=depth, hidden_size=hidden, num_heads=heads, **overrides)


def gpt_param_count(size: str, *, vocab_size: int = 16384, grid: tuple[int, int] = (16, 16), num_classes: int = 1000):
    """Parameters of a named size on LlamaGen's VQ-16 tokens (16x16 grid, vocab 16384), counted on the meta device."""
    spec = TokenSpec("discrete", grid, vocab_size=vocab_size)
    with torch.device("meta"):
        model = GPT(gpt_config(size), spec=spec, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
