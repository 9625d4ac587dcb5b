"""MaskGIT's VQGAN as released in PyTorch (open-muse's port of the JAX original, copied into bytedance/1d-tokenizer
``modeling/modules/maskgit_vqgan.py``; the weights ``maskgit-vqgan-imagenet-f16-256.bin`` on the HF hub
``fun-research/TiTok``, which TiTok's ``PretrainedTokenizer`` loads) as a genlab ``vqgan`` tokenizer run.

genlab's conv net computes what the port computes with three switches the run config sets: ``conv_bias: false`` (no
bias in the res blocks' convs and the encoder's conv_in), ``shortcut: output`` (a width-changing res block returns
h + W h, its 1x1 conv applied to the block's output: the port's ``residual = self.nin_shortcut(hidden_states)``),
and the tokenizer's ``unit_range: true`` (the port takes and returns images in [0, 1]; the run takes and returns
genlab's [-1, 1]). Average-pool downsampling, no attention, ``num_res_blocks`` blocks per level in both halves,
a 1x1 encoder output conv, no quant convs; the codebook (1024 x 256) is looked up by Euclidean distance (no l2).

The mapping (the port's name -> genlab's): ``{encoder,decoder}.conv_in / norm_out / conv_out`` and ``*.mid.{j}`` as
they are; ``encoder.down.{i}.block.{j}`` -> ``encoder.down.{i}.blocks.{j}``; ``decoder.up.{i}.block.{j}`` (indexed by
level) -> ``decoder.up.{L-1-i}.blocks.{j}`` (genlab's in decoding order), ``decoder.up.{i}.upsample_conv`` ->
``decoder.up.{L-1-i}.upsample.conv``; ``quantize.embedding.weight`` -> ``quantizer.codebook``. The file is a plain
state dict (``torch.load(weights_only=True)``) or a ``.safetensors``. aMUSEd's VQGAN is a diffusers ``VQModel``
(another layout): not this importer.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from torch import Tensor

from genlab.config import component_from_dict, load_preset_dict, to_dict
from genlab.imports.checks import CheckpointError, converting, finite
from genlab.imports.checks import tensor as need
from genlab.imports.runs import fill_and_check, write_tokenizer_run
from genlab.imports.titok import read_weights
from genlab.registry import register

WHAT = "MaskGIT-VQGAN"
_SAME = re.compile(r"(encoder|decoder)\.(conv_in|norm_out|conv_out|mid\.\d+\.\w+)\.(weight|bias)")
_DOWN = re.compile(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)")
_UP = re.compile(r"decoder\.up\.(\d+)\.(?:block\.(\d+)\.(.+)|upsample_conv\.(weight|bias))")


def _count(sd: dict[str, Tensor], pattern: str) -> int:
    found = [int(m.group(1)) for k in sd if (m := re.match(pattern, k))]
    if not found:
        raise CheckpointError(f"not a {WHAT} checkpoint: no tensor matches {pattern!r}")
    return 1 + max(found)


def maskgit_vqgan_config(sd: dict[str, Tensor]) -> dict:
    """genlab's ``vqgan`` config of the port's state dict (widths, levels, blocks, channels, codebook)."""
    ch = need(sd, "encoder.conv_in.weight", WHAT, ndim=4).shape[0]
    if "encoder.conv_in.bias" in sd or "encoder.down.0.block.0.conv1.bias" in sd:
        raise CheckpointError(f"not a {WHAT} checkpoint: its res-block convs have biases (a taming/LlamaGen VQGAN?)")
    levels = _count(sd, r"encoder\.down\.(\d+)\.")
    widths = [need(sd, f"encoder.down.{i}.block.0.conv1.weight", WHAT, ndim=4).shape[0] for i in range(levels)]
    if any(w % ch for w in widths):
        raise CheckpointError(f"not a {WHAT} checkpoint: its widths {widths} are not multiples of conv_in's {ch}")
    blocks, mid = _count(sd, r"encoder\.down\.0\.block\.(\d+)\."), _count(sd, r"encoder\.mid\.(\d+)\.")
    if mid != 2:
        raise CheckpointError(f"this {WHAT} has {mid} middle res blocks; genlab's conv net has 2")
    conv_out = need(sd, "encoder.conv_out.weight", WHAT, ndim=4)
    codebook = need(sd, "quantize.embedding.weight", WHAT, ndim=2)
    if codebook.shape[1] != conv_out.shape[0]:
        raise CheckpointError(
            f"not a {WHAT} checkpoint: codes of {codebook.shape[1]} channels, latent {conv_out.shape[0]}"
        )
    net = {"ch": ch, "ch_mult": [w // ch for w in widths], "num_res_blocks": blocks,
           "decoder_res_blocks": _count(sd, r"decoder\.up\.0\.block\.(\d+)\."), "attn_levels": [], "mid_attn": False,
           "downsample": "avgpool", "encoder_out_kernel": conv_out.shape[-1], "z_channels": conv_out.shape[0],
           "norm_groups": 32, "conv_bias": False, "shortcut": "output"}  # fmt: skip
    return {"name": "vqgan", "net": net, "embed_dim": conv_out.shape[0], "quant_conv_kernel": 0, "unit_range": True,
            "quantizer": {"name": "vq", "codebook_size": codebook.shape[0], "l2_norm": False, "beta": 0.25}}  # fmt: skip


def decoder_config(sd: dict[str, Tensor]) -> dict:
    """genlab's ``vqgan`` config of the port's decoder and codebook alone (``decoder.*``, ``quantize.*``: TiTok's
    ``pixel_decoder`` / ``pixel_quantize``), as a decoding proxy: the widths from the up levels (the first is the
    base width, as in MaskGIT's (1, 1, 2, 2, 4)); the encoder fields mirror the decoder's (it is never built from)."""
    levels = _count(sd, r"decoder\.up\.(\d+)\.")
    widths = [need(sd, f"decoder.up.{i}.block.0.conv2.weight", WHAT, ndim=4).shape[0] for i in range(levels)]
    if any(w % widths[0] for w in widths) or _count(sd, r"decoder\.mid\.(\d+)\.") != 2:
        raise CheckpointError(f"not a {WHAT} decoder: widths {widths} (multiples of the first) and 2 middle blocks")
    codebook = need(sd, "quantize.embedding.weight", WHAT, ndim=2)
    z = need(sd, "decoder.conv_in.weight", WHAT, ndim=4).shape[1]
    if codebook.shape[1] != z:
        raise CheckpointError(f"not a {WHAT} decoder: codes of {codebook.shape[1]} channels, its input {z}")
    blocks = _count(sd, r"decoder\.up\.0\.block\.(\d+)\.")
    net = {"ch": widths[0], "ch_mult": [w // widths[0] for w in widths], "num_res_blocks": blocks,
           "decoder_res_blocks": blocks, "attn_levels": [], "mid_attn": False, "downsample": "avgpool",
           "encoder_out_kernel": 1, "z_channels": z, "norm_groups": 32, "conv_bias": False, "shortcut": "output"}  # fmt: skip
    return {"name": "vqgan", "net": net, "embed_dim": z, "quant_conv_kernel": 0, "unit_range": True,
            "quantizer": {"name": "vq", "codebook_size": codebook.shape[0], "l2_norm": False, "beta": 0.25}}  # fmt: skip


def rename_maskgit_vqgan(sd: dict[str, Tensor], levels: int) -> dict[str, Tensor]:
    """The port's names -> genlab's (module docstring), for the whole model or its decoder and codebook alone."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if _SAME.fullmatch(k):
            out[k] = v
        elif m := _DOWN.fullmatch(k):
            out[f"encoder.down.{m.group(1)}.blocks.{m.group(2)}.{m.group(3)}"] = v
        elif m := _UP.fullmatch(k):
            stage = levels - 1 - int(m.group(1))
            out[f"decoder.up.{stage}.blocks.{m.group(2)}.{m.group(3)}" if m.group(2) is not None
                else f"decoder.up.{stage}.upsample.conv.{m.group(4)}"] = v  # fmt: skip
        elif k == "quantize.embedding.weight":
            out["quantizer.codebook"] = v
        else:
            raise CheckpointError(f"not a {WHAT} checkpoint: unexpected tensor {k!r}")
    return out


def convert_maskgit_vqgan(sd: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(genlab vqgan config, its state dict) of the port's state dict (``encoder.*``, ``decoder.*``, ``quantize.*``)."""
    cfg = maskgit_vqgan_config(sd)
    return cfg, rename_maskgit_vqgan(sd, len(cfg["net"]["ch_mult"]))


def import_maskgit_vqgan(path: Path | str, out: Path | str, *, resolution: int = 256) -> Path:
    """Write the tokenizer run of a MaskGIT-VQGAN checkpoint to ``out``."""
    with converting(WHAT, path):
        cfg, state = convert_maskgit_vqgan(read_weights(Path(path)))
        finite(state, str(path))
    config = load_preset_dict("imagenet256/maskgit-vqgan")
    cfg = {**cfg, "loss": config["tokenizer"].get("loss", {})}  # the preset's losses, for fine-tuning
    comp = component_from_dict("tokenizer", cfg, "tokenizer")
    state = fill_and_check(comp.build(resolution=resolution), state, WHAT,
                           ("cluster_size", "num_updates", "reseeded", "embed_sum"))  # fmt: skip
    config["tokenizer"], config["data"]["resolution"] = to_dict(comp), resolution
    config["preset"] = f"imported from {Path(path).name}"
    return write_tokenizer_run(Path(out), config, to_dict(comp), state)


@register("importer", "maskgit-vqgan")
class MaskGITVQGANImporter:
    help = "MaskGIT's VQGAN, PyTorch port (maskgit-vqgan-imagenet-f16-256.bin, open-muse / TiTok) as a tokenizer run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--resolution", type=int, default=256, help="the image size the run encodes (256)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_maskgit_vqgan(path, out, resolution=args.resolution)
