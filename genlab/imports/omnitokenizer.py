"""OmniTokenizer's released checkpoints (FoundationVision/OmniTokenizer: ``imagenet_k600.ckpt``, ``imagenet_ucf.ckpt``,
the ``*_vae.ckpt`` ones, ...) as genlab ``omnitokenizer`` / ``omnitokenizer-kl`` tokenizer runs.

``genlab import omnitokenizer PATH --out RUN``: PATH is the Lightning checkpoint (read with
``torch.load(weights_only=True)``, ``argparse.Namespace`` allowed for its hyper-parameters), a ``torch.save``d state
dict or a ``.safetensors`` file. The architecture is read from the tensors (width, heads from ``q_scale``, patch and
temporal patch from the embeddings, block kinds and depths, window from the bias table, codes, VQ or VAE from
``pre_vq_conv``); what tensors cannot say are flags: ``--resolution`` (256), ``--no-rope`` (the released models
use RoPE: ``spatial_pos rope`` in the public eval scripts), ``--not-causal``. The discriminators, LPIPS and the
unused tensors (``context_norm``, the temporal stacks' position-bias MLPs, EMA statistics) are dropped.

The mapping (public -> genlab): ``encoder.to_patch_emb_first_frame.{1,2,3}`` -> ``embed_first.{0,1,2}`` (and
``to_patch_emb`` -> ``embed_rest``); ``{enc,dec}_{spatial,temporal}_transformer`` -> ``{encoder,decoder}_{spatial,
temporal}``, ``layers.i.0`` (PEG) -> ``blocks.i.peg``, ``.1`` -> ``.attn`` (``norm.gamma`` -> ``norm.weight``), ``.3.0``
-> ``.ff.norm``, ``.3.1`` -> ``.ff.mlp.w12`` (value and gate halves swapped: genlab's gate comes first), ``.3.4`` ->
``.ff.mlp.w3``; ``pre_vq_conv.1`` / ``post_vq_conv.1`` -> ``to_latent`` / ``from_latent``; ``codebook.embeddings`` ->
``quantizer.codebook``; the decoder's ``to_pixels_first_frame.0`` / ``to_pixels.0`` -> ``to_pixels_first`` /
``to_pixels``. RoPE: the public code pairs each head's features as (column, row) frequencies interleaved, genlab's
``rope_2d`` as rows then columns, so q, k and their scales are permuted per head (scores are unchanged). The
temporal stacks keep the public PEG layout (``temporal_peg: public``).
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import component_from_dict, to_dict
from genlab.imports.checks import CheckpointError, check_state, finite, tensor
from genlab.imports.runs import check_out, write_tokenizer_run
from genlab.registry import register

WHAT = "OmniTokenizer"
STACKS = {"encoder.enc_spatial_transformer": "encoder_spatial", "encoder.enc_temporal_transformer": "encoder_temporal",
          "decoder.dec_temporal_transformer": "decoder_temporal", "decoder.dec_spatial_transformer": "decoder_spatial"}  # fmt: skip
RENAMES = [
    (r"^encoder\.to_patch_emb_first_frame\.(\d)\.", lambda m: f"embed_first.{int(m[1]) - 1}."),
    (r"^encoder\.to_patch_emb\.(\d)\.", lambda m: f"embed_rest.{int(m[1]) - 1}."),
    (r"^pre_vq_conv\.1\.", "to_latent."),
    (r"^post_vq_conv\.1\.", "from_latent."),
    (r"^codebook\.embeddings$", "quantizer.codebook"),
    (r"^decoder\.to_pixels_first_frame\.0\.", "to_pixels_first."),
    (r"^decoder\.to_pixels\.0\.", "to_pixels."),
    (r"\.layers\.(\d+)\.0\.", r".blocks.\1.peg."),
    (r"\.layers\.(\d+)\.1\.", r".blocks.\1.attn."),
    (r"\.layers\.(\d+)\.3\.0\.", r".blocks.\1.ff.norm."),
    (r"\.layers\.(\d+)\.3\.1\.", r".blocks.\1.ff.mlp.w12."),
    (r"\.layers\.(\d+)\.3\.4\.", r".blocks.\1.ff.mlp.w3."),
    (r"\.gamma$", ".weight"),
]
UNUSED = re.compile(
    r"context_norm|spatial_rel_pos_bias|relative_position_index|\.beta$|^codebook\.(N|z_avg|codebook_usage)$"
)
# genlab's own state that no public tensor holds: the VQ's EMA/usage statistics, the KL model's latent statistics
FRESH = ("cluster_size", "num_updates", "reseeded", "embed_sum", "latent_mean", "latent_std", "latent_stats_fitted")
KEEP = re.compile(r"^(encoder|decoder|pre_vq_conv|post_vq_conv|codebook)\.")  # the rest: discriminators, LPIPS


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """The state dict of a Lightning checkpoint, a torch.save'd state dict or a safetensors file (tensors only)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001  (a damaged or foreign file)
            raise CheckpointError(f"{path}: not a safetensors file ({type(e).__name__})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # Lightning's hyper_parameters: {"args": ...}
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused it: name the class it met, when torch says which
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        said = next(
            (line for line in lines if line.startswith(("Unsupported", "WeightsUnpickler error: Unsupported"))),
            lines[0],
        )
        raise CheckpointError(f"{path}: not a plain weights file (weights_only refused it: {said[:200]})") from None
    except Exception as e:  # noqa: BLE001  (zip/EOF/format errors: not a torch.save file at all)
        raise CheckpointError(f"{path}: not a torch checkpoint ({type(e).__name__})") from None
    obj = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (found {type(obj).__name__})")
    return dict(obj)


def _blocks(sd: dict[str, Tensor], stack: str) -> str:
    """The stack's block kinds in order: ``w`` where the block has a window attention's qkv, else ``t``."""
    n = 1 + max((int(m[1]) for k in sd if (m := re.match(rf"{re.escape(stack)}\.layers\.(\d+)\.", k))), default=-1)
    return "".join("w" if f"{stack}.layers.{i}.1.qkv.weight" in sd else "t" for i in range(n))


def omni_config(sd: dict[str, Tensor], *, rope: bool = True, causal: bool = True) -> dict:
    """genlab's tokenizer config of a public OmniTokenizer state dict."""
    first = tensor(sd, "encoder.to_patch_emb_first_frame.2.weight", WHAT, ndim=2)  # (D, 3 p p)
    rest = tensor(sd, "encoder.to_patch_emb.2.weight", WHAT, ndim=2)  # (D, 3 pt p p)
    pre, post = tensor(sd, "pre_vq_conv.1.weight", WHAT, ndim=2), tensor(sd, "post_vq_conv.1.weight", WHAT, ndim=2)
    width, C = first.shape[0], post.shape[1]
    p = round((first.shape[1] / 3) ** 0.5)
    scale = next((v for k, v in sd.items() if k.endswith(".1.q_scale")), None)
    if scale is None or 3 * p * p != first.shape[1] or rest.shape[1] % first.shape[1]:
        raise CheckpointError(f"not an {WHAT} checkpoint: no q_scale, or embeddings of an unknown patch shape")
    enc, dec = _blocks(sd, "encoder.enc_spatial_transformer"), _blocks(sd, "decoder.dec_spatial_transformer")
    table = next((v for k, v in sd.items() if k.endswith("relative_position_bias_table")), None)
    cfg = {"patch": p, "temporal_patch": rest.shape[1] // first.shape[1], "width": width,
           "num_heads": width // scale.numel(), "encoder_blocks": enc, "decoder_blocks": dec,
           "temporal_depth": len(_blocks(sd, "encoder.enc_temporal_transformer")),
           "window": round(table.shape[0] ** 0.5 + 1) // 2 if table is not None else 8, "rope": rope, "causal": causal,
           "code_dim": C, "temporal_peg": "public"}  # fmt: skip
    if pre.shape[0] == 2 * C:  # a VAE: mean and log-variance
        return {"name": "omnitokenizer-kl", **cfg, "normalize": "none"}
    if pre.shape[0] != C or "codebook.embeddings" not in sd:
        raise CheckpointError(f"{WHAT}: pre_vq_conv has {pre.shape[0]} outputs for {C} channels and no codebook")
    quantizer = {"name": "vq", "codebook_size": sd["codebook.embeddings"].shape[0], "ema_decay": 0.99}
    return {"name": "omnitokenizer", **cfg, "l2_code": True, "quantizer": quantizer}


def rope_permutation(head_dim: int) -> Tensor:
    """Feature order taking a public head (pairs: column, row frequencies interleaved) to genlab's rope_2d layout
    (rows for the first half of the pairs, columns for the second), both with frequencies theta^(-4i/head_dim)."""
    quarter = head_dim // 4
    pairs = [2 * i + 1 for i in range(quarter)] + [2 * i for i in range(quarter)]  # rows, then columns
    return torch.tensor([2 * q + e for q in pairs for e in (0, 1)])


def convert(sd: dict[str, Tensor], cfg: dict) -> dict[str, Tensor]:
    """Public names and layouts -> genlab's (the module docstring's mapping)."""
    out = {}
    for k, v in sd.items():
        if not KEEP.match(k) or UNUSED.search(k):
            continue
        for old, new in STACKS.items():
            k = k.replace(old, new)
        for pattern, repl in RENAMES:
            k = re.sub(pattern, repl, k)
        out[k] = torch.cat(v.chunk(2)[::-1]) if k.endswith("ff.mlp.w12.weight") else v  # (value, gate) -> (gate, value)
    if cfg["rope"]:
        heads, perm = cfg["num_heads"], rope_permutation(cfg["width"] // cfg["num_heads"])
        for stack in ("encoder_spatial", "decoder_spatial"):
            for k in [k for k in out if k.startswith(f"{stack}.") and k.endswith((".to_q.weight", ".to_kv.weight"))]:
                w = out[k].unflatten(0, (-1, heads, perm.numel()))  # (1 or 2 [k, v], heads, head_dim, D)
                w = torch.cat([w[:1, :, perm], w[1:]]) if k.endswith("to_kv.weight") else w[:, :, perm]
                out[k] = w.flatten(0, 2)
            for k in [k for k in out if k.startswith(f"{stack}.") and k.endswith(("q_scale", "k_scale"))]:
                out[k] = out[k][perm]
    return out


def import_omnitokenizer(path: Path | str, out_dir: Path | str, *, resolution: int = 256, rope: bool = True,
                         causal: bool = True) -> Path:  # fmt: skip
    """Write the genlab tokenizer run of a public OmniTokenizer checkpoint to ``out_dir`` (new or empty)."""
    path, out = Path(path), check_out(out_dir)
    sd = read_checkpoint(path)
    finite(sd, str(path))
    comp = component_from_dict("tokenizer", omni_config(sd, rope=rope, causal=causal), "tokenizer")
    tok = comp.build(resolution=resolution)
    state = convert(sd, to_dict(comp))
    own = tok.state_dict()
    check_state(own, state, f"{path}", optional=FRESH)
    if "quantizer.codebook" in state:
        state["quantizer.embed_sum"] = state["quantizer.codebook"].clone()  # EMA sums of a fresh start
    tok.load_state_dict({**own, **state}, strict=True)  # the genlab state it fills in: FRESH's defaults
    data = {"name": "imagefolder", "root": "", "resolution": resolution, "num_classes": 1000}
    config = {"data": data, "tokenizer": to_dict(comp), "preset": f"imported from {path.name}"}
    return write_tokenizer_run(out, config, to_dict(comp), tok.state_dict())


@register("importer", "omnitokenizer")
class OmniTokenizerImporter:
    help = "OmniTokenizer's VQ and VAE checkpoints (FoundationVision/OmniTokenizer: imagenet_k600.ckpt, ...)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--resolution", type=int, default=256, help="omnitokenizer: the image side (256)")
        parser.add_argument("--no-rope", action="store_true", help="omnitokenizer: a model trained without RoPE")
        parser.add_argument("--not-causal", action="store_true", help="omnitokenizer: a non-causal model")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_omnitokenizer(path, out, resolution=getattr(args, "resolution", 256),
                                    rope=not getattr(args, "no_rope", False),
                                    causal=not getattr(args, "not_causal", False))  # fmt: skip
