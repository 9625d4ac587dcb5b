"""LlamaGen's class-conditional GPTs (FoundationVision/LlamaGen ``c2i_B_256.pt``, ``c2i_L_256.pt``, ...) as genlab
``gpt`` runs, and its VQ tokenizer (``vq_ds16_c2i.pt``) as a ``vqgan`` tokenizer run.

VQ: LlamaGen's taming-style ``encoder.conv_blocks.i.res.j`` / ``.attn.j`` -> genlab's ``encoder.down.i.blocks.n``
(res and attention blocks interleaved in one list), ``.downsample`` / ``.upsample`` keep their names under
``down.i`` / ``up.i`` (both decoders list their stages in decoding order), ``mid.0-2`` as they are,
``quantize.embedding`` -> ``quantizer.codebook`` (l2-normalised lookup, LlamaGen's ``codebook_l2_norm``); GroupNorm
with 32 groups and eps 1e-6 on both sides.

The file holds ``{"model": state_dict}`` (or ``module`` / ``state_dict``), read with ``torch.load(weights_only=True)``.
genlab's GPT keeps LlamaGen's module names (``cls_embedding``, ``tok_embeddings``, ``layers.i.attention.wqkv/wo``,
``attention_norm``, ``ffn_norm``, ``norm``, ``output``) except the SwiGLU's: LlamaGen's ``w1, w3, w2`` (gate, up,
down) are genlab's ``w1, w2, w3``. The heads are not in the weights: LlamaGen's sizes give them (B 768/12, L
1024/16, XL 1280/20, XXL 1536/24, XXXL 2560/40), ``--num-heads`` otherwise. The SwiGLU's rounding multiple is read off
its width. LlamaGen gives the class token an all-zero RoPE row; the run sets ``class_rope: zero`` so it computes
what LlamaGen computes. The tokens' tokenizer is ``--vq``: a genlab tokenizer run with LlamaGen's vocabulary and grid.
Sampling defaults: LlamaGen's ``sample_c2i_ddp.py`` (cfg 1.5, top-k 0, top-p 1, temperature 1).
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import load_preset_dict
from genlab.imports.runs import CheckpointError, class_names, write_generator_run
from genlab.registry import register

LLAMAGEN_HEADS = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2560: 40}
LLAMAGEN_SAMPLE = {"cfg": 1.5, "top_k": 0, "top_p": 1.0, "temperature": 1.0, "cfg_schedule": "constant"}
_KEY = re.compile(r"(cls_embedding\.embedding_table|tok_embeddings|norm|output"
                  r"|layers\.\d+\.(attention\.(wqkv|wo)|feed_forward\.w[123]|attention_norm|ffn_norm))\.weight")  # fmt: skip
_FFN = {"w1": "w1", "w3": "w2", "w2": "w3"}  # LlamaGen's gate, up, down -> genlab's


def load_checkpoint(path: Path | str) -> dict[str, Tensor]:
    """The state dict inside a LlamaGen checkpoint (``model``, ``module`` or ``state_dict``), weights only."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a plain weights file (weights_only refused it)") from None
    except Exception as e:  # noqa: BLE001  (zip/EOF/format errors)
        raise CheckpointError(f"{path}: not a torch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict):
        for key in ("model", "module", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (found {type(obj).__name__})")
    return dict(obj)


def convert_llamagen_gpt(sd: dict[str, Tensor], *, num_heads: int = 0) -> tuple[dict, dict, dict[str, Tensor]]:
    """(genlab gpt config, facts: vocab_size, num_classes, tokens; genlab state dict) of a LlamaGen c2i GPT."""
    from genlab.generators.gpt import ffn_hidden

    if "tok_embeddings.weight" not in sd or "layers.0.attention.wqkv.weight" not in sd:
        raise CheckpointError("not a LlamaGen GPT checkpoint: it has no 'tok_embeddings' / 'layers.0.attention.wqkv'")
    V, D = sd["tok_embeddings.weight"].shape
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k)))
    heads = num_heads or LLAMAGEN_HEADS.get(D, 0)
    if not heads or D % heads:
        raise CheckpointError(f"LlamaGen width {D} is not one of its sizes: give its heads with --num-heads")
    hidden = sd["layers.0.feed_forward.w1.weight"].shape[0]
    multiple = next((m for m in (256, 128, 64, 32, 16, 8, 1) if ffn_hidden(D, m) == hidden), 0)
    if not multiple:
        raise CheckpointError(f"this GPT's feed-forward width {hidden} is not Llama's rounding of 8/3 x {D}")
    if sd["cls_embedding.embedding_table.weight"].shape[0] < 2:
        raise CheckpointError("this GPT has no class table with a null row (LlamaGen c2i with class dropout)")
    out = {}
    for k, v in sd.items():
        if "freqs_cis" in k:
            continue
        if not _KEY.fullmatch(k):
            raise CheckpointError(f"not a LlamaGen c2i GPT checkpoint: unexpected tensor {k!r}")
        m = re.fullmatch(r"(layers\.\d+\.feed_forward\.)(w[123])\.weight", k)
        out[f"{m.group(1)}{_FFN[m.group(2)]}.weight" if m else k] = v
    cfg = {"name": "gpt", "depth": depth, "hidden_size": D, "num_heads": heads, "ffn_multiple_of": multiple,
           "class_rope": "zero", "class_dropout": 0.1}  # fmt: skip
    facts = {"vocab_size": V, "num_classes": sd["cls_embedding.embedding_table.weight"].shape[0] - 1}
    return cfg, facts, out


def vq_config(sd: dict[str, Tensor], *, l2_norm: bool = True) -> dict:
    """genlab's ``vqgan`` config of a LlamaGen VQModel state dict (what the weights do not hold: LlamaGen's values)."""
    if "encoder.conv_in.weight" not in sd or "quantize.embedding.weight" not in sd:
        raise CheckpointError("not a LlamaGen VQ checkpoint: it has no 'encoder.conv_in' / 'quantize.embedding'")
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.conv_blocks\.(\d+)\.", k)))
    blocks = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.conv_blocks\.0\.res\.(\d+)\.", k)))
    widths = [sd[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] for i in range(levels)]
    attn = [i - levels for i in range(levels) if f"encoder.conv_blocks.{i}.attn.0.q.weight" in sd]
    codebook = sd["quantize.embedding.weight"]
    return {"name": "vqgan",
            "net": {"ch": ch, "ch_mult": [w // ch for w in widths], "num_res_blocks": blocks, "attn_levels": attn,
                    "mid_attn": "encoder.mid.1.q.weight" in sd, "z_channels": sd["encoder.conv_out.weight"].shape[0],
                    "norm_groups": 32},
            "embed_dim": sd["quant_conv.weight"].shape[0], "quant_conv_kernel": sd["quant_conv.weight"].shape[-1],
            "quantizer": {"name": "vq", "codebook_size": codebook.shape[0], "l2_norm": l2_norm, "beta": 0.25}}  # fmt: skip


def convert_llamagen_vq(sd: dict[str, Tensor], *, l2_norm: bool = True) -> tuple[dict, dict[str, Tensor]]:
    """(genlab vqgan config, its state dict without the usage buffers) of a LlamaGen VQModel state dict."""
    cfg = vq_config(sd, l2_norm=l2_norm)
    out: dict[str, Tensor] = {}
    pattern = re.compile(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(res|attn)\.(\d+)\.(.+)")
    has_attn = {}
    for k in sd:
        if (m := pattern.fullmatch(k)) and m.group(3) == "attn":
            has_attn[(m.group(1), m.group(2))] = True
    for k, v in sd.items():
        if m := pattern.fullmatch(k):
            side, i, kind, j, rest = m.groups()
            step = 2 if has_attn.get((side, i)) else 1
            n = int(j) * step + (kind == "attn")
            out[f"{side}.{'down' if side == 'encoder' else 'up'}.{i}.blocks.{n}.{rest}"] = v
        elif m := re.fullmatch(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(downsample|upsample)\.(.+)", k):
            side, i, what, rest = m.groups()
            out[f"{side}.{'down' if side == 'encoder' else 'up'}.{i}.{what}.{rest}"] = v
        elif re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out|mid\.\d+\..+)\.(weight|bias)|"
                          r"(post_)?quant_conv\.(weight|bias)", k):  # fmt: skip
            out[k] = v
        elif k == "quantize.embedding.weight":
            out["quantizer.codebook"] = v
        elif k.startswith("quantize.codebook_used"):
            continue  # LlamaGen's usage statistics
        else:
            raise CheckpointError(f"not a LlamaGen VQ checkpoint: unexpected tensor {k!r}")
    return cfg, out


def import_llamagen_vq(path: Path | str, out: Path | str, *, l2_norm: bool = True, resolution: int = 256) -> Path:
    from genlab.config import component_from_dict, to_dict
    from genlab.imports.runs import fill_and_check, write_tokenizer_run

    cfg, state = convert_llamagen_vq(load_checkpoint(path), l2_norm=l2_norm)
    config = load_preset_dict("imagenet256/vq-f16")
    cfg = {**cfg, "loss": config["tokenizer"].get("loss", {})}  # the preset's losses, for fine-tuning
    comp = component_from_dict("tokenizer", cfg, "tokenizer")
    state = fill_and_check(comp.build(resolution=resolution), state, "LlamaGen VQ",
                           ("cluster_size", "num_updates", "reseeded", "embed_sum"))  # fmt: skip
    config["tokenizer"], config["data"]["resolution"] = to_dict(comp), resolution
    config["preset"] = f"imported from {Path(path).name}"
    return write_tokenizer_run(Path(out), config, to_dict(comp), state)


def import_llamagen_gpt(path: Path | str, out: Path | str, *, vq: str | None, num_heads: int = 0,
                        names_file: str | None = None) -> Path:  # fmt: skip
    cfg, facts, state = convert_llamagen_gpt(load_checkpoint(path), num_heads=num_heads)
    if not vq:
        raise CheckpointError("a LlamaGen GPT samples VQ tokens: give its tokenizer run with --vq")
    folder = Path(vq) / "tokenizer" if (Path(vq) / "tokenizer" / "config.json").is_file() else Path(vq)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{vq}: not a genlab tokenizer run (no tokenizer/config.json + model.safetensors)")
    from safetensors.torch import load_file

    tok, tok_state = json.loads((folder / "config.json").read_text()), load_file(str(folder / "model.safetensors"))
    run_cfg = folder.parent / "config.yaml"
    config = load_preset_dict("imagenet256/_gpt")
    if run_cfg.is_file():
        import yaml

        config["data"]["resolution"] = yaml.safe_load(run_cfg.read_text())["data"]["resolution"]
    config["generator"] = {**config["generator"], **cfg}
    config["preset"] = f"imported from {Path(path).name}"
    config["sample"] = {**config.get("sample", {}), **LLAMAGEN_SAMPLE}
    names = class_names(facts["num_classes"], names_file)
    return write_generator_run(Path(out), config, config["generator"], None, state, tok, tok_state, names)


@register("importer", "llamagen-gpt")
class LlamaGenGPTImporter:
    help = "LlamaGen's class-conditional GPTs (c2i_B_256.pt, c2i_L_256.pt, ...) on a VQ tokenizer run (--vq)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--vq", help="its VQ tokenizer: a genlab tokenizer run with the GPT's vocabulary and grid")
        parser.add_argument("--num-heads", type=int, default=0, help="heads, for a width not among LlamaGen's sizes")
        parser.add_argument("--class-names", help="a text file, one class name per line (default: ImageNet's)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_llamagen_gpt(path, out, vq=args.vq, num_heads=args.num_heads, names_file=args.class_names)


@register("importer", "llamagen-vq")
class LlamaGenVQImporter:
    help = "LlamaGen's VQ tokenizers (vq_ds16_c2i.pt, vq_ds8_c2i.pt) as a vqgan tokenizer run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-l2", action="store_true", help="a codebook trained without l2-normalised lookup")
        parser.add_argument("--resolution", type=int, default=256, help="the image size the run encodes (256)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_llamagen_vq(path, out, l2_norm=not args.no_l2, resolution=args.resolution)
