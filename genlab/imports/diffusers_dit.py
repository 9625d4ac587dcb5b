"""DiT runs and diffusers' DiT folders, both ways: ``genlab export diffusers`` and ``genlab import diffusers-dit``.

A DiT run (``dit`` backbone with DiT's switches, ``ddpm`` objective) maps onto diffusers'
``DiTTransformer2DModel`` name by name:

- ``x_embedder`` -> ``pos_embed.proj`` (the sin-cos table is rebuilt by both sides);
- ``t_embedder.mlp.{0,2}`` -> ``norm1.emb.timestep_embedder.linear_{1,2}`` and ``y_embedder`` ->
  ``norm1.emb.class_embedder`` of every block: diffusers keeps one copy of the embedders per block (so the
  diffusers model has (depth - 1) copies more parameters); the import refuses blocks whose copies differ;
- ``blocks.i.adaLN_modulation.1`` -> ``transformer_blocks.i.norm1.linear``; ``attn.qkv`` -> ``attn1.to_q/k/v``
  (split in three); ``attn.proj`` -> ``attn1.to_out.0``; ``mlp.fc1/fc2`` -> ``ff.net.0.proj`` / ``ff.net.2``;
- ``final_layer.adaLN_modulation.1`` / ``final_layer.linear`` -> ``proj_out_1`` / ``proj_out_2``.

Time: diffusers embeds the step with ``downscale_freq_shift=1`` (frequencies exp(-ln(1e4) i / 127)), DiT's code
with 0 (/ 128): the same weights compute a slightly different model. An imported diffusers folder therefore gets
``time_freq_shift: 1`` (the run computes what diffusers computes); an exported run records its own value in
``DIR/genlab.json``, which the import reads back, so genlab -> diffusers -> genlab is bitwise; ``DiTPipeline``
equals genlab's sampling for a run with ``time_freq_shift: 1``, and the export says so for one without.
The folder's scheduler is diffusers' ``DDIMScheduler`` on DiT's schedule (1000 linear betas 1e-4 .. 0.02).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import load_preset_dict
from genlab.imports.runs import CheckpointError, check_out, class_names, sd_vae_tokenizer, write_generator_run
from genlab.registry import register

# DiT switches diffusers' DiTTransformer2DModel implements; anything else cannot be exported
PLAIN_DIT = {"mlp": "gelu", "norm": "layernorm", "rope": False, "qk_norm": False, "adaln": "shift_scale_gate",
             "mlp_ratio": 4.0, "time_scale": 1000.0, "time_reversed": False, "output_sign": 1}  # fmt: skip
SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
             "beta_schedule": "linear", "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
             "prediction_type": "epsilon"}  # fmt: skip
_EMB = "norm1.emb."


def to_diffusers(state: dict[str, Tensor], cfg: dict, *, in_channels: int, input_size: int,
                 num_classes: int) -> tuple[dict, dict[str, Tensor]]:  # fmt: skip
    """(DiTTransformer2DModel config, its state dict) of a genlab DiT backbone's config and state dict."""
    bad = {k: cfg.get(k) for k, v in PLAIN_DIT.items() if cfg.get(k, v) != v}
    if bad:
        raise CheckpointError(f"diffusers' DiT has no {', '.join(f'{k}={v}' for k, v in bad.items())}: only plain DiT "
                              "runs export")  # fmt: skip
    D, heads = cfg["hidden_size"], cfg["num_heads"]
    out_channels = state["final_layer.linear.weight"].shape[0] // cfg["patch_size"] ** 2
    config = {"num_attention_heads": heads, "attention_head_dim": D // heads, "in_channels": in_channels,
              "out_channels": out_channels, "num_layers": cfg["depth"], "sample_size": input_size,
              "patch_size": cfg["patch_size"], "activation_fn": "gelu-approximate", "num_embeds_ada_norm": num_classes,
              "norm_type": "ada_norm_zero", "norm_elementwise_affine": False, "norm_eps": 1e-6,
              "attention_bias": True, "dropout": 0.0}  # fmt: skip
    out = {f"pos_embed.proj.{p}": state[f"x_embedder.{p}"] for p in ("weight", "bias")}
    out.update({f"proj_out_1.{p}": state[f"final_layer.adaLN_modulation.1.{p}"] for p in ("weight", "bias")})
    out.update({f"proj_out_2.{p}": state[f"final_layer.linear.{p}"] for p in ("weight", "bias")})
    for i in range(cfg["depth"]):
        b, g = f"transformer_blocks.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            out[b + _EMB + f"timestep_embedder.linear_1.{p}"] = state[f"t_embedder.mlp.0.{p}"]
            out[b + _EMB + f"timestep_embedder.linear_2.{p}"] = state[f"t_embedder.mlp.2.{p}"]
            out[b + f"norm1.linear.{p}"] = state[g + f"adaLN_modulation.1.{p}"]
            for name, t in zip(("to_q", "to_k", "to_v"), state[g + f"attn.qkv.{p}"].chunk(3, dim=0)):
                out[b + f"attn1.{name}.{p}"] = t.clone()
            out[b + f"attn1.to_out.0.{p}"] = state[g + f"attn.proj.{p}"]
            out[b + f"ff.net.0.proj.{p}"] = state[g + f"mlp.fc1.{p}"]
            out[b + f"ff.net.2.{p}"] = state[g + f"mlp.fc2.{p}"]
        out[b + _EMB + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
    return config, {k: v.contiguous() for k, v in out.items()}


def from_diffusers(config: dict, sd: dict[str, Tensor]) -> tuple[dict, dict, dict[str, Tensor]]:
    """(genlab dit config, facts, genlab state dict) of a DiTTransformer2DModel's config and state dict."""
    if config.get("norm_type") != "ada_norm_zero" or "pos_embed.proj.weight" not in sd:
        raise CheckpointError("not a diffusers DiT: its transformer is not a DiTTransformer2DModel (ada_norm_zero)")
    depth, heads = config["num_layers"], config["num_attention_heads"]
    D = heads * config["attention_head_dim"]
    cfg = {"name": "dit", "depth": depth, "hidden_size": D, "num_heads": heads, "patch_size": config["patch_size"]}
    get = _getter(sd)
    state = {f"x_embedder.{p}": get(f"pos_embed.proj.{p}") for p in ("weight", "bias")}
    state.update({f"final_layer.adaLN_modulation.1.{p}": get(f"proj_out_1.{p}") for p in ("weight", "bias")})
    state.update({f"final_layer.linear.{p}": get(f"proj_out_2.{p}") for p in ("weight", "bias")})
    first = "transformer_blocks.0." + _EMB
    for p in ("weight", "bias"):
        state[f"t_embedder.mlp.0.{p}"] = get(first + f"timestep_embedder.linear_1.{p}")
        state[f"t_embedder.mlp.2.{p}"] = get(first + f"timestep_embedder.linear_2.{p}")
    state["y_embedder.embedding_table.weight"] = get(first + "class_embedder.embedding_table.weight")
    for i in range(depth):
        b, g = f"transformer_blocks.{i}.", f"blocks.{i}."
        for k in [k for k in sd if k.startswith(b + _EMB)]:
            if not torch.equal(sd[k], sd[first + k[len(b + _EMB) :]]):
                raise CheckpointError(f"{k} differs from block 0's: genlab's DiT shares one time/class embedder")
        for p in ("weight", "bias"):
            state[g + f"adaLN_modulation.1.{p}"] = get(b + f"norm1.linear.{p}")
            state[g + f"attn.qkv.{p}"] = torch.cat([get(b + f"attn1.{n}.{p}") for n in ("to_q", "to_k", "to_v")])
            state[g + f"attn.proj.{p}"] = get(b + f"attn1.to_out.0.{p}")
            state[g + f"mlp.fc1.{p}"] = get(b + f"ff.net.0.proj.{p}")
            state[g + f"mlp.fc2.{p}"] = get(b + f"ff.net.2.{p}")
    known = re.compile(r"(pos_embed\.proj|proj_out_[12]|transformer_blocks\.\d+\.(norm1|attn1|ff)\..*)\.(weight|bias)")
    stray = [k for k in sd if not known.fullmatch(k)]
    if stray:
        raise CheckpointError(f"not a diffusers DiT: unexpected tensor {stray[0]!r}")
    C = config["in_channels"]
    facts = {"in_channels": C, "input_size": config["sample_size"], "num_classes": config["num_embeds_ada_norm"],
             "learn_sigma": config.get("out_channels") == 2 * C}  # fmt: skip
    return cfg, facts, state


def _getter(sd: dict[str, Tensor]):
    def get(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(f"not a diffusers DiT: it has no {key!r}")
        return sd[key]

    return get


def read_transformer(folder: Path) -> tuple[dict, dict[str, Tensor]]:
    """(config.json, tensors) of ``folder/transformer``: safetensors only (no pickles from a folder)."""
    from safetensors.torch import load_file

    t = folder / "transformer"
    files = sorted(t.glob("*.safetensors"))
    if not (t / "config.json").is_file() or not files:
        raise CheckpointError(f"{folder}: not a diffusers DiT folder (no transformer/config.json + .safetensors)")
    try:
        config = json.loads((t / "config.json").read_text())
        sd: dict[str, Tensor] = {}
        for f in files:
            sd.update(load_file(str(f)))
    except Exception as e:  # noqa: BLE001  (malformed JSON or safetensors: one line)
        raise CheckpointError(f"{t}: unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    if not isinstance(config, dict) or config.get("_class_name") not in ("DiTTransformer2DModel", "Transformer2DModel"):
        raise CheckpointError(f"{t}/config.json is not a DiTTransformer2DModel's")
    return config, sd


def import_diffusers_dit(folder: Path | str, out: Path | str, *, names_file: str | None = None) -> Path:
    """The genlab run of a diffusers DiT folder (transformer/, scheduler/, vae/)."""
    folder = Path(folder)
    check_out(out)
    config_t, sd = read_transformer(folder)
    cfg, facts, state = from_diffusers(config_t, sd)
    side = folder / "genlab.json"  # written by genlab export: the run's own time embedding
    extra = json.loads(side.read_text()) if side.is_file() else {}
    cfg["time_freq_shift"] = float(extra.get("time_freq_shift", 1.0))
    if not (folder / "vae" / "config.json").is_file():
        raise CheckpointError(f"{folder} has no vae/: genlab's diffusers-dit import needs the VAE the DiT samples")
    tok, tok_state, factor = sd_vae_tokenizer(folder / "vae")
    config = load_preset_dict("imagenet256/_dit")
    config["data"]["resolution"] = facts["input_size"] * factor
    config["preset"] = f"imported from {folder.name} (diffusers)"
    config["sample"] = {**config.get("sample", {}), **extra.get("sample", {"sampler": "ddim", "steps": 50,
                                                                           "spacing": "leading"})}  # fmt: skip
    objective = {"name": "ddpm", "learn_sigma": facts["learn_sigma"]}
    names = extra.get("class_names") or class_names(facts["num_classes"], names_file)
    return write_generator_run(Path(out), config, cfg, objective, state, tok, tok_state, names)


@register("importer", "diffusers-dit")
class DiffusersDiTImporter:
    help = "a diffusers DiT folder (DiTPipeline: transformer/, scheduler/, vae/), e.g. genlab export diffusers's"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--class-names", help="a text file, one class name per line (default: ImageNet's)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_diffusers_dit(path, out, names_file=args.class_names)
