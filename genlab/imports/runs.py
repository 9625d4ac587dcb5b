"""What every importer shares: reading a published file safely, checking a converted state dict against the genlab
module it must fit, ImageNet's class names, the SD-VAE a latent model sits on, and writing the run atomically (a
failed import leaves nothing at ``--out``)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import component_from_dict, to_dict
from genlab.imports.var import CheckpointError, _fill_and_check  # merge: genlab.imports.base
from genlab.imports.var import load_state_dict as _load_state_dict
from genlab.runs.store import RunFolder

__all__ = [
    "CheckpointError", "check_out", "class_names", "fill_and_check", "load_state_dict", "sd_vae_tokenizer",
    "write_generator_run",
]  # fmt: skip

IMAGENET_CLASSES = Path(__file__).resolve().parent.parent / "data" / "imagenet_classes.txt"
fill_and_check = _fill_and_check


def load_state_dict(path: Path | str) -> dict[str, Tensor]:
    """The tensors of a ``torch.save``d state dict (``weights_only=True``), without torch's pickle-protocol warning
    (a refused file is one line)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _load_state_dict(path)


def check_out(out: Path | str) -> Path:
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out")
    return out


def class_names(n: int, path: str | None = None) -> list[str]:
    """ImageNet's 1,000 class names (shipped with genlab, in the order of the class ids) for a 1,000-class model,
    the lines of ``path`` if given, else the ids as names."""
    if path:
        try:
            names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: cannot read the class names ({type(e).__name__})") from None
        if len(names) != n:
            raise CheckpointError(f"{path} has {len(names)} class names; the model has {n} classes")
        return names
    if n == 1000:
        return IMAGENET_CLASSES.read_text().splitlines()
    return [str(i) for i in range(n)]


def sd_vae_tokenizer(folder: str | Path) -> tuple[dict, dict[str, Tensor], int]:
    """(sd-vae tokenizer config, its state dict, downsampling factor) of a diffusers AutoencoderKL folder, made
    self-contained: the folder's config is kept in ``vae_config``, its scaling and shift factors spelled out."""
    from diffusers import AutoencoderKL

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: not a diffusers AutoencoderKL folder (no config.json)")
    try:
        vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{folder}: cannot load an AutoencoderKL ({str(e).splitlines()[0][:200]})") from None
    vc = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    cfg = {"name": "sd-vae", "vae_config": json.loads(json.dumps(vc)),
           "scaling_factor": float(vc.get("scaling_factor") or 0.18215),
           "shift_factor": float(vc.get("shift_factor") or 0.0)}  # fmt: skip
    cfg = to_dict(component_from_dict("tokenizer", cfg, "tokenizer"))
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    return cfg, state, 2 ** (len(vc["block_out_channels"]) - 1)


def write_generator_run(out: Path, config: dict, generator: dict, objective: dict | None, gen_state: dict,
                        tokenizer: dict, tok_state: dict, names: list[str]) -> Path:  # fmt: skip
    """A self-contained generator run at ``out``, as ``Pipeline.save`` lays one out, checked by building it (on
    the meta device for the generator), written to a temporary folder and renamed into place."""
    tok_comp = component_from_dict("tokenizer", tokenizer, "tokenizer")
    gen_comp = component_from_dict("generator", generator, "generator")
    obj_comp = component_from_dict("objective", objective, "objective") if objective is not None else None
    tokenizer_module = tok_comp.build(resolution=config["data"]["resolution"])
    spec = tokenizer_module.token_spec
    from genlab.generators.base import build_generator

    with torch.device("meta"):
        model = build_generator(gen_comp, obj_comp, spec=spec, num_classes=len(names), codes=tokenizer_module.codes())
    gen_state = fill_and_check(model.weights_module(), gen_state, "converted checkpoint", ())
    tok_state = fill_and_check(tokenizer_module, tok_state, "tokenizer", ())
    spec_json = {"generator": to_dict(gen_comp), "objective": to_dict(obj_comp) if obj_comp else None,
                 "token_spec": dataclasses.asdict(spec), "num_classes": len(names)}  # fmt: skip
    config = {**config, "generator": to_dict(gen_comp), "tokenizer": to_dict(tok_comp)}
    if obj_comp is not None:
        config["objective"] = to_dict(obj_comp)
    config["data"] = {**config["data"], "num_classes": len(names)}
    with atomic_folder(out) as tmp:
        run = RunFolder(tmp)
        run.write_component("generator", spec_json, gen_state)
        run.write_component("tokenizer", to_dict(tok_comp), tok_state)
        run.write_class_names(names)
        run.write_config(config)
    return Path(out)


@contextlib.contextmanager
def atomic_folder(out: Path | str):
    """A temporary folder beside ``out`` to write into; renamed to ``out`` (new or empty) when the block succeeds,
    removed when it fails, so a failed import or export leaves nothing at ``out``."""
    out = check_out(out)
    tmp = out.parent / f".{out.name}.writing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_tokenizer_run(out: Path, config: dict, tokenizer: dict, state: dict[str, Tensor]) -> Path:
    """A tokenizer run (task: tokenizer) at ``out``, written to a temporary folder and renamed into place."""
    with atomic_folder(out) as tmp:
        run = RunFolder(tmp)
        run.write_component("tokenizer", tokenizer, state)
        run.write_class_names([str(i) for i in range(config["data"].get("num_classes", 1000))])
        run.write_config({**config, "task": "tokenizer"})
    return Path(out)
