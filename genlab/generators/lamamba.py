"""LaMamba-Diff: a U-Net of Local-Attentional-Mamba blocks (Fu, Chen & Yu 2024, "LaMamba-Diff: Linear-Time
High-Fidelity Diffusion Models Based on Local Attention and Mamba", arXiv 2408.02615; yunxiangfu2001/LaMamba-Diff).
A backbone ``f(x, t, y)`` like DiT; the objective decides what the output means.

Each LaMamba block applies three residual branches in turn, each adaLN-modulated (shift, scale, gate; 9 vectors per
block regressed from the conditioning):

1. SS2D, VMamba's 2-D selective scan (Liu et al. 2024, "VMamba"): in-projection to x and a gate z, a depthwise conv,
   the map flattened in four orders (``cross_scan``), one selective scan per order (``genlab.nn.selective_scan``),
   the four results put back in place and summed (``cross_merge``), a LayerNorm, times SiLU(z), out-projection;
2. (shifted-)window self-attention with Swin's relative position bias (window 8; odd blocks shift by half a window);
3. the GELU MLP.

The U-Net: a patch embedding (+ a learned position embedding initialised sin-cos), ``len(depths)`` encoder stages of
widths (d, 2d, 4d, ..., last repeated) with a patch merge (2x2 -> 1) after all but the last two, a bottleneck added
residually, and a decoder with one more block per stage than its encoder stage (the paper's "SD-UNet decoder"), a
patch expansion (1 -> 2x2) before each stage that changes resolution, and each encoder stage's output added as a
skip. The conditioning t + y lives at the bottleneck width and each block projects it to its own.

Cost is linear in tokens: windows of fixed size and a scan. ``scan="continuous"`` (the paper's release) reads the
map in snake orders so consecutive tokens are always neighbours; ``"raster"`` is VMamba's row/column order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.dit import latent_spec, modulate
from genlab.nn import LabelEmbedder, Mlp, TimestepEmbedder, sincos_pos_embed_2d
from genlab.nn.attention import attention
from genlab.nn.conv import DepthwiseConv2d, MatmulConv2d
from genlab.nn.embeddings import relative_position_index
from genlab.nn.norms import LayerNorm
from genlab.nn.selective_scan import selective_scan
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec

# ----------------------------------------------------------------------------- four-direction scan orders


def _snake(rows: int, cols: int, row0: int, step: int, by_column: bool) -> list[int]:
    """Raster indices of a boustrophedon walk: along rows (or columns) starting at row ``row0``, moving ``step``
    rows (or columns) at a time, reversing direction every line."""
    out = []
    if by_column:
        for j in range(cols):
            col = j if step > 0 else cols - 1 - j
            for i in range(rows):
                r = i if j % 2 == 0 else rows - 1 - i
                r = r if row0 == 0 else rows - 1 - r
                out.append(r * cols + col)
    else:
        for i in range(rows):
            r = row0 + step * i
            for j in range(cols):
                out.append(r * cols + (j if i % 2 == 0 else cols - 1 - j))
    return out


def scan_orders(rows: int, cols: int, kind: str) -> Tensor:
    """(4, rows*cols) long: the raster index visited at each step of the four scans.

    ``raster`` (VMamba's CrossScan): row-major, column-major, and both reversed. ``continuous`` (LaMamba-Diff's
    ``continuous_scan.py``): snakes along rows from the top-left and from the bottom-left, and along columns from
    the bottom-left and from the bottom-right, so every step moves to a neighbouring token."""
    idx = torch.arange(rows * cols).view(rows, cols)
    if kind == "raster":
        row, col = idx.flatten(), idx.t().flatten()
        return torch.stack([row, col, row.flip(0), col.flip(0)])
    if kind == "continuous":
        paths = [
            _snake(rows, cols, 0, 1, by_column=False),
            _snake(rows, cols, rows - 1, -1, by_column=False),
            _snake(rows, cols, rows - 1, 1, by_column=True),
            _snake(rows, cols, rows - 1, -1, by_column=True),
        ]
        return torch.tensor(paths)
    raise ValueError(f"unknown scan order {kind!r}; orders: raster, continuous")


def cross_scan(x: Tensor, orders: Tensor) -> Tensor:
    """(B, D, L) map in raster order -> (B, 4, D, L): sequence k is the map read in ``orders[k]``."""
    return x[:, :, orders].transpose(1, 2)  # (B, D, 4, L) -> (B, 4, D, L)


def cross_merge(ys: Tensor, orders: Tensor) -> Tensor:
    """(B, 4, D, L) per-scan outputs -> (B, D, L): each put back at its raster position, the four summed."""
    inverse = torch.argsort(orders, dim=1)  # (4, L): the step at which scan k visited each raster position
    return sum(ys[:, k, :, inverse[k]] for k in range(orders.shape[0]))


# ----------------------------------------------------------------------------- the three branches


class SS2D(nn.Module):
    """VMamba's SS2D (forward type v2) on (B, H, W, C) maps: four directions, each with its own x/dt projections,
    A, D and dt bias; d_inner = ssm_ratio * C; dt rank ceil(C / 16)."""

    def __init__(self, dim: int, cfg: LaMambaDiff.Config):
        super().__init__()
        di, N, K = int(cfg.ssm_ratio * dim), cfg.d_state, 4
        R = -(-dim // 16)
        self.d_inner, self.d_state, self.dt_rank, self.chunk = di, N, R, cfg.scan_chunk
        self.scan = cfg.scan
        self.in_proj = nn.Linear(dim, 2 * di, bias=False)
        self.conv2d = DepthwiseConv2d(di, cfg.d_conv, bias=cfg.conv_bias)
        self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, di))  # (K, R + 2N, di)
        self.dt_projs_weight = nn.Parameter(torch.empty(K, di, R))
        self.dt_projs_bias = nn.Parameter(torch.empty(K, di))
        self.A_logs = nn.Parameter(torch.empty(K * di, N))
        self.Ds = nn.Parameter(torch.empty(K * di))
        self.out_norm = LayerNorm(di)
        self.out_proj = nn.Linear(di, dim, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> None:
        """Mamba's init: A = -(1..N) per channel, D = 1, dt log-uniform in [dt_min, dt_max] through its bias."""
        if self.A_logs.is_meta:
            return
        K, di, R = self.dt_projs_weight.shape
        nn.init.uniform_(self.x_proj_weight, -(di**-0.5), di**-0.5)
        nn.init.uniform_(self.dt_projs_weight, -(R**-0.5), R**-0.5)
        dt = torch.exp(torch.rand(K, di) * (torch.log(torch.tensor(dt_max)) - torch.log(torch.tensor(dt_min))))
        dt = (dt * dt_min).clamp(min=floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_logs.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(K * di, 1))
        self.Ds.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:  # x (B, H, W, C)
        B, H, W, _ = x.shape
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, di) each
        xs = F.silu(self.conv2d(xs.permute(0, 3, 1, 2)))  # (B, di, H, W)
        orders = scan_orders(H, W, self.scan).to(x.device)
        seqs = cross_scan(xs.flatten(2), orders)  # (B, 4, di, L)
        R, N, L = self.dt_rank, self.d_state, H * W
        proj = torch.einsum("bkdl,kcd->bkcl", seqs, self.x_proj_weight)  # (B, 4, R + 2N, L)
        dts, Bs, Cs = proj.split([R, N, N], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)  # (B, 4, di, L)
        ys = selective_scan(
            seqs.reshape(B, -1, L), dts.reshape(B, -1, L), -torch.exp(self.A_logs.float()),
            Bs.contiguous(), Cs.contiguous(), self.Ds, self.dt_projs_bias.reshape(-1), chunk=self.chunk,
        )  # fmt: skip
        y = cross_merge(ys.view(B, 4, self.d_inner, L), orders)  # (B, di, L)
        y = self.out_norm(y.transpose(1, 2).to(x.dtype)).view(B, H, W, -1)
        return self.out_proj(y * F.silu(z))


def window_partition(x: Tensor, w: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, C)


def window_reverse(windows: Tensor, w: int, H: int, W: int) -> Tensor:
    """(B * H/w * W/w, w*w, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def shift_mask(H: int, W: int, w: int, shift: int) -> Tensor:
    """Swin's mask for shifted windows: (nW, w*w, w*w), -100 between tokens that came from different regions."""
    regions = torch.zeros(1, H, W, 1)
    cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
    for n, (hs, ws) in enumerate((hs, ws) for hs in cuts for ws in cuts):
        regions[:, hs, ws, :] = n
    r = window_partition(regions, w).squeeze(-1)  # (nW, w*w)
    return (r.unsqueeze(1) != r.unsqueeze(2)).float() * -100.0


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with a learned relative position bias (Swin, Liu et al. 2021),
    on (B, H, W, C) maps; ``shift`` > 0 rolls the map by half a window first and masks across the seams."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, resolution: int):
        super().__init__()
        if resolution <= window:  # the whole map is one window: nothing to shift
            window, shift = resolution, 0
        self.window, self.shift, self.num_heads = window, shift, num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        mask = shift_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x (B, H, W, C)
        B, H, W, C = x.shape
        w, h = self.window, self.num_heads
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(x, w)  # (B*nW, N, C)
        n = win.shape[1]
        q, k, v = self.qkv(win).view(-1, n, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)  # (B*nW, h, N, Dh)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (h, N, N)
        if self.attn_mask is not None:  # (nW, N, N) -> (B*nW, h, N, N)
            bias = (bias.unsqueeze(0) + self.attn_mask.unsqueeze(1)).repeat(B, 1, 1, 1)
        out = attention(q, k, v, mask=bias.to(q.dtype))  # (B*nW, h, N, Dh)
        out = window_reverse(self.proj(out.transpose(1, 2).reshape(-1, n, C)), w, H, W)
        if self.shift:
            out = torch.roll(out, (self.shift, self.shift), dims=(1, 2))
        return out


class LaMambaBlock(nn.Module):
    """SS2D, then window attention, then the MLP, each ``x + gate * branch(modulate(norm(x), shift, scale))``."""

    def __init__(self, dim: int, cond_dim: int, resolution: int, shift: bool, project: bool, cfg: LaMambaDiff.Config):
        super().__init__()
        self.condition_projection = nn.Linear(cond_dim, dim) if project or cond_dim != dim else nn.Identity()
        self.norm = LayerNorm(dim)
        self.op = SS2D(dim, cfg)
        self.norm_swin = LayerNorm(dim)
        self.attn = WindowAttention(dim, cfg.num_heads, cfg.window_size, cfg.window_size // 2 if shift else 0,
                                    resolution)  # fmt: skip
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # x (B, H, W, D), c (B, cond_dim)
        mod = self.adaLN_modulation(self.condition_projection(c)).unsqueeze(1).chunk(9, dim=-1)  # each (B, 1, D)
        sh_s, sc_s, g_s, sh_a, sc_a, g_a, sh_m, sc_m, g_m = mod
        x = x + g_s.unsqueeze(1) * self.op(modulate(self.norm(x), sh_s, sc_s))
        x = x + g_a.unsqueeze(1) * self.attn(modulate(self.norm_swin(x), sh_a, sc_a))
        return x + g_m.unsqueeze(1) * self.mlp(modulate(self.norm2(x), sh_m, sc_m))


# ----------------------------------------------------------------------------- the U-Net


class PatchMerge(nn.Module):
    """2x2 neighbours concatenated, LayerNorm, linear to the next width (Swin / VMamba's PatchMerging2D)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C) -> (B, H/2, W/2, out)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """Linear to ``scale^2 * out`` features, rearranged into a ``scale`` x finer map, LayerNorm (Swin-UNet)."""

    def __init__(self, dim: int, out_dim: int, scale: int):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C) -> (B, sH, sW, out)
        B, H, W, _ = x.shape
        s = self.scale
        x = self.expand(x).view(B, H, W, s, s, self.out_dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(B, H * s, W * s, self.out_dim))


class Stage(nn.Module):
    def __init__(self, dim, depth, cond_dim, resolution, project, cfg):
        super().__init__()
        self.blocks = nn.ModuleList(
            LaMambaBlock(dim, cond_dim, resolution, shift=i % 2 == 1, project=project, cfg=cfg) for i in range(depth)
        )

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, c)
        return x


@register("generator", "lamamba")
class LaMambaDiff(nn.Module):
    """A backbone ``f(x, t, y)`` over continuous latents; an objective (``objective: flow``) is the generator."""

    ROLE = "backbone"
    TOKEN_KINDS = ("continuous",)

    @dataclass
    class Config:
        dim: int = 64  # width of the first stage; stage i has dim * 2^i, the last repeats the one before
        depths: list[int] = field(default_factory=lambda: [1, 1, 1])  # LaMamba blocks per encoder stage
        bottleneck_depth: int = 1  # blocks of the bottleneck (added residually)
        decoder_extra_block: bool = True  # the paper's SD-UNet decoder: one more block per stage than the encoder
        num_heads: int = 4  # window-attention heads in every stage
        window_size: int = 8  # attention window (a map no larger than it is one window, unshifted)
        patch_size: int = 1  # patch embedding stride
        mlp_ratio: float = 4.0
        d_state: int = 1  # SSM state size N (the paper: 1)
        ssm_ratio: float = 2.0  # SS2D inner width / block width
        d_conv: int = 3  # SS2D depthwise conv kernel
        conv_bias: bool = False  # bias in that conv (the paper: none)
        scan: Literal["continuous", "raster"] = "continuous"  # the four scan orders (see ``scan_orders``)
        scan_chunk: int = 8  # steps per chunk of the pure-PyTorch scan (numerics only; not the result)

        def validate(self) -> None:
            if len(self.depths) < 2 or min(self.depths) < 1:
                raise ValueError(f"depths needs at least two stages of at least one block, got {self.depths}")
            if min(self.dim, self.num_heads, self.window_size, self.patch_size, self.d_state, self.d_conv) <= 0:
                raise ValueError("dim, num_heads, window_size, patch_size, d_state and d_conv must be positive")
            if self.dim % self.num_heads:
                raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
            if self.d_conv % 2 == 0:
                raise ValueError(f"d_conv must be odd (same padding), got {self.d_conv}")
            if self.scan_chunk < 1 or self.bottleneck_depth < 0:
                raise ValueError("scan_chunk must be positive and bottleneck_depth non-negative")

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, out_channels: int = 0):
        super().__init__()
        cfg.validate()
        C, (h, w) = spec.channels, spec.grid
        n, p = len(cfg.depths), cfg.patch_size
        down = 2 ** (n - 2)  # patch merges: after every stage but the last two
        if h != w or h % (p * down):
            raise ValueError(
                f"LaMamba-Diff takes square latents whose side is divisible by patch_size * 2^(stages - 2) = "
                f"{p * down}, got {h}x{w}"
            )
        self.cfg, self.spec, self.num_classes = cfg, spec, num_classes
        self.in_channels, self.out_channels = C, out_channels or C
        dims = [cfg.dim * 2**i for i in range(n - 1)]
        dims.append(dims[-1])
        res = [h // p // 2 ** min(i, n - 2) for i in range(n)]  # each stage's resolution
        cond = dims[-1]
        self.patch_embed = MatmulConv2d(C, dims[0], p, stride=p)
        self.patch_norm = LayerNorm(dims[0])
        self.pos_embed = nn.Parameter(torch.zeros(1, res[0], res[0], dims[0]))
        self.t_embedder = TimestepEmbedder(cond)
        self.y_embedder = LabelEmbedder(num_classes, cond)
        self.encoder = nn.ModuleList(Stage(dims[i], cfg.depths[i], cond, res[i], False, cfg) for i in range(n))
        self.downsample = nn.ModuleList(PatchMerge(dims[i], dims[i + 1]) for i in range(n - 2))
        self.bottleneck = Stage(dims[-1], cfg.bottleneck_depth, cond, res[-1], False, cfg)
        extra = int(cfg.decoder_extra_block)
        up = list(range(n - 1, -1, -1))  # decoder stage j mirrors encoder stage up[j]
        self.upsample = nn.ModuleList(PatchExpand(dims[i + 1], dims[i], 2) for i in up[2:])
        self.decoder = nn.ModuleList(Stage(dims[i], cfg.depths[i] + extra, cond, res[i], True, cfg) for i in up)
        self.final_up = PatchExpand(dims[0], dims[0], p)
        self.final_condition_projection = nn.Linear(cond, dims[0])
        self.norm_final = nn.LayerNorm(dims[0], elementwise_affine=False, eps=1e-6)
        self.final_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dims[0], 2 * dims[0]))
        self.final_linear = nn.Linear(dims[0], self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The release's init: Xavier linears, sin-cos position embedding, N(0, 0.02) embedders, zero adaLN."""
        if self.pos_embed.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        g = self.pos_embed.shape[1]
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], g).view(1, g, g, -1))
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for m in [*self.modules()]:
            if isinstance(m, LaMambaBlock):
                nn.init.zeros_(m.adaLN_modulation[-1].weight)
                nn.init.zeros_(m.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_adaLN_modulation[-1].bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], y (B,) class ids (``num_classes`` = null) -> (B, C_out, H, W)."""
        h = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1)) + self.pos_embed.to(x.dtype)  # (B, H', W', D)
        c = self.t_embedder(t) + self.y_embedder(y)  # (B, cond)
        skips = []
        for i, stage in enumerate(self.encoder):
            h = stage(h, c)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = h + self.bottleneck(h, c)
        for j, stage in enumerate(self.decoder):
            if j >= 2:
                h = self.upsample[j - 2](h)
            h = stage(h + skips[-(j + 1)], c)
        shift, scale = self.final_adaLN_modulation(self.final_condition_projection(c)).unsqueeze(1).chunk(2, dim=-1)
        h = modulate(self.norm_final(self.final_up(h)), shift, scale)
        return self.final_linear(h).permute(0, 3, 1, 2)  # (B, C_out, H, W)


# the release's only config (configs/LaMamba-DIff-XL.yaml + train_lamamba.sh: 16 heads, window 8); the paper's
# smaller sizes are not in the release and their table was not retrievable here
LAMAMBA_SIZES = {
    "XL": dict(dim=320, depths=[2, 2, 2, 2], bottleneck_depth=2, num_heads=16, window_size=8, patch_size=1, d_state=1)
}


def lamamba_param_count(size: str = "XL", *, in_channels: int = 4, input_size: int = 32, num_classes: int = 1000,
                        out_channels: int = 0) -> int:  # fmt: skip
    """Parameters of a LaMamba-Diff size on SD-VAE latents (``input_size`` 32 for 256 px), on the meta device."""
    with torch.device("meta"):
        model = LaMambaDiff(
            LaMambaDiff.Config(**LAMAMBA_SIZES[size]), spec=latent_spec(in_channels, input_size),
            num_classes=num_classes, out_channels=out_channels,
        )  # fmt: skip
    return sum(p.numel() for p in model.parameters())
