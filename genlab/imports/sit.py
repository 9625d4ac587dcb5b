"""SiT's and LightningDiT's released checkpoints (willisma/SiT ``SiT-XL-2-256x256.pt``; hustvl/LightningDiT
``lightningdit-xl-imgnet-64ep.pt`` / ``-800ep``) as genlab flow runs.

Both are DiT's module under SiT's transport: linear path x_t = t x1 + (1 - t) x0 with t = 0 noise and t = 1 data,
the network predicting the velocity x1 - x0 from t fed unscaled to the embedder. genlab's time is t' = 1 - t and
its velocity eps - x0 = -(x1 - x0), so the run's backbone config says ``time_scale: 1``, ``time_reversed: true``,
``output_sign: -1`` (converted in ``DiT.forward``, nowhere else). The weights keep DiT's names (``x_embedder.proj``
-> ``x_embedder``; ``pos_embed`` and LightningDiT's RoPE tables ``feat_rope.freqs_*`` are rebuilt by genlab and
checked); a learned-sigma head (SiT-XL/2's 2 C outputs, unused by its ODE sampler) keeps its first C channels.
LightningDiT's switches are read off the weights: SwiGLU (``mlp.w12``), RMSNorm (``norm1.weight``), QK-norm
(``attn.q_norm``), RoPE (``feat_rope``), adaLN without shift (4 D modulation rows).

Sampling defaults, the papers' FID settings: SiT-XL/2 cfg 1.5 on 3 channels, 250 Euler steps (SiT's best FID, 2.06,
is its SDE sampler, which genlab does not have; its ODE result 2.15 used dopri5); LightningDiT 250 Euler steps,
cfg 6.7 on 3 channels (its release's 800-epoch setting; 10.0 for the 64-epoch model), guidance only for SiT time
t >= 0.11 (genlab t <= 0.89), timestep shift 0.3 in its time (genlab's shift 1 / 0.3).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import load_preset_dict
from genlab.imports.dit import DIT_HEADS, convert_dit
from genlab.imports.runs import CheckpointError, class_names, load_state_dict, sd_vae_tokenizer, write_generator_run
from genlab.registry import register

SIT_CONVENTION = {"time_scale": 1.0, "time_reversed": True, "output_sign": -1}
LIGHTNINGDIT_HEADS = {**DIT_HEADS, 1536: 24, 1792: 28}
SIT_SAMPLE = {"sampler": "euler", "steps": 250, "cfg": 1.5, "guidance_channels": 3, "shift": 1.0,
              "cfg_interval": [0.0, 1.0]}  # fmt: skip
LIGHTNINGDIT_SAMPLE = {"sampler": "euler", "steps": 250, "cfg": 6.7, "guidance_channels": 3, "shift": 1 / 0.3,
                       "cfg_interval": [0.0, 0.89]}  # fmt: skip


def convert_sit(sd: dict[str, Tensor], *, num_heads: int = 0, lightning: bool = False) -> tuple[dict, dict, dict]:
    """(genlab dit config with SiT's time convention, facts, state dict) of a SiT or LightningDiT state dict."""
    sd = dict(sd)
    switches, heads = {}, num_heads
    if lightning:
        switches, heads, sd = _lightning_switches(sd, num_heads)
    if "blocks.0.mlp.w12.weight" in sd and not lightning:
        raise CheckpointError("this is a LightningDiT checkpoint (SwiGLU): use `genlab import lightningdit`")
    cfg, facts, state = convert_dit(_as_dit(sd), num_heads=heads, table=LIGHTNINGDIT_HEADS if lightning else None)
    cfg.update(switches)
    cfg.update(SIT_CONVENTION)
    C, p = facts["in_channels"], cfg["patch_size"]
    if facts.pop("learn_sigma"):  # keep the velocity's C channels of the (p, p, 2C) output rows
        for part in ("weight", "bias"):
            t = state[f"final_layer.linear.{part}"]
            state[f"final_layer.linear.{part}"] = t.view(p * p, 2 * C, *t.shape[1:])[:, :C].reshape(-1, *t.shape[1:])
    return cfg, facts, state


def _as_dit(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state dict with LightningDiT's extra tensors set aside, so DiT's name check sees DiT's names."""
    return {k: v for k, v in sd.items() if not k.startswith("feat_rope.")}


def _lightning_switches(sd: dict[str, Tensor], num_heads: int) -> tuple[dict, int, dict]:
    D = sd["x_embedder.proj.weight"].shape[0] if "x_embedder.proj.weight" in sd else 0
    if not D or "blocks.0.adaLN_modulation.1.weight" not in sd:
        raise CheckpointError("not a LightningDiT checkpoint: no 'x_embedder.proj.weight' / adaLN modulation")
    rows = sd["blocks.0.adaLN_modulation.1.weight"].shape[0] // D
    switches = {
        "mlp": "swiglu" if "blocks.0.mlp.w12.weight" in sd else "gelu",
        "norm": "rmsnorm" if "blocks.0.norm1.weight" in sd else "layernorm",
        "qk_norm": "blocks.0.attn.q_norm.weight" in sd,
        "rope": "feat_rope.freqs_cos" in sd,
        "adaln": "scale_gate" if rows == 4 else "shift_scale_gate",
    }
    if switches["qk_norm"] and not num_heads:
        num_heads = D // sd["blocks.0.attn.q_norm.weight"].shape[0]
    if switches["rope"] and not num_heads:
        num_heads = D // (2 * sd["feat_rope.freqs_cos"].shape[-1])  # its table spans half a head (rows or columns)
    if switches["mlp"] == "swiglu":
        hidden = sd["blocks.0.mlp.w3.weight"].shape[1]
        switches["mlp_ratio"] = next((r for r in (4.0, 8 / 3, 2.0) if int(2 / 3 * int(D * r)) == hidden), 4.0)
    return switches, num_heads, sd


def import_sit(kind: str, path: Path | str, out: Path | str, *, vae: str | None, num_heads: int = 0,
               names_file: str | None = None) -> Path:  # fmt: skip
    """Write the genlab run of a SiT (``kind`` "sit") or LightningDiT ("lightningdit") checkpoint to ``out``;
    ``vae``: an SD-VAE folder (diffusers AutoencoderKL) or a genlab tokenizer run (a VA-VAE import)."""
    lightning = kind == "lightningdit"
    cfg, facts, state = convert_sit(load_state_dict(path), num_heads=num_heads, lightning=lightning)
    if not vae:
        raise CheckpointError(f"{kind} samples VAE latents: give its VAE with --vae (a diffusers folder or a run)")
    tok, tok_state, factor = _tokenizer(Path(vae))
    config = load_preset_dict("imagenet256/_dit")
    config["data"]["resolution"] = facts["input_size"] * factor
    config["preset"] = f"imported from {Path(path).name}"
    config["sample"] = {**config.get("sample", {}), **(LIGHTNINGDIT_SAMPLE if lightning else SIT_SAMPLE)}
    objective = {"name": "flow", "time_sampling": "logit_normal" if lightning else "uniform",
                 "cosine_weight": 1.0 if lightning else 0.0, "class_dropout": 0.1}  # fmt: skip
    names = class_names(facts["num_classes"], names_file)
    return write_generator_run(Path(out), config, cfg, objective, state, tok, tok_state, names)


def _tokenizer(vae: Path) -> tuple[dict, dict[str, Tensor], int]:
    """An SD-VAE folder, or a genlab run / tokenizer folder with a continuous tokenizer."""
    folder = vae / "tokenizer" if (vae / "tokenizer" / "config.json").is_file() else vae
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        from safetensors.torch import load_file

        cfg = json.loads((folder / "config.json").read_text())
        with torch.device("meta"):
            from genlab.config import component_from_dict

            tok = component_from_dict("tokenizer", cfg, "tokenizer").build(resolution=256)
        factor = 256 // tok.token_spec.grid[0]
        return cfg, load_file(str(folder / "model.safetensors")), factor
    return sd_vae_tokenizer(vae)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", help="its VAE: a diffusers AutoencoderKL folder, or a genlab tokenizer run (va-vae)")
    parser.add_argument("--num-heads", type=int, default=0, help="heads, when the weights do not say")
    parser.add_argument("--class-names", help="a text file, one class name per line (default: ImageNet's)")


@register("importer", "sit")
class SiTImporter:
    help = "SiT-XL/2 and other SiT checkpoints (willisma/SiT's .pt) as flow runs"
    add_arguments = staticmethod(_arguments)

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_sit("sit", path, out, vae=args.vae, num_heads=args.num_heads, names_file=args.class_names)


@register("importer", "lightningdit")
class LightningDiTImporter:
    help = "LightningDiT-XL/1 and other LightningDiT checkpoints (hustvl/LightningDiT's .pt) on their VA-VAE"
    add_arguments = staticmethod(_arguments)

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_sit("lightningdit", path, out, vae=args.vae, num_heads=args.num_heads,
                          names_file=args.class_names)  # fmt: skip
