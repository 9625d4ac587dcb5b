"""DiT's adaLN-Zero transformer pieces (Peebles & Xie 2023), shared by the DiT backbone (``genlab.generators.dit``)
and FlexTok's rectified-flow decoder: the modulated block and the final layer. ``cfg`` is any object with DiT.Config's
fields ``norm``, ``qk_norm``, ``mlp``, ``mlp_ratio``, ``adaln`` and ``conditioning`` (adaLN or DiMR's TD-LN)."""

from __future__ import annotations

from torch import Tensor, nn

from genlab.nn.attention import Attention, Mlp, SwiGLU
from genlab.nn.norms import TDNorm, make_norm


def modulate(x: Tensor, shift: Tensor | None, scale: Tensor) -> Tensor:
    x = x * (1 + scale.unsqueeze(1))
    return x if shift is None else x + shift.unsqueeze(1)


def block_norm(kind: str, hidden: int) -> nn.Module:
    """The norm before each modulation: DiT's LayerNorm has no affine (adaLN supplies scale and shift);
    LightningDiT's RMSNorm keeps a learnable scale, so ``rmsnorm`` adds ``hidden`` parameters per norm."""
    return make_norm(kind, hidden, affine=kind == "rmsnorm", eps=1e-6)


def swiglu_hidden(hidden: int, mlp_ratio: float) -> int:
    """LightningDiT's SwiGLU width: int(2/3 * int(mlp_ratio * D)) (XL: 3072), so it costs about what the MLP does."""
    return int(2 / 3 * int(hidden * mlp_ratio))


class DiTBlock(nn.Module):
    """Self-attention + MLP, each branch modulated (shift, scale; or scale alone) and gated by the conditioning;
    or, with ``conditioning="tdln"``, ``x + branch(TDNorm(x, tau))`` with no modulation MLP (DiMR's TD-LN)."""

    def __init__(self, hidden: int, num_heads: int, cfg):
        super().__init__()
        self.tdln = getattr(cfg, "conditioning", "adaln") == "tdln"  # FlexTok's decoder config has no such field
        if self.tdln:
            self.norm1, self.norm2 = TDNorm(cfg.norm, hidden), TDNorm(cfg.norm, hidden)
            self.attn = Attention(hidden, num_heads, qk_norm=cfg.norm if cfg.qk_norm else None)
            self.mlp = SwiGLU(hidden, swiglu_hidden(hidden, cfg.mlp_ratio)) if cfg.mlp == "swiglu" else (
                Mlp(hidden, int(hidden * cfg.mlp_ratio)))  # fmt: skip
            return
        self.norm1 = block_norm(cfg.norm, hidden)
        self.attn = Attention(hidden, num_heads, qk_norm=cfg.norm if cfg.qk_norm else None)
        self.norm2 = block_norm(cfg.norm, hidden)
        if cfg.mlp == "swiglu":
            self.mlp = SwiGLU(hidden, swiglu_hidden(hidden, cfg.mlp_ratio))
        else:
            self.mlp = Mlp(hidden, int(hidden * cfg.mlp_ratio))
        self.n_mod = 6 if cfg.adaln == "shift_scale_gate" else 4
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, self.n_mod * hidden))

    def forward(self, x: Tensor, c: Tensor, rope: Tensor | None = None) -> Tensor:  # x (B, T, D), c (B, D)
        if self.tdln:  # c is tau (B,)
            x = x + self.attn(self.norm1(x, c), rope)
            return x + self.mlp(self.norm2(x, c))
        mod = self.adaLN_modulation(c).chunk(self.n_mod, dim=1)  # each (B, D)
        if self.n_mod == 6:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        else:  # LightningDiT's wo_shift
            (scale_msa, gate_msa, scale_mlp, gate_mlp), shift_msa, shift_mlp = mod, None, None
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Norm, (shift, scale) modulation and the linear to patches; LightningDiT keeps the shift here in every case.
    ``tdln``: a TD-LN and the linear (c is then tau)."""

    def __init__(self, hidden: int, patch_size: int, out_channels: int, norm: str = "layernorm", tdln: bool = False):
        super().__init__()
        self.tdln = tdln
        self.norm_final = TDNorm(norm, hidden) if tdln else block_norm(norm, hidden)
        self.linear = nn.Linear(hidden, patch_size * patch_size * out_channels)
        if not tdln:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        if self.tdln:
            return self.linear(self.norm_final(x, c))
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, T, p*p*C)
