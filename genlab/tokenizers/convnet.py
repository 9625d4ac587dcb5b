"""The 2-D convolutional encoder and decoder of VQGAN (Esser et al. 2021) and its descendants.

One configurable pair covers taming's VQGAN, LlamaGen's VQ, RQ-VAE's and VAR's VQVAE (strided-conv
downsampling, attention at the lowest resolution and in the middle, one extra res block per decoder level)
and MaskGIT's VQGAN (average-pool downsampling, no attention, as many decoder blocks as encoder blocks; its PyTorch
port, which released the weights TiTok and open-muse use, also has no biases in the res blocks' convs and the encoder's
conv_in, and its width-changing blocks return h + W h, the 1x1 "shortcut" applied to the block's output, not to its
input: ``conv_bias: false``, ``shortcut: output``).
Levels are numbered from 0 (full resolution); the image is downsampled by 2^(levels - 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.conv import Conv2d


@dataclass
class ConvNetConfig:
    ch: int = 128  # width of level 0
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiplier per level; f = 2^(len - 1)
    num_res_blocks: int = 2  # res blocks per encoder level (and in each middle block)
    decoder_res_blocks: int = 0  # res blocks per decoder level; 0: num_res_blocks + 1 (taming)
    attn_levels: tuple[int, ...] = (-1,)  # levels with self-attention after every res block (negative: from the end)
    mid_attn: bool = True  # attention between the two middle res blocks
    z_channels: int = 256  # encoder output / decoder input channels
    norm_groups: int = 32  # GroupNorm groups: every width must be a multiple
    dropout: float = 0.0
    downsample: Literal["conv", "avgpool"] = "conv"  # taming: strided 3x3 conv; MaskGIT: 2x2 average pool
    encoder_out_kernel: int = 3  # kernel of the encoder's last conv (MaskGIT: 1)
    conv_bias: bool = True  # biases in the res blocks' convs and the encoder's conv_in (MaskGIT's PyTorch port: none)
    shortcut: Literal["input", "output"] = "input"  # where a width-changing block's 1x1 shortcut reads (module doc)

    def widths(self) -> list[int]:
        return [self.ch * m for m in self.ch_mult]

    def validate(self) -> None:
        if not self.ch_mult or self.ch <= 0 or self.num_res_blocks < 1:
            raise ValueError("ch, ch_mult and num_res_blocks must be positive")
        bad = [w for w in self.widths() if w % self.norm_groups]
        if bad:
            raise ValueError(
                f"widths {self.widths()} (ch x ch_mult) must be multiples of norm_groups={self.norm_groups}; "
                f"{bad} are not: raise ch or lower norm_groups"
            )
        n = len(self.ch_mult)
        if any(not -n <= a < n for a in self.attn_levels):
            raise ValueError(f"attn_levels {self.attn_levels} out of range for {n} levels")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def has_attn(self, level: int) -> bool:
        n = len(self.ch_mult)
        return level in {a % n for a in self.attn_levels}


def norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, c, eps=1e-6)


class ResnetBlock(nn.Module):
    """h = conv2(drop(silu(norm2(conv1(silu(norm1(x))))))); returns shortcut(x) + h, or, for a width-changing block
    with ``shortcut="output"`` (MaskGIT's PyTorch port), h + W h with W a 1x1 conv (c_out -> c_out)."""

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0, *, bias: bool = True,
                 shortcut: str = "input"):  # fmt: skip
        super().__init__()
        self.norm1, self.conv1 = norm(c_in, groups), Conv2d(c_in, c_out, 3, padding=1, bias=bias)
        self.norm2, self.conv2 = norm(c_out, groups), Conv2d(c_out, c_out, 3, padding=1, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.of_output = shortcut == "output" and c_in != c_out
        c_short = c_out if self.of_output else c_in
        self.nin_shortcut = Conv2d(c_short, c_out, 1, bias=bias) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.nin_shortcut(h if self.of_output else x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions (taming's AttnBlock), through SDPA."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = norm(c, groups)
        self.q, self.k, self.v = (Conv2d(c, c, 1) for _ in range(3))
        self.proj_out = Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))  # (B, 1, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int, how: str):
        super().__init__()
        self.conv = Conv2d(c, c, 3, stride=2) if how == "conv" else None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming's asymmetric padding


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def level_blocks(cfg: ConvNetConfig, level: int, c_in: int, c_out: int, n: int) -> nn.ModuleList:
    blocks = nn.ModuleList()
    for i in range(n):
        blocks.append(resnet(cfg, c_in if i == 0 else c_out, c_out))
        if cfg.has_attn(level):
            blocks.append(AttnBlock(c_out, cfg.norm_groups))
    return blocks


def resnet(cfg: ConvNetConfig, c_in: int, c_out: int) -> ResnetBlock:
    return ResnetBlock(c_in, c_out, cfg.norm_groups, cfg.dropout, bias=cfg.conv_bias, shortcut=cfg.shortcut)


def middle(cfg: ConvNetConfig, c: int) -> nn.Sequential:
    attn = [AttnBlock(c, cfg.norm_groups)] if cfg.mid_attn else []
    return nn.Sequential(resnet(cfg, c, c), *attn, resnet(cfg, c, c))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, z_channels, H/f, W/f)."""

    def __init__(self, cfg: ConvNetConfig, in_channels: int = 3):
        super().__init__()
        widths = cfg.widths()
        self.conv_in = Conv2d(in_channels, cfg.ch, 3, padding=1, bias=cfg.conv_bias)
        self.down = nn.ModuleList()
        c = cfg.ch
        for level, w in enumerate(widths):
            stage = nn.Module()
            stage.blocks = level_blocks(cfg, level, c, w, cfg.num_res_blocks)
            stage.downsample = Downsample(w, cfg.downsample) if level < len(widths) - 1 else nn.Identity()
            self.down.append(stage)
            c = w
        self.mid = middle(cfg, c)
        self.norm_out = norm(c, cfg.norm_groups)
        k = cfg.encoder_out_kernel
        self.conv_out = Conv2d(c, cfg.z_channels, k, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.blocks:
                h = block(h)
            h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h*f, w*f)."""

    def __init__(self, cfg: ConvNetConfig, out_channels: int = 3):
        super().__init__()
        widths = cfg.widths()
        n = cfg.decoder_res_blocks or cfg.num_res_blocks + 1
        c = widths[-1]
        self.conv_in = Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = middle(cfg, c)
        self.up = nn.ModuleList()
        for level in reversed(range(len(widths))):
            stage = nn.Module()
            stage.blocks = level_blocks(cfg, level, c, widths[level], n)
            stage.upsample = Upsample(widths[level]) if level > 0 else nn.Identity()
            self.up.append(stage)
            c = widths[level]
        self.norm_out = norm(c, cfg.norm_groups)
        self.conv_out = Conv2d(c, out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in self.up:
            for block in stage.blocks:
                h = block(h)
            h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    @property
    def last_layer(self) -> nn.Parameter:
        """The weight VQGAN's adaptive GAN weight is computed at."""
        return self.conv_out.weight
