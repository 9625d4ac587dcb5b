"""VAR's released checkpoints (FoundationVision/VAR on the HF hub) as genlab runs.

- ``vae_ch160v4096z32.pth``: VAR's multi-scale VQVAE -> genlab's ``msvq-vae`` (``convert_vqvae``);
- ``var_d16.pth`` (d20, d24, d30 alike): VAR's transformer -> genlab's ``var`` (``convert_var``).

Both files are plain state dicts saved with ``torch.save`` by a trusted publisher. They are read with
``torch.load(path, map_location="cpu", weights_only=True)``, which only rebuilds tensors and containers and never
runs pickled code; anything else (a file that is not a state dict, one of another model, a pickle that needs
arbitrary classes) is refused with a ``CheckpointError``.

The mapping, module by module (VAR's name -> genlab's):

VQVAE: ``encoder.down.{i}.block.{j}`` -> ``encoder.down.{i}.blocks.{n}`` and ``...attn.{j}`` -> the block after it
(genlab interleaves res and attention blocks in one list); the decoder's ``up.{i}`` (indexed by level) ->
``decoder.up.{levels-1-i}`` (genlab's in decoding order); ``mid.block_1 / attn_1 / block_2`` -> ``mid.0 / 1 / 2``;
an attention block's fused 1x1 ``qkv`` conv -> three convs ``q``, ``k``, ``v``; ``quantize.embedding`` ->
``quantizer.vq.codebook``; ``quantize.quant_resi.qresi_ls.{j}`` (or ``quant_resi.{j}``, ``quant_resi.qresi``) ->
``quantizer.phis.{j}``; ``quantize.ema_vocab_hit_SV`` (usage statistics) is dropped.

VAR: ``class_emb`` -> ``class_emb.embedding_table``; ``pos_1LC`` -> ``pos_embed``; ``blocks.{i}.attn.mat_qkv`` ->
``attn.qkv``; ``attn.scale_mul_1H11`` -> ``attn.scale_mul``; ``ffn`` -> ``mlp``; ``ada_lin`` -> ``adaLN_modulation``;
``head_nm.ada_lin`` -> ``head.adaLN_modulation``; ``head`` -> ``head.linear``; the buffers ``lvl_1L``,
``attn_bias_for_masking`` and ``attn.zero_k_bias`` are dropped (genlab rebuilds them).

``import_var(kind, path, out_dir)`` writes a self-contained run folder as ``Pipeline.save`` / ``save_tokenizer`` lay
one out (config.yaml, class_names.json, tokenizer/ and, for "var", generator/ with config.json + model.safetensors).
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import component_from_dict, load_preset_dict, to_dict
from genlab.generators.var import VAR_SCALES, var_spec
from genlab.imports.checks import CheckpointError, check_state, check_tokens_fit, converting, finite, read_component
from genlab.imports.checks import tensor as _tensor
from genlab.registry import register
from genlab.runs.store import RunFolder

KINDS = ("var-vqvae", "var")


# ----------------------------------------------------------------------------- reading


def load_state_dict(path: Path | str) -> dict[str, Tensor]:
    """The tensors of a ``torch.save``d state dict, read with ``weights_only=True`` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a plain weights file (weights_only refused it: {first})") from None
    except Exception as e:  # noqa: BLE001  (zip/EOF/format errors: not a torch.save file at all)
        raise CheckpointError(f"{path}: not a torch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict) and isinstance(obj.get("trainer"), dict):  # VAR's own training checkpoints
        obj = obj["trainer"].get("var_wo_ddp", obj["trainer"].get("vae_local", obj))
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (found {type(obj).__name__})")
    return dict(obj)


def _need(sd: dict[str, Tensor], key: str, what: str, ndim: int | None = None) -> Tensor:
    return _tensor(sd, key, what, ndim=ndim)


def _levels(sd: dict[str, Tensor], pattern: str, what: str) -> int:
    found = [int(m.group(1)) for k in sd if (m := re.match(pattern, k))]
    if not found:
        raise CheckpointError(f"not a {what} checkpoint: no tensor matches {pattern!r}")
    return 1 + max(found)


def _fill_and_check(model: torch.nn.Module, mapped: dict[str, Tensor], what: str, optional: tuple[str, ...]):
    """``mapped`` completed with the model's own values for the ``optional`` entries (usage buffers), after checking
    that every other key exists with the model's shape."""
    own = model.state_dict()
    check_state(own, mapped, what, optional)
    return {**{k: v for k, v in own.items() if k not in mapped}, **mapped}


# ----------------------------------------------------------------------------- the VQVAE


def vqvae_config(sd: dict[str, Tensor], *, scales=VAR_SCALES, norm_groups: int = 32, phi_ratio: float = 0.5) -> dict:
    """genlab's ``msvq-vae`` config of a VAR VQVAE state dict. What the weights do not hold comes from the
    arguments, at VAR's values: the scales (patch_nums), the GroupNorm groups, phi's blend ratio (quant_resi)."""
    what = "VAR VQVAE"
    ch = _need(sd, "encoder.conv_in.weight", what, ndim=4).shape[0]
    levels = _levels(sd, r"encoder\.down\.(\d+)\.", what)
    widths = [_need(sd, f"encoder.down.{i}.block.0.conv1.weight", what, ndim=4).shape[0] for i in range(levels)]
    if any(w % ch for w in widths):
        raise CheckpointError(f"not a {what} checkpoint: its widths {widths} are not multiples of conv_in's {ch}")
    blocks = _levels(sd, r"encoder\.down\.0\.block\.(\d+)\.", what)
    attn = [i - levels for i in range(levels) if f"encoder.down.{i}.attn.0.qkv.weight" in sd]  # from the end, as VAR
    codebook = _need(sd, "quantize.embedding.weight", what, ndim=2)
    quant_conv = _need(sd, "quant_conv.weight", what, ndim=4)
    phis = sorted({m.group(1) for k in sd if (m := re.match(r"quantize\.quant_resi\.(?:qresi_ls\.)?(\d+|qresi)\.", k))})
    return {
        "name": "msvq-vae",
        "net": {
            "ch": ch,
            "ch_mult": [w // ch for w in widths],
            "num_res_blocks": blocks,
            "attn_levels": attn,
            "mid_attn": "encoder.mid.attn_1.qkv.weight" in sd,
            "z_channels": _need(sd, "encoder.conv_out.weight", what, ndim=4).shape[0],
            "norm_groups": norm_groups,
        },
        "embed_dim": quant_conv.shape[0],
        "quant_conv_kernel": quant_conv.shape[-1],
        "quantizer": {
            "name": "msvq",
            "scales": list(scales),
            "phi_ratio": phi_ratio if phis else 0.0,
            "phi_count": len(phis),  # VAR's shared (1), partially shared (4) or per-scale phis
            "vq": {"codebook_size": codebook.shape[0], "beta": 0.25},
        },
    }


def _split_qkv(out: dict, prefix: str, sd: dict, src: str) -> None:
    """VAR's fused 1x1 qkv conv -> genlab's q, k, v convs (LDM's separate q, k, v as they are)."""
    for part in ("weight", "bias"):
        if f"{src}.qkv.{part}" not in sd:  # LDM's AttnBlock (VA-VAE, SD-VAE's original checkpoints)
            for name in "qkv":
                out[f"{prefix}.{name}.{part}"] = sd[f"{src}.{name}.{part}"]
            continue
        for name, t in zip("qkv", sd[f"{src}.qkv.{part}"].chunk(3, dim=0)):
            out[f"{prefix}.{name}.{part}"] = t.clone()
    for part in ("weight", "bias"):
        out[f"{prefix}.proj_out.{part}"] = sd[f"{src}.proj_out.{part}"]
    out[f"{prefix}.norm.weight"], out[f"{prefix}.norm.bias"] = sd[f"{src}.norm.weight"], sd[f"{src}.norm.bias"]


def _resnet(out: dict, prefix: str, sd: dict, src: str) -> None:
    for k in [k for k in sd if k.startswith(src + ".")]:
        out[prefix + k[len(src) :]] = sd[k]


def _convnet_keys(sd: dict, side: str, levels: int, blocks: int, attn: list[int]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    stage = "down" if side == "encoder" else "up"
    for i in range(levels):
        dst_stage = i if side == "encoder" else levels - 1 - i  # genlab's decoder stages run from the last level
        n = 0
        for j in range(blocks + (side == "decoder")):
            _resnet(out, f"{side}.{stage}.{dst_stage}.blocks.{n}", sd, f"{side}.{stage}.{i}.block.{j}")
            n += 1
            if i in attn:
                _split_qkv(out, f"{side}.{stage}.{dst_stage}.blocks.{n}", sd, f"{side}.{stage}.{i}.attn.{j}")
                n += 1
        resample = "downsample" if side == "encoder" else "upsample"
        for part in ("weight", "bias"):
            if f"{side}.{stage}.{i}.{resample}.conv.{part}" in sd:
                out[f"{side}.{stage}.{dst_stage}.{resample}.conv.{part}"] = sd[
                    f"{side}.{stage}.{i}.{resample}.conv.{part}"
                ]
    _resnet(out, f"{side}.mid.0", sd, f"{side}.mid.block_1")
    mid_last = 1
    if f"{side}.mid.attn_1.qkv.weight" in sd or f"{side}.mid.attn_1.q.weight" in sd:
        _split_qkv(out, f"{side}.mid.1", sd, f"{side}.mid.attn_1")
        mid_last = 2
    _resnet(out, f"{side}.mid.{mid_last}", sd, f"{side}.mid.block_2")
    for name in ("conv_in", "norm_out", "conv_out"):
        for part in ("weight", "bias"):
            out[f"{side}.{name}.{part}"] = sd[f"{side}.{name}.{part}"]
    return out


def convert_vqvae(sd: dict[str, Tensor], **config) -> tuple[dict, dict[str, Tensor]]:
    """(genlab msvq-vae config, its state dict) from a VAR VQVAE state dict; ``config``: see ``vqvae_config``."""
    cfg = vqvae_config(sd, **config)
    net = cfg["net"]
    levels, blocks = len(net["ch_mult"]), net["num_res_blocks"]
    attn = [a % levels for a in net["attn_levels"]]
    out = {**_convnet_keys(sd, "encoder", levels, blocks, attn), **_convnet_keys(sd, "decoder", levels, blocks, attn)}
    for name in ("quant_conv", "post_quant_conv"):
        for part in ("weight", "bias"):
            out[f"{name}.{part}"] = _need(sd, f"{name}.{part}", "VAR VQVAE")
    out["quantizer.vq.codebook"] = sd["quantize.embedding.weight"]
    for k, v in sd.items():
        if m := re.match(r"quantize\.quant_resi\.(?:qresi_ls\.)?(\d+|qresi)\.(weight|bias)$", k):
            out[f"quantizer.phis.{0 if m.group(1) == 'qresi' else m.group(1)}.{m.group(2)}"] = v
    known = {"quantize.ema_vocab_hit_SV"}
    stray = [k for k in sd if k not in known and not k.startswith(("encoder.", "decoder.", "quant", "post_quant"))]
    if stray:
        raise CheckpointError(f"not a VAR VQVAE checkpoint: unexpected tensor {stray[0]!r}")
    component = component_from_dict("tokenizer", dict(cfg), "tokenizer")
    tok = component.build(resolution=cfg["quantizer"]["scales"][-1] * 2 ** (levels - 1))  # on the CPU: its buffers
    buffers = ("cluster_size", "num_updates", "reseeded", "embed_sum")  # usage statistics VAR does not keep
    return to_dict(component), _fill_and_check(tok, out, "VAR VQVAE", buffers)


# ----------------------------------------------------------------------------- the transformer

_VAR_RENAMES = [
    (r"class_emb\.weight", "class_emb.embedding_table.weight"),
    (r"pos_1LC", "pos_embed"),
    (r"(pos_start|lvl_embed\.weight|word_embed\.(weight|bias))", r"\1"),
    (r"blocks\.(\d+)\.attn\.mat_qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    (r"blocks\.(\d+)\.attn\.(q_bias|v_bias|proj\.weight|proj\.bias)", r"blocks.\1.attn.\2"),
    (r"blocks\.(\d+)\.attn\.scale_mul_1H11", r"blocks.\1.attn.scale_mul"),
    (r"blocks\.(\d+)\.ffn\.(fc1|fc2)\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"blocks\.(\d+)\.ada_lin\.1\.(weight|bias)", r"blocks.\1.adaLN_modulation.1.\2"),
    (r"head_nm\.ada_lin\.1\.(weight|bias)", r"head.adaLN_modulation.1.\1"),
    (r"head\.(weight|bias)", r"head.linear.\1"),
]
_VAR_DROPPED = re.compile(r"(lvl_1L|attn_bias_for_masking|blocks\.\d+\.attn\.zero_k_bias)$")


def var_config(sd: dict[str, Tensor], *, num_heads: int = 0) -> dict:
    """genlab's ``var`` config of a VAR state dict: depth, width, heads (from the l2-norm scales, else VAR's rule
    heads = depth unless ``num_heads`` says), MLP ratio and whether attention is l2-normalised."""
    width = _need(sd, "class_emb.weight", "VAR", ndim=2).shape[1]
    if any(k.endswith("ada_gss") for k in sd) or "shared_ada_lin.1.weight" in sd:
        raise CheckpointError("this VAR uses shared adaLN (VAR-d36's saln), which genlab's var does not implement")
    depth = _levels(sd, r"blocks\.(\d+)\.", "VAR")
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    heads = _need(sd, "blocks.0.attn.scale_mul_1H11", "VAR", ndim=4).shape[1] if l2 else (num_heads or depth)
    hidden = _need(sd, "blocks.0.ffn.fc1.weight", "VAR", ndim=2).shape[0]
    return {
        "name": "var",
        "depth": depth,
        "hidden_size": width,
        "num_heads": heads,
        "mlp_ratio": hidden / width,
        "attn_l2_norm": l2,
        "class_dropout": 0.1,
        "drop_path": round(0.1 * depth / 24, 6),
    }


def rename_var_keys(sd: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """VAR's (and FlexVAR's) tensor names as genlab's, the dropped buffers left out; an unknown name is refused."""
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if _VAR_DROPPED.match(k):
            continue
        for pattern, repl in _VAR_RENAMES:
            if re.fullmatch(pattern, k):
                out[re.sub(pattern, repl, k)] = v
                break
        else:
            raise CheckpointError(f"not a {what} checkpoint: unexpected tensor {k!r}")
    return out


def convert_var(sd: dict[str, Tensor], *, scales=VAR_SCALES, num_heads: int = 0) -> tuple[dict, dict[str, Tensor], int]:
    """(genlab var config, its state dict, num_classes) from a VAR state dict (scales: VAR's patch_nums)."""
    cfg = var_config(sd, num_heads=num_heads)
    out = rename_var_keys(sd, "VAR")
    L = _need(sd, "pos_1LC", "VAR", ndim=3).shape[1]
    for key in ("lvl_embed.weight", "head.weight", "word_embed.weight"):
        _need(sd, key, "VAR", ndim=2)
    if L != sum(s * s for s in scales) or sd["lvl_embed.weight"].shape[0] != len(scales):
        raise CheckpointError(
            f"this VAR has {L} positions; the scales {tuple(scales)} give {sum(s * s for s in scales)}"
        )
    num_classes = sd["class_emb.weight"].shape[0] - 1
    spec = var_spec(tuple(scales), vocab_size=sd["head.weight"].shape[0], code_dim=sd["word_embed.weight"].shape[1])
    with torch.device("meta"):
        model = component_from_dict("generator", dict(cfg), "generator").build(spec=spec, num_classes=num_classes)
    return cfg, _fill_and_check(model, out, "VAR", ()), num_classes


# ----------------------------------------------------------------------------- run folders


def _tokenizer_from(vae: Path | str, **config) -> tuple[dict, dict[str, Tensor]]:
    """A VQVAE .pth, or a genlab run / tokenizer folder (``genlab import var-vqvae``'s output)."""
    vae = Path(vae)
    folder = vae / "tokenizer" if (vae / "tokenizer" / "config.json").is_file() else vae
    if (folder / "config.json").is_file():
        cfg, state = read_component(folder)
        if cfg.get("name") != "msvq-vae" or not isinstance(cfg.get("quantizer"), dict):
            raise CheckpointError(
                f"{folder / 'config.json'}: a {cfg.get('name')!r} tokenizer, not VAR's multi-scale VQVAE (msvq-vae)"
            )
        with converting("genlab msvq-vae tokenizer", folder / "config.json"):
            comp = component_from_dict("tokenizer", cfg, "tokenizer")
            with torch.device("meta"):
                own = comp.build(resolution=2 ** (len(comp.cfg.net.ch_mult) - 1) * int(cfg["quantizer"]["scales"][-1]))
            check_state(own.state_dict(), state, str(folder / "model.safetensors"))
        return cfg, state
    with converting("VAR VQVAE", vae):
        cfg, state = convert_vqvae(load_state_dict(vae), **config)
        finite(state, str(vae))
    return cfg, state


def import_var(kind: str, path: Path | str, out_dir: Path | str, *, vae: Path | str | None = None,
               scales=VAR_SCALES, norm_groups: int = 32, num_heads: int = 0) -> Path:  # fmt: skip
    """Write the genlab run of a VAR checkpoint to ``out_dir`` (which must not exist or be empty).

    ``kind`` "var-vqvae": ``path`` is ``vae_ch160v4096z32.pth``; the run is a tokenizer run (task: tokenizer).
    ``kind`` "var": ``path`` is ``var_d16.pth`` (any depth); ``vae`` names its tokenizer, either the VQVAE .pth or
    the run ``genlab import var-vqvae`` wrote; the run samples like a trained genlab VAR (VAR's FID settings in
    its ``sample:`` section)."""
    if kind not in KINDS:
        raise ValueError(f"unknown import {kind!r}; imports: {', '.join(KINDS)}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out")
    if kind == "var" and vae is None:
        raise ValueError("importing VAR needs its tokenizer: pass the VQVAE (vae_ch160v4096z32.pth or its import)")
    if kind == "var-vqvae":
        with converting("VAR VQVAE", path):
            tok_cfg, tok_state = convert_vqvae(load_state_dict(path), scales=scales, norm_groups=norm_groups)
            finite(tok_state, str(path))  # after the mapping: VAR's dropped buffers hold -inf by design
        config = load_preset_dict("imagenet256/var-vqvae")
        tok_cfg = {**tok_cfg, "loss": config["tokenizer"]["loss"]}  # the preset's training losses, for fine-tuning
        tok_cfg = to_dict(component_from_dict("tokenizer", tok_cfg, "tokenizer"))
        config["tokenizer"] = tok_cfg
    else:
        with converting("VAR", path):
            gen_cfg, gen_state, num_classes = convert_var(load_state_dict(path), scales=scales, num_heads=num_heads)
            finite(gen_state, str(path))  # after the mapping: attn_bias_for_masking holds -inf by design
        tok_cfg, tok_state = _tokenizer_from(vae, scales=scales, norm_groups=norm_groups)
        if list(tok_cfg["quantizer"]["scales"]) != list(scales):
            raise CheckpointError(
                f"the tokenizer's scales {tok_cfg['quantizer']['scales']} are not VAR's {list(scales)}"
            )
        depth = gen_cfg["depth"]
        config = load_preset_dict(f"imagenet256/var-d{depth}" if depth in (16, 20, 24, 30) else "imagenet256/_var")
        config["generator"] = {**config["generator"], **gen_cfg}
        config["tokenizer"] = {"name": "run", "path": str(out)}  # the run's own tokenizer/ (Pipeline.load's rule)
        config["data"]["num_classes"] = num_classes
    run = RunFolder(out)
    n = config["data"].get("num_classes", 1000)
    tok_comp = component_from_dict("tokenizer", tok_cfg, "tokenizer")
    config["data"]["resolution"] = 2 ** (len(tok_comp.cfg.net.ch_mult) - 1) * scales[-1]  # the latent's side x f
    if kind == "var":
        with torch.device("meta"):
            spec = tok_comp.build(resolution=config["data"]["resolution"]).token_spec
        trained_on = var_spec(tuple(scales), vocab_size=gen_state["head.linear.weight"].shape[0],
                              code_dim=gen_state["word_embed.weight"].shape[1])  # fmt: skip
        check_tokens_fit(trained_on, spec, f"the VAR in {path}")  # before anything is written
        generator = {"generator": to_dict(component_from_dict("generator", config["generator"], "generator")),
                     "objective": None, "token_spec": spec.to_dict(), "num_classes": n}  # fmt: skip
        run.write_component("generator", generator, gen_state)
    config["preset"] = f"imported from {Path(path).name}"
    run.write_component("tokenizer", tok_cfg, tok_state)
    run.write_class_names([str(i) for i in range(n)])
    run.write_config(config)
    return out


def _scales(text: str) -> tuple[int, ...]:
    """``--scales 1,2,3,4,6,9,13,18,24,32`` -> (1, 2, ...): VAR's patch_nums, increasing positive sides."""
    try:
        scales = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scales takes comma-separated integers, got {text!r}") from None
    if not scales or scales[0] < 1 or list(scales) != sorted(set(scales)):
        raise argparse.ArgumentTypeError(f"--scales must be increasing positive sides, got {text!r}")
    return scales


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of VAR's own converter a non-default checkpoint needs (VAR-d36 at 512 px: its patch_nums)."""
    parser.add_argument("--scales", type=_scales, default=VAR_SCALES,
                        help="the checkpoint's patch_nums, comma-separated (default VAR's 256 px: 1,2,3,4,5,6,8,10,13,16;"
                             " VAR-d36 512 px: 1,2,3,4,6,9,13,18,24,32)")  # fmt: skip
    parser.add_argument("--norm-groups", type=int, default=32, help="the VQVAE's GroupNorm groups (VAR: 32)")


@register("importer", "var-vqvae")
class VarVQVAEImporter:
    help = "VAR's multi-scale VQVAE (vae_ch160v4096z32.pth) as a tokenizer run"
    add_arguments = staticmethod(_common_arguments)

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_var("var-vqvae", path, out, scales=args.scales, norm_groups=args.norm_groups)


@register("importer", "var")
class VarImporter:
    help = "a VAR transformer (var_d16.pth, any depth) with its VQVAE as a generator run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--vae", help="its tokenizer: the VQVAE .pth or the run `genlab import var-vqvae` wrote")
        _common_arguments(parser)
        parser.add_argument("--num-heads", type=int, default=0,
                            help="heads of a checkpoint without l2-normalised attention whose heads are not its depth")  # fmt: skip

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_var("var", path, out, vae=args.vae, scales=args.scales, norm_groups=args.norm_groups,
                          num_heads=args.num_heads)  # fmt: skip
