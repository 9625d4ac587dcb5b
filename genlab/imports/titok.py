"""TiTok's released tokenizers (bytedance/1d-tokenizer on the HF hub) as genlab ``titok`` tokenizer runs.

``genlab import titok PATH --out RUN``: PATH is the weights file as the hub has it (``model.safetensors``, or a
``.bin``/``.pth`` state dict read with ``torch.load(weights_only=True)``), with the hub's ``config.json`` (TiTok's
OmegaConf dump) beside it or given with ``--config``. Single-stage models (``is_legacy: False``, the pixel head:
``titok_bl64_vq8k``, ``titok_bl128_vq8k``, ``titok_sl256_vq8k``) map one tensor per tensor. Two-stage models
(``is_legacy: True``, ``finetune_decoder: True``: TiTok-L-32, B-64, S-128) decode through MaskGIT-VQGAN's decoder:
the run has ``head: legacy`` with ``legacy_layout: true`` and that decoder and codebook (``pixel_decoder.*``,
``pixel_quantize.*``, renamed as ``genlab import maskgit-vqgan`` renames them) as its ``proxy``, a ``vqgan`` with
the port's switches (``conv_bias: false``, ``shortcut: output``); the legacy head's two 1x1 convs (``decoder.ffn.0``,
``decoder.ffn.2``) become ``head.ffn.0`` / ``head.ffn.2``. A stage-1 checkpoint (no pixel decoder) is refused.

The mapping (TiTok's name -> genlab's): ``{encoder,decoder}.ln_pre`` -> ``*.transformer.ln_pre``;
``*.transformer.{i}.ln_1/ln_2`` -> ``*.transformer.blocks.{i}.norm1/norm2``; ``attn.in_proj_{weight,bias}`` ->
``attn.qkv``; ``attn.out_proj`` -> ``attn.proj``; ``mlp.c_fc/c_proj`` -> ``mlp.fc1/fc2``; ``encoder.conv_out`` (1x1
conv) -> ``encoder.proj`` (linear); ``quantize.embedding.weight`` -> ``quantizer.codebook``; ``decoder.ffn.0`` (1x1
conv) -> ``head.ffn``; ``decoder.conv_out`` -> ``head.conv_out``; embeddings and ``latent_tokens`` keep their names.
TiTok's images are in [0, 1]: the run's tokenizer has ``unit_range: true`` and takes and returns genlab's [-1, 1].
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from torch import Tensor

from genlab.config import component_from_dict, to_dict
from genlab.imports.var import CheckpointError, load_state_dict
from genlab.registry import register
from genlab.runs.store import RunFolder
from genlab.tokenizers.vit import VIT_SIZES

RENAMES = [
    (r"^(encoder|decoder)\.ln_pre\.", r"\1.transformer.ln_pre."),
    (r"^(encoder|decoder)\.transformer\.(\d+)\.ln_1\.", r"\1.transformer.blocks.\2.norm1."),
    (r"^(encoder|decoder)\.transformer\.(\d+)\.ln_2\.", r"\1.transformer.blocks.\2.norm2."),
    (r"^(encoder|decoder)\.transformer\.(\d+)\.attn\.in_proj_(weight|bias)$", r"\1.transformer.blocks.\2.attn.qkv.\3"),
    (r"^(encoder|decoder)\.transformer\.(\d+)\.attn\.out_proj\.", r"\1.transformer.blocks.\2.attn.proj."),
    (r"^(encoder|decoder)\.transformer\.(\d+)\.mlp\.c_fc\.", r"\1.transformer.blocks.\2.mlp.fc1."),
    (r"^(encoder|decoder)\.transformer\.(\d+)\.mlp\.c_proj\.", r"\1.transformer.blocks.\2.mlp.fc2."),
    (r"^encoder\.conv_out\.", "encoder.proj."),
    (r"^quantize\.embedding\.weight$", "quantizer.codebook"),
    (r"^decoder\.ffn\.0\.", "head.ffn."),
    (r"^decoder\.conv_out\.", "head.conv_out."),
]


def read_weights(path: Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``torch.save`` file (weights_only); a ``model.`` prefix is dropped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001  (a damaged or foreign file)
            raise CheckpointError(f"{path}: not a safetensors file ({type(e).__name__})") from None
    else:
        sd = load_state_dict(path)
    if any(k.startswith("model.") for k in sd):
        sd = {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}
    return sd


def _vit(sd: dict[str, Tensor], part: str, size: str, num_heads: int) -> dict:
    width = sd[f"{part}.positional_embedding"].shape[1]
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"{part}\.transformer\.(\d+)\.", k)))
    heads = VIT_SIZES[size][2] if size in VIT_SIZES else num_heads
    if heads < 1:
        raise CheckpointError(f"{part}: size {size!r} is not small/base/large: give its attention heads (--num-heads)")
    return {"width": width, "depth": depth, "num_heads": heads}


def titok_config(sd: dict[str, Tensor], conf: dict, *, num_heads: int = 0) -> dict:
    """genlab's ``titok`` config of a TiTok state dict and its hub config (``model.vq_model``)."""
    vq = conf.get("model", {}).get("vq_model", {})
    if vq.get("quantize_mode", "vq") != "vq":
        raise CheckpointError(f"TiTok quantize_mode {vq.get('quantize_mode')!r}: only the VQ tokenizers import")
    legacy = bool(vq.get("is_legacy", True)) or "pixel_decoder.conv_out.weight" in sd
    if legacy and "pixel_decoder.conv_out.weight" not in sd:
        raise CheckpointError(
            "a two-stage TiTok (is_legacy: True) without MaskGIT-VQGAN's pixel decoder (a stage-1 checkpoint?): "
            "import the released stage-2 model (tokenizer_titok_{l32,b64,s128}) or a single-stage one"
        )
    if "encoder.conv_out.weight" not in sd or "quantize.embedding.weight" not in sd:
        raise CheckpointError("not a TiTok tokenizer checkpoint: it has no encoder.conv_out / quantize.embedding")
    return {
        "name": "titok",
        "patch_size": int(vq.get("vit_enc_patch_size", 16)),
        "num_tokens": sd["latent_tokens"].shape[0],
        "encoder": _vit(sd, "encoder", vq.get("vit_enc_model_size", ""), num_heads),
        "decoder": _vit(sd, "decoder", vq.get("vit_dec_model_size", ""), num_heads),
        "token_size": sd["encoder.conv_out.weight"].shape[0],
        "quantizer": {"name": "vq", "codebook_size": sd["quantize.embedding.weight"].shape[0],
                      "l2_norm": bool(vq.get("use_l2_norm", False)), "beta": float(vq.get("commitment_cost", 0.25))},
        "head": "legacy" if legacy else "pixel",
        **({"proxy": proxy_config(sd), "legacy_layout": True} if legacy else {}),
        "unit_range": True,
    }  # fmt: skip


def pixel_part(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A two-stage TiTok's MaskGIT-VQGAN decoder and codebook (``pixel_decoder.*``, ``pixel_quantize.*``) in the
    port's own names (``decoder.*``, ``quantize.*``)."""
    out = {f"decoder.{k[len('pixel_decoder.') :]}": v for k, v in sd.items() if k.startswith("pixel_decoder.")}
    return {**out, **{f"quantize.{k[len('pixel_quantize.') :]}": v for k, v in sd.items()
                      if k.startswith("pixel_quantize.")}}  # fmt: skip


def proxy_config(sd: dict[str, Tensor]) -> dict:
    """The legacy head's proxy: MaskGIT-VQGAN's decoder as a genlab ``vqgan`` (images in [-1, 1]: TiTok's own
    ``unit_range`` maps them)."""
    from genlab.imports.maskgit_vqgan import decoder_config

    return {**decoder_config(pixel_part(sd)), "unit_range": False}


def convert(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    pixel = pixel_part(sd)
    if pixel:  # two-stage: the proxy's decoder and codebook in genlab's vqgan names
        from genlab.imports.maskgit_vqgan import rename_maskgit_vqgan

        levels = len(proxy_config(sd)["net"]["ch_mult"])
        out = {f"proxy.{k}": v for k, v in rename_maskgit_vqgan(pixel, levels).items()}
        sd = {k: v for k, v in sd.items() if not k.startswith(("pixel_decoder.", "pixel_quantize."))}
        legacy = {k: v for k, v in sd.items() if re.fullmatch(r"decoder\.ffn\.[02]\.(weight|bias)", k)}
        out.update({f"head.{k[len('decoder.') :]}": v.squeeze(-1).squeeze(-1) for k, v in legacy.items()})
        sd = {k: v for k, v in sd.items() if k not in legacy}  # the legacy head's two 1x1 convs, as linears
    for k, v in sd.items():
        for pattern, repl in RENAMES:
            k2 = re.sub(pattern, repl, k)
            if k2 != k:
                k = k2
                break
        out[k] = v.squeeze(-1).squeeze(-1) if k in ("encoder.proj.weight", "head.ffn.weight") else v
    return out


def import_titok(path: Path | str, out_dir: Path | str, *, config: Path | str | None = None, num_heads: int = 0):
    """Write the genlab tokenizer run of a TiTok checkpoint to ``out_dir`` (new or empty); returns its path."""
    path, out = Path(path), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out")
    conf_path = Path(config) if config else path.with_name("config.json")
    if not conf_path.is_file():
        raise CheckpointError(f"{conf_path}: no TiTok config.json (the hub's, beside the weights, or --config FILE)")
    try:
        conf = json.loads(conf_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{conf_path}: not JSON ({e.msg})") from None
    sd = read_weights(path)
    resolution = int(conf.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256))
    comp = component_from_dict("tokenizer", titok_config(sd, conf, num_heads=num_heads), "tokenizer")
    tok = comp.build(resolution=resolution)
    try:
        tok.load_state_dict({**tok.state_dict(), **convert(sd)}, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: does not fit the TiTok its config describes ({str(e).splitlines()[0]})"
        ) from None
    extra = sorted(set(convert(sd)) - set(tok.state_dict()))
    if extra:
        raise CheckpointError(f"{path}: {len(extra)} tensors fit no genlab parameter (e.g. {extra[0]!r})")
    run = RunFolder(out)
    data = {"name": "imagefolder", "root": "", "resolution": resolution, "num_classes": 1000}
    run.write_component("tokenizer", to_dict(comp), tok)
    run.write_class_names([str(i) for i in range(1000)])
    run.write_config({"task": "tokenizer", "data": data, "tokenizer": to_dict(comp),
                      "preset": f"imported from {path.name}"})  # fmt: skip
    return out


@register("importer", "titok")
class TiTokImporter:
    help = "TiTok's VQ tokenizers, single- and two-stage (bytedance/1d-tokenizer: model.safetensors + config.json)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", help="titok: the hub's config.json (default: beside the weights)")
        parser.add_argument("--num-heads", type=int, default=0, help="titok: heads of a non-standard ViT size")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_titok(path, out, config=getattr(args, "config", None), num_heads=getattr(args, "num_heads", 0))
