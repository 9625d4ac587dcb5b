"""FlexVAR's released checkpoints (jiaosiyu1999/FlexVAR: ``FlexVARd16-epo179.pth``, d20, d24, ... and its tokenizer
``FlexVAE.pth``) as a genlab ``flexvar`` run on a ``flexvq`` tokenizer.

The transformer is VAR's (``models/basic_var.py`` unchanged), so the mapping is VAR's (``genlab.imports.var``) with
two differences: no level embedding, and ``pos_1LC`` is one learned (1, C, 32, 32) grid area-downsampled to each side
(genlab's ``pos_embed`` with ``pos_grid: 32``). Heads: from the l2-norm scales (FlexVAR's releases), else depth.
The file holds a state dict or ``{"trainer": {"var_wo_ddp": ...}}``; ``attn_bias_for_masking`` is rebuilt.

The tokenizer ``--vae``: ``FlexVAE.pth`` (``{"model": ...}``, LlamaGen's VQ-16 with 4096 l2-normalised codes of 32
channels; the LlamaGen mapping, ``genlab.imports.llamagen``) or a genlab ``flexvq`` run. Its token maps at FlexVAR's
training sides ``--scales`` (default 1,2,3,4,5,6,8,10,13,16).

The run samples as FlexVAR's ``eval_c2i.py``: cfg 2.5 (genlab's 3.5: 1 + FlexVAR's t), top_k 900, top_p 0.95, the
guidance ramp si / min(K - 1, 9), full guidance and greedy tokens above side 16 (``max_pn``), and greedy tokens at
every side outside (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 24, 32): ``sample:`` holds them as FlexVAR's options
(``ramp_steps``, ``max_side``, ``sampled_sides``, genlab.generators.flexvar).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import component_from_dict, load_preset_dict
from genlab.imports.checks import CheckpointError, check_tokens_fit, converting, finite, read_component
from genlab.imports.checks import tensor as need
from genlab.imports.llamagen import convert_llamagen_vq, load_checkpoint
from genlab.imports.runs import class_names, fill_and_check, write_generator_run
from genlab.imports.var import _scales, load_state_dict, rename_var_keys, var_config
from genlab.registry import register

FLEXVAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
FLEXVAR_SAMPLED = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 23, 24, 32)  # autoregressive_infer_cfg's list
FLEXVAR_SAMPLE = {"cfg": 3.5, "top_k": 900, "top_p": 0.95, "temperature": 1.0, "scales": [], "ramp_steps": 9,
                  "max_side": 16, "sampled_sides": list(FLEXVAR_SAMPLED)}  # fmt: skip


def convert_flexvar(sd: dict[str, Tensor], *, num_heads: int = 0) -> tuple[dict, dict[str, Tensor], int]:
    """(genlab flexvar config, its state dict, num_classes) of a FlexVAR state dict."""
    if "lvl_embed.weight" in sd:
        raise CheckpointError("this is a VAR checkpoint (it has a level embedding): use `genlab import var`")
    grid = need(sd, "pos_1LC", "FlexVAR", ndim=4)  # (1, C, G, G)
    if grid.shape[0] != 1 or grid.shape[2] != grid.shape[3]:
        raise CheckpointError(f"not a FlexVAR checkpoint: pos_1LC is {tuple(grid.shape)}, not (1, C, G, G)")
    cfg = {**var_config(sd, num_heads=num_heads), "name": "flexvar", "pos_grid": grid.shape[-1]}
    out = rename_var_keys(sd, "FlexVAR")
    need(sd, "head.weight", "FlexVAR", ndim=2)
    need(sd, "word_embed.weight", "FlexVAR", ndim=2)
    return cfg, out, sd["class_emb.weight"].shape[0] - 1


def flexvae_tokenizer(vae: Path, scales: tuple[int, ...]) -> tuple[dict, dict[str, Tensor]]:
    """(flexvq config, state dict) of ``FlexVAE.pth`` (LlamaGen's VQ layout) or of a genlab flexvq run."""
    folder = vae / "tokenizer" if (vae / "tokenizer" / "config.json").is_file() else vae
    if folder.is_dir():
        cfg, state = read_component(folder)
        if cfg.get("name") != "flexvq":
            raise CheckpointError(f"{vae}: a {cfg.get('name')!r} tokenizer run; FlexVAR samples flexvq tokens")
        return cfg, state
    with converting("FlexVAE (LlamaGen VQ)", vae):
        cfg, state = convert_llamagen_vq(load_checkpoint(vae))
        finite(state, str(vae))
    return {**cfg, "name": "flexvq", "scales": list(scales)}, state


def import_flexvar(path: Path | str, out: Path | str, *, vae: str | None, scales=FLEXVAR_SCALES, num_heads: int = 0,
                   names_file: str | None = None) -> Path:  # fmt: skip
    """Write the genlab run of a FlexVAR checkpoint on its tokenizer ``vae`` to ``out``."""
    if not vae:
        raise CheckpointError("FlexVAR samples its VQ's tokens: give FlexVAE.pth (or its flexvq run) with --vae")
    with converting("FlexVAR", path):
        sd = load_state_dict(path)
        cfg, state, num_classes = convert_flexvar(sd, num_heads=num_heads)
        finite(state, str(path))
    tok, tok_state = flexvae_tokenizer(Path(vae), tuple(scales))
    tok_comp = component_from_dict("tokenizer", tok, "tokenizer")
    factor = tok_comp.cfg.net.factor
    with torch.device("meta"):
        spec = tok_comp.build(resolution=factor * tok_comp.cfg.scales[-1]).token_spec
    from genlab.generators.var import var_spec

    trained_on = var_spec(spec.scales, vocab_size=sd["head.weight"].shape[0], code_dim=sd["word_embed.weight"].shape[1])
    check_tokens_fit(trained_on, spec, f"the FlexVAR in {path}")  # before anything is written
    tok_state = fill_and_check(tok_comp.build(resolution=factor * spec.scales[-1]), tok_state, "FlexVAE",
                               ("cluster_size", "num_updates", "reseeded", "embed_sum"))  # fmt: skip
    config = load_preset_dict("imagenet256/_var")
    config["data"]["resolution"] = factor * spec.scales[-1]
    config["generator"] = {**config["generator"], **cfg}
    config["preset"] = f"imported from {Path(path).name}"
    config["sample"] = {**config.get("sample", {}), **FLEXVAR_SAMPLE}
    names = class_names(num_classes, names_file)
    return write_generator_run(Path(out), config, config["generator"], None, state, tok, tok_state, names)


@register("importer", "flexvar")
class FlexVARImporter:
    help = "FlexVAR's transformers (FlexVARd16-epo179.pth, ...) on their VQ (--vae FlexVAE.pth) as a flexvar run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--vae", help="its tokenizer: FlexVAE.pth, or a genlab flexvq run")
        parser.add_argument("--scales", type=_scales, default=FLEXVAR_SCALES,
                            help="the token-map sides it was trained on (default 1,2,3,4,5,6,8,10,13,16)")  # fmt: skip
        parser.add_argument("--num-heads", type=int, default=0, help="heads, when the weights do not say")
        parser.add_argument("--class-names", help="a text file, one class name per line (default: ImageNet's)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_flexvar(path, out, vae=args.vae, scales=args.scales, num_heads=args.num_heads,
                              names_file=args.class_names)  # fmt: skip
