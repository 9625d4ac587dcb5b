"""DiT's released checkpoints (facebookresearch/DiT: ``DiT-XL-2-256x256.pt`` and any size) as genlab runs.

The file is a plain state dict of DiT's ``models.DiT`` (EMA weights), read with ``torch.load(weights_only=True)``.
genlab's DiT backbone is the same module, so the mapping is one rename: ``x_embedder.proj`` (timm's PatchEmbed) ->
``x_embedder``; DiT's fixed ``pos_embed`` is dropped after checking that genlab's sin-cos table equals it (another
grid or model is refused). Every other name is DiT's. The heads are not in the weights: DiT's sizes give them
(width 384: 6, 768: 12, 1024 and 1152: 16), ``--num-heads`` for any other width.

The run is DiT under genlab's ``ddpm`` objective (DiT feeds its step index n, genlab t = n / 1000 with
``time_scale`` 1000: the same embedding), on the SD-VAE given with ``--vae`` (a diffusers AutoencoderKL folder,
copied into the run), sampling with the paper's FID setting: 250 DDPM steps, cfg 1.5 on 3 channels.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import load_preset_dict
from genlab.imports.runs import CheckpointError, class_names, load_state_dict, sd_vae_tokenizer, write_generator_run
from genlab.nn import sincos_pos_embed_2d
from genlab.registry import register

DIT_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}  # width -> heads of DiT's S, B, L, XL (paper Table 4)
# the paper's FID-50K setting (DiT README / sample_ddp.py): 250 DDPM steps, cfg 1.5 on the first 3 channels
DIT_SAMPLE = {"sampler": "ddpm", "steps": 250, "spacing": "iddpm", "cfg": 1.5, "guidance_channels": 3}
_DIT_KEY = re.compile(  # DiT's names (and LightningDiT's: RMSNorm scales, QK-norm, SwiGLU)
    r"(t_embedder\.mlp\.[02]|y_embedder\.embedding_table|final_layer\.(linear|adaLN_modulation\.1|norm_final)"
    r"|blocks\.\d+\.(attn\.(qkv|proj|q_norm|k_norm)|mlp\.(fc[12]|w12|w3)|adaLN_modulation\.1|norm[12]))"
    r"\.(weight|bias)"
)


def dit_config(sd: dict[str, Tensor], *, num_heads: int = 0, table: dict | None = None) -> tuple[dict, dict]:
    """(genlab ``dit`` generator config, facts: in_channels, input_size, num_classes, learn_sigma) of a DiT
    state dict."""
    if "x_embedder.proj.weight" not in sd or "final_layer.linear.weight" not in sd:
        raise CheckpointError("not a DiT checkpoint: it has no 'x_embedder.proj.weight' / 'final_layer.linear'")
    w = sd["x_embedder.proj.weight"]  # (D, C, p, p)
    hidden, in_channels, patch = w.shape[0], w.shape[1], w.shape[-1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    heads = num_heads or (table or DIT_HEADS).get(hidden, 0)
    if not heads or hidden % heads:
        raise CheckpointError(f"DiT width {hidden} is not one of DiT's sizes: give its heads with --num-heads")
    out_channels = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    if out_channels not in (in_channels, 2 * in_channels):
        raise CheckpointError(f"this DiT outputs {out_channels} channels for {in_channels} in (expected C or 2 C)")
    tokens = sd["pos_embed"].shape[1] if "pos_embed" in sd else 0
    grid = int(round(tokens**0.5))
    if grid * grid != tokens or tokens == 0:
        raise CheckpointError("not a DiT checkpoint: its pos_embed is not a square grid")
    cfg = {"name": "dit", "depth": depth, "hidden_size": hidden, "num_heads": heads, "patch_size": patch}
    if "blocks.0.mlp.fc1.weight" in sd:
        cfg["mlp_ratio"] = sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden
    facts = {"in_channels": in_channels, "input_size": grid * patch, "learn_sigma": out_channels == 2 * in_channels,
             "num_classes": sd["y_embedder.embedding_table.weight"].shape[0] - 1}  # fmt: skip
    return cfg, facts


def convert_dit(sd: dict[str, Tensor], *, num_heads: int = 0, table: dict | None = None) -> tuple[dict, dict, dict]:
    """(genlab dit config, facts, genlab state dict) of a DiT state dict (``table``: width -> heads of the family's
    sizes, DiT's by default); CheckpointError for anything else."""
    cfg, facts = dit_config(sd, num_heads=num_heads, table=table)
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k == "pos_embed":
            continue
        if k in ("x_embedder.proj.weight", "x_embedder.proj.bias"):
            out[k.replace(".proj", "")] = v
        elif _DIT_KEY.fullmatch(k):
            out[k] = v
        else:
            raise CheckpointError(f"not a DiT checkpoint: unexpected tensor {k!r}")
    pos = sd["pos_embed"]
    if pos.device.type != "meta":
        own = sincos_pos_embed_2d(cfg["hidden_size"], facts["input_size"] // cfg["patch_size"]).unsqueeze(0)
        if pos.shape != own.shape or (pos.float() - own).abs().max() > 1e-5:
            raise CheckpointError("this DiT's pos_embed is not DiT's sin-cos table for its grid")
    return cfg, facts, out


def import_dit(path: Path | str, out: Path | str, *, vae: str | None, num_heads: int = 0,
               names_file: str | None = None) -> Path:  # fmt: skip
    """Write the genlab run of DiT checkpoint ``path`` (on the SD-VAE folder ``vae``) to ``out``."""
    cfg, facts, state = convert_dit(load_state_dict(path), num_heads=num_heads)
    if not vae:
        raise CheckpointError("DiT samples SD-VAE latents: give the VAE folder with --vae (e.g. sd-vae-ft-ema)")
    tok, tok_state, factor = sd_vae_tokenizer(vae)
    if tok["vae_config"]["latent_channels"] != facts["in_channels"]:
        raise CheckpointError(f"the VAE makes {tok['vae_config']['latent_channels']} channels, DiT takes "
                              f"{facts['in_channels']}")  # fmt: skip
    config = load_preset_dict("imagenet256/_dit")
    config["data"]["resolution"] = facts["input_size"] * factor
    config["preset"] = f"imported from {Path(path).name}"
    config["sample"] = {**config.get("sample", {}), **DIT_SAMPLE}
    objective = {"name": "ddpm", "learn_sigma": facts["learn_sigma"]}
    names = class_names(facts["num_classes"], names_file)
    return write_generator_run(Path(out), config, cfg, objective, state, tok, tok_state, names)


@register("importer", "dit")
class DiTImporter:
    help = "DiT-XL/2-256 and other DiT checkpoints (the .pt released by facebookresearch/DiT)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--vae", help="its SD-VAE: a diffusers AutoencoderKL folder (copied into the run)")
        parser.add_argument("--num-heads", type=int, default=0, help="heads, for a width not among DiT's sizes")
        parser.add_argument("--class-names", help="a text file, one class name per line (default: ImageNet's)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_dit(path, out, vae=args.vae, num_heads=args.num_heads, names_file=args.class_names)


def paper_state_dict(depth: int, hidden: int, patch: int, *, in_channels: int = 4, input_size: int = 32,
                     num_classes: int = 1000, learn_sigma: bool = True) -> dict[str, Tensor]:  # fmt: skip
    """The names and shapes of a DiT checkpoint as DiT's ``models.DiT`` saves it, on the meta device (counting
    a paper size through the import path without its weights)."""
    from genlab.generators.dit import DiT, latent_spec

    cfg = DiT.Config(depth=depth, hidden_size=hidden, num_heads=DIT_HEADS[hidden], patch_size=patch,
                     learn_sigma=learn_sigma)  # fmt: skip
    with torch.device("meta"):
        own = DiT(cfg, spec=latent_spec(in_channels, input_size), num_classes=num_classes).state_dict()
        sd = {k.replace("x_embedder.", "x_embedder.proj."): v for k, v in own.items()}
        sd["pos_embed"] = torch.empty(1, (input_size // patch) ** 2, hidden)
    return sd
