"""Trained tokenizers on disk: load one from a run, name it in a generator's config, fingerprint it.

A generator trains on the tokens of a tokenizer trained before (``genlab train --preset smoke-vae``): its config
says ``tokenizer: {name: run, path: runs/vae}``. The ``run`` entry builds the tokenizer that run saved
(``tokenizer/config.json`` + ``model.safetensors``), frozen. A generator run then saves that tokenizer's own
config and weights in its ``tokenizer/`` folder, so it keeps working when the tokenizer run is moved or deleted.

``fingerprint`` identifies a tokenizer by its config and weights: a token cache records the fingerprint of the
tokenizer that made it, and a generator whose tokenizer differs is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from genlab.config import ConfigError, component_from_dict, to_dict
from genlab.registry import register
from genlab.runs.limits import check_build
from genlab.safeio import CorruptFileError, load_safetensors_checked, read_json_checked
from genlab.tokenizers.base import Tokenizer, TokenizerError

CONFIG, WEIGHTS = "config.json", "model.safetensors"


def tokenizer_folder(path: Path | str) -> Path:
    """The folder holding config.json + model.safetensors: ``path/tokenizer`` of a run, or ``path`` itself."""
    path = Path(path)
    folder = path / "tokenizer" if (path / "tokenizer" / CONFIG).is_file() else path
    if not (folder / CONFIG).is_file():
        raise TokenizerError(
            f"{path} holds no trained tokenizer (no tokenizer/{CONFIG}); train one with "
            "`genlab train --preset smoke-vae --out DIR` (or any task: tokenizer preset) and name that DIR"
        )
    return folder


def _saved_spec(folder: Path) -> dict:
    try:
        spec = read_json_checked(folder / CONFIG)
    except CorruptFileError as e:
        raise TokenizerError(f"{e}; it should hold the tokenizer's config (a JSON object with a name)") from None
    if spec.get("name") == "run":
        raise TokenizerError(f"{folder / CONFIG} names another run instead of a tokenizer")
    return spec


def load_tokenizer_folder(path: Path | str, *, resolution: int) -> Tokenizer:
    """The tokenizer saved in a run (or tokenizer folder), with its weights, in eval mode."""
    folder = tokenizer_folder(path)
    spec = _saved_spec(folder)
    try:
        comp = component_from_dict("tokenizer", spec, "tokenizer")
        check_build(lambda: comp.build(resolution=resolution), str(folder / CONFIG))
    except ConfigError as e:
        raise TokenizerError(f"{folder / CONFIG}: {e}") from None
    tok = comp.build(resolution=resolution)
    weights = folder / WEIGHTS
    if any(True for _ in tok.state_dict()):
        if not weights.is_file():
            raise TokenizerError(f"{folder} has no {WEIGHTS}: the tokenizer's training did not finish")
        own = tok.state_dict()
        try:
            tok.load_state_dict(load_safetensors_checked(weights, own, {k: tuple(v.shape) for k, v in own.items()}))
        except CorruptFileError as e:
            raise TokenizerError(f"{e} (the tokenizer in {folder / CONFIG})") from None
    tok.source = spec  # what a generator run saves as its tokenizer's config
    return tok.eval()


@dataclass
class RunTokenizerConfig:
    path: str = ""  # a tokenizer run directory (or a folder with config.json + model.safetensors)

    def validate(self) -> None:
        if not self.path:
            raise ValueError("path: name the tokenizer run to use, e.g. tokenizer.path=runs/vae")


@register("tokenizer", "run")
def tokenizer_from_run(cfg: RunTokenizerConfig, *, resolution: int) -> Tokenizer:
    """The trained (frozen) tokenizer of another run; see the module docstring."""
    if torch.empty(0).device.type == "meta":  # counting parameters: shapes only
        spec = _saved_spec(tokenizer_folder(cfg.path))
        return component_from_dict("tokenizer", spec, "tokenizer").build(resolution=resolution)
    tok = load_tokenizer_folder(cfg.path, resolution=resolution)
    return tok.requires_grad_(False)


tokenizer_from_run.Config = RunTokenizerConfig


def tokenizer_spec(tokenizer: torch.nn.Module, component) -> dict:
    """The tokenizer's own config (name + every option): the loaded run's for ``run``, else ``component``'s."""
    return getattr(tokenizer, "source", None) or to_dict(component)


def fingerprint(tokenizer: torch.nn.Module, spec: dict) -> str:
    """sha256 of a tokenizer's config ``spec`` (canonicalised: defaults filled in) and weights (every state_dict
    tensor, in key order), hex."""
    canonical = to_dict(component_from_dict("tokenizer", dict(spec), "tokenizer"))
    h = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode())
    for key, value in sorted(tokenizer.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
