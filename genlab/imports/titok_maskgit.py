"""The MaskGIT generators released with TiTok (bytedance/1d-tokenizer ``modeling/maskgit.py``; the hub's
``yucornetto/generator_titok_{l32,b64,s128}_imagenet`` or ``fun-research/TiTok``'s ``generator_titok_*.bin``) as
genlab ``maskgit`` runs over a TiTok tokenizer run.

``genlab import titok-maskgit PATH --tokenizer RUN --out OUT``: PATH is the weights file (``model.safetensors`` or
a ``.bin`` state dict read with ``torch.load(weights_only=True)``); ``--config`` (default: ``config.json`` beside the
weights) is TiTok's config as JSON or YAML (the hub's dump, or ``configs/infer/TiTok/titok_*.yaml``): its
``model.generator`` gives the heads and the sampling settings. Two layouts, both genlab ``maskgit`` switches:

- ``ImageBert`` (L-32, B-64): a Hugging Face ``BertModel`` — word + token-type + position embeddings, LayerNorm
  (eps 1e-12), post-LN layers with exact GELU, no final norm, an untied ``lm_head``: ``norm_position: post``,
  ``head: linear``, ``gelu: exact``, ``norm_eps: 1e-12``. Its vocabulary is codes, [MASK], the classes, the null
  class: rows ``0 .. V`` -> ``tok_embedder``, ``V+1 ..`` -> ``y_embedder`` (row C = null); the token-type row 0 is
  added to the position table (BERT adds both to every position). ``query/key/value`` -> ``attn.qkv``,
  ``attention.output.dense`` -> ``attn.proj``, ``attention.output.LayerNorm`` -> ``norm1``, ``intermediate.dense``
  / ``output.dense`` -> ``mlp.fc1/fc2``, ``output.LayerNorm`` -> ``norm2``, ``lm_head`` -> ``head``.
- ``UViTBert`` (S-128): U-ViT blocks (pre-LN, no q/k/v bias, torch's LayerNorm eps 1e-5, no embedding norm, a
  final norm): ``skips: true``; ``in_blocks.j`` -> ``blocks.j``, ``mid_block`` -> ``blocks.k``, ``out_blocks.j``
  -> ``blocks.{k+1+j}`` (genlab's depth 2k + 1), names inside unchanged.

The run's ``sample:`` section is TiTok's FID setting (``sample_imagenet_titok.py``: ``ImageBert.generate`` with
``softmax_temperature_annealing=True``): the arccos mask schedule, tokens drawn at the annealed temperature
``randomize_temperature (1 - (i+1)/T)`` and ranked by their raw guided logit plus Gumbel noise at the same
temperature, logits divided by 0.5 + 0.8 (1 - (i+1)/T), and the guidance: ``linear`` (cond + g i/T (cond - uncond))
is ``cfg_schedule: step`` with cfg = 1 + g, ``constant`` is cfg = 1 + g, ``power-cosine`` is cfg = g with power 3.
Training settings: TiTok's arccos mask ratio, label smoothing 0.1, class dropout 0.1.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import load_preset_dict
from genlab.generators.maskgit import MaskGIT
from genlab.imports.checks import CheckpointError, converting, finite, read_component
from genlab.imports.checks import tensor as need
from genlab.imports.runs import class_names, write_generator_run
from genlab.imports.titok import read_weights
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec

WHAT = "TiTok MaskGIT generator"
TITOK_HEADS = {768: 16, 1024: 16}  # the released generators' widths -> heads (configs/infer/TiTok/*.yaml)
# configs/infer/TiTok/titok_{l32,b64,s128}.yaml: the FID settings, when the given config has none
TITOK_SAMPLE = {("ViT", 32): (8, 9.5, 4.5, "linear"), ("ViT", 64): (8, 11.0, 3.0, "linear"),
                ("UViT", 128): (64, 2.8, 6.9, "power-cosine")}  # fmt: skip
_BERT = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
_BERT_PARTS = {"attention.output.dense": "attn.proj", "attention.output.LayerNorm": "norm1",
               "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "output.LayerNorm": "norm2"}  # fmt: skip
# BertEmbeddings' tensors; older transformers saved the two index buffers too
_BERT_EMBEDDINGS = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                    "LayerNorm.weight", "LayerNorm.bias", "position_ids", "token_type_ids")  # fmt: skip
_UVIT = re.compile(r"(in_blocks\.(\d+)|mid_block|out_blocks\.(\d+))\.(.+)")


def read_config(path: Path | None) -> dict:
    """TiTok's config (JSON or YAML) as a dict; {} when there is none."""
    if path is None:
        return {}
    if not path.is_file():
        raise CheckpointError(f"{path}: no such config file")
    import yaml

    try:
        conf = yaml.safe_load(path.read_text())  # YAML reads JSON too
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not JSON or YAML ({type(e).__name__})") from None
    if not isinstance(conf, dict):
        raise CheckpointError(f"{path}: not a TiTok config (a mapping with model.generator)")
    return conf


def split_vocabulary(words: Tensor, vocab: int, what: str) -> tuple[Tensor, Tensor]:
    """TiTok's one table (codes, [MASK], classes, null) -> genlab's token table (V + 1) and class table (C + 1)."""
    if words.shape[0] < vocab + 3:
        raise CheckpointError(f"not a {what} checkpoint: {words.shape[0]} embeddings for {vocab} codes + classes")
    return words[: vocab + 1], words[vocab + 1 :]


def convert_bert(sd: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(layout fields, genlab state dict) of an ``ImageBert`` state dict (``model.`` dropped)."""
    head = need(sd, "lm_head.weight", WHAT, ndim=2)
    tok, cls = split_vocabulary(need(sd, "embeddings.word_embeddings.weight", WHAT, ndim=2), head.shape[0], WHAT)
    pos = need(sd, "embeddings.position_embeddings.weight", WHAT, ndim=2)
    types = need(sd, "embeddings.token_type_embeddings.weight", WHAT, ndim=2)
    out = {"tok_embedder.weight": tok, "y_embedder.embedding_table.weight": cls,
           "pos_embed": (pos + types[0]).unsqueeze(0), "head.weight": head, "head.bias": sd["lm_head.bias"],
           "embed_norm.weight": sd["embeddings.LayerNorm.weight"], "embed_norm.bias": sd["embeddings.LayerNorm.bias"]}  # fmt: skip
    for k, v in sd.items():
        if not (m := _BERT.fullmatch(k)):
            continue
        i, part, kind = m.groups()
        if part.startswith("attention.self."):
            if part.endswith("query"):
                qkv = [sd[f"encoder.layer.{i}.attention.self.{n}.{kind}"] for n in ("query", "key", "value")]
                out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(qkv)
        elif part in _BERT_PARTS:
            out[f"blocks.{i}.{_BERT_PARTS[part]}.{kind}"] = v
        else:
            raise CheckpointError(f"not a {WHAT} checkpoint: unexpected tensor {k!r}")
    used = {"lm_head.weight", "lm_head.bias", *(f"embeddings.{n}" for n in _BERT_EMBEDDINGS)}
    stray = sorted(k for k in sd if k not in used and not _BERT.fullmatch(k))
    if stray:
        raise CheckpointError(f"not a {WHAT} checkpoint: unexpected tensor {stray[0]!r}")
    depth = 1 + max((int(m.group(1)) for k in sd if (m := _BERT.fullmatch(k))), default=-1)
    fc1 = need(sd, "encoder.layer.0.intermediate.dense.weight", WHAT, ndim=2)
    layout = {"depth": depth, "norm_position": "post", "head": "linear", "gelu": "exact", "norm_eps": 1e-12,
              "mlp_ratio": fc1.shape[0] / fc1.shape[1]}  # fmt: skip
    return layout, out


def convert_uvit(sd: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(layout fields, genlab state dict) of a ``UViTBert`` state dict."""
    head = need(sd, "lm_head.weight", WHAT, ndim=2)
    tok, cls = split_vocabulary(need(sd, "embeddings.weight", WHAT, ndim=2), head.shape[0], WHAT)
    half = 1 + max((int(m.group(2)) for k in sd if (m := _UVIT.fullmatch(k)) and m.group(2)), default=-1)
    out = {"tok_embedder.weight": tok, "y_embedder.embedding_table.weight": cls, "pos_embed": sd["pos_embed"],
           "head.weight": head, "head.bias": sd["lm_head.bias"], "norm.weight": sd["norm.weight"],
           "norm.bias": sd["norm.bias"]}  # fmt: skip
    for k, v in sd.items():
        if m := _UVIT.fullmatch(k):
            i = int(m.group(2)) if m.group(2) else half if m.group(3) is None else half + 1 + int(m.group(3))
            out[f"blocks.{i}.{m.group(4)}"] = v
        elif k not in ("embeddings.weight", "pos_embed", "norm.weight", "norm.bias", "lm_head.weight", "lm_head.bias"):
            raise CheckpointError(f"not a {WHAT} checkpoint: unexpected tensor {k!r}")
    fc1 = need(sd, "mid_block.mlp.fc1.weight", WHAT, ndim=2)
    layout = {"depth": 2 * half + 1, "skips": True, "head": "linear", "gelu": "exact", "norm_eps": 1e-5,
              "qkv_bias": "mid_block.attn.qkv.bias" in sd, "embed_norm": False,
              "mlp_ratio": fc1.shape[0] / fc1.shape[1]}  # fmt: skip
    return layout, out


def convert_titok_maskgit(sd: dict[str, Tensor], gen_conf: dict, *, num_heads: int = 0):
    """(genlab maskgit config, facts: model_type, vocab_size, num_tokens, num_classes; genlab state dict)."""
    if "embeddings.word_embeddings.weight" in sd:
        model_type, (layout, state) = "ViT", convert_bert(sd)
    elif "mid_block.attn.qkv.weight" in sd:
        model_type, (layout, state) = "UViT", convert_uvit(sd)
    else:
        raise CheckpointError(f"not a {WHAT} checkpoint: no BERT embeddings and no U-ViT mid_block")
    D = state["tok_embedder.weight"].shape[1]
    heads = num_heads or int(gen_conf.get("num_attention_heads", 0) or 0) or TITOK_HEADS.get(D, 0)
    if not heads:
        raise CheckpointError(f"width {D}: give the generator's attention heads (--num-heads or the config)")
    if D % heads:
        raise CheckpointError(f"the generator's width {D} does not divide into {heads} attention heads")
    cfg = {"name": "maskgit", "hidden_size": D, "num_heads": heads, **layout, "mask_schedule": "arccos",
           "label_smoothing": 0.1, "class_dropout": float(gen_conf.get("class_label_dropout", 0.1))}  # fmt: skip
    facts = {"model_type": model_type, "vocab_size": state["head.weight"].shape[0],
             "num_tokens": state["pos_embed"].shape[1] - 1,
             "num_classes": state["y_embedder.embedding_table.weight"].shape[0] - 1}  # fmt: skip
    return cfg, facts, state


def titok_sample(gen_conf: dict, model_type: str, num_tokens: int) -> dict:
    """The run's ``sample:`` section: TiTok's sampling settings as genlab MaskGIT options (module docstring)."""
    steps, temp, scale, decay = TITOK_SAMPLE.get((model_type, num_tokens), (8, 1.0, 4.5, "constant"))
    steps = int(gen_conf.get("num_steps", steps))
    temp = float(gen_conf.get("randomize_temperature", temp))
    scale, decay = float(gen_conf.get("guidance_scale", scale)), gen_conf.get("guidance_decay", decay)
    if decay not in ("constant", "linear", "power-cosine"):
        raise CheckpointError(f"guidance_decay {decay!r}: TiTok's generate knows constant, linear, power-cosine")
    cfg = {"constant": (1.0 + scale, "constant"), "linear": (1.0 + scale, "step"),
           "power-cosine": (scale, "power-cosine")}[decay]  # fmt: skip
    return {"steps": steps, "cfg": cfg[0], "cfg_schedule": cfg[1], "cfg_power": 3.0, "temperature": temp,
            "temperature_schedule": "anneal", "choice_temperature": temp, "mask_schedule": "arccos",
            "confidence": "logit", "logit_temperature": 0.5, "logit_temperature_ramp": 0.8}  # fmt: skip


def tokenizer_of(run: str | None, facts: dict, path: Path) -> tuple[dict, dict[str, Tensor], int]:
    """(config, state dict, resolution) of the genlab tokenizer run the generator samples for, checked to fit."""
    if not run:
        raise CheckpointError("a TiTok generator samples TiTok tokens: give its tokenizer run with --tokenizer")
    folder = Path(run) / "tokenizer" if (Path(run) / "tokenizer" / "config.json").is_file() else Path(run)
    cfg, state = read_component(folder)
    from genlab.config import component_from_dict

    resolution = 256
    if (folder.parent / "config.yaml").is_file():
        import yaml

        resolution = int(yaml.safe_load((folder.parent / "config.yaml").read_text())["data"]["resolution"])
    with torch.device("meta"):
        spec = component_from_dict("tokenizer", cfg, "tokenizer").build(resolution=resolution).token_spec
    trained_on = TokenSpec("discrete", (facts["num_tokens"],), vocab_size=facts["vocab_size"])
    if spec.kind != "discrete" or spec.shape != trained_on.shape or spec.vocab_size != trained_on.vocab_size:
        raise CheckpointError(
            f"the generator in {path} samples {facts['num_tokens']} tokens of {facts['vocab_size']} codes; the "
            f"tokenizer {run} makes {spec.kind} tokens {spec.shape} of {spec.vocab_size} codes"
        )
    return cfg, state, resolution


def import_titok_maskgit(path: Path | str, out: Path | str, *, tokenizer: str | None, config: str | None = None,
                         num_heads: int = 0, names_file: str | None = None) -> Path:  # fmt: skip
    """Write the genlab maskgit run of a TiTok generator checkpoint on its tokenizer run to ``out``."""
    path = Path(path)
    conf_path = Path(config) if config else path.with_name("config.json")
    conf = read_config(conf_path if config or conf_path.is_file() else None)
    gen_conf = ((conf.get("model") or {}).get("generator") or {}) if isinstance(conf.get("model"), dict) else {}
    with converting(WHAT, path):
        cfg, facts, state = convert_titok_maskgit(read_weights(path), gen_conf, num_heads=num_heads)
        finite(state, str(path))
    with converting("TiTok generator config", conf_path):  # its sampling values must be options MaskGIT accepts
        sample = titok_sample(gen_conf, facts["model_type"], facts["num_tokens"])
        MaskGIT.SampleOptions(**sample).validate()
    with converting("genlab tokenizer run", tokenizer or "--tokenizer"):
        tok, tok_state, resolution = tokenizer_of(tokenizer, facts, path)
    run = load_preset_dict("imagenet256/maskgit")
    run["data"]["resolution"] = resolution
    run["generator"] = cfg
    run["preset"] = f"imported from {path.name}"
    run["sample"] = {**run.get("sample", {}), **sample}
    names = class_names(facts["num_classes"], names_file)
    return write_generator_run(Path(out), run, cfg, None, state, tok, tok_state, names)


@register("importer", "titok-maskgit")
class TiTokMaskGITImporter:
    help = "TiTok's MaskGIT generators (generator_titok_{l32,b64,s128}: ImageBert / UViTBert) on a TiTok tokenizer run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tokenizer", help="its tokenizer: a genlab run with the generator's tokens and codes")
        parser.add_argument("--config", help="TiTok's config, JSON or YAML (default: config.json beside the weights)")
        parser.add_argument("--num-heads", type=int, default=0, help="heads, when neither the config nor the width say")
        parser.add_argument("--class-names", help="a text file, one class name per line (default: ImageNet's)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_titok_maskgit(path, out, tokenizer=args.tokenizer, config=args.config,
                                    num_heads=args.num_heads, names_file=args.class_names)  # fmt: skip
