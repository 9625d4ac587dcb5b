"""``genlab cache``: encode a dataset once with a tokenizer (``genlab.data.cache``). The check that a generator's
tokenizer is the one that made its cache is ``genlab.tasks.generator.check_token_cache``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from genlab import registry
from genlab.config import ConfigError, component_from_dict, load_preset_dict, parse_override, to_dict
from genlab.data.base import DataError
from genlab.data.cache import read_manifest, write_token_cache
from genlab.tokenizers.saved import fingerprint, load_tokenizer_folder, tokenizer_spec


def add_parser(sub) -> None:
    c = sub.add_parser(
        "cache",
        help="encode a dataset once with a tokenizer (token cache for generator training)",
        description="Encode a dataset with a tokenizer into sharded safetensors files plus manifest.json. A generator "
        "then trains from it with data.name=token-cache data.path=DIR and its tokenizer set to the same tokenizer "
        "(tokenizer.name=run tokenizer.path=RUN). Interrupted runs resume when the same command is run again.",
    )
    c.add_argument("--tokenizer", required=True,
                   help="a tokenizer run (or a generator run: its tokenizer), a preset (its tokenizer section), or a "
                   "registered tokenizer name")  # fmt: skip
    c.add_argument("--dataset", help="dataset name (default: the tokenizer run's dataset)")
    c.add_argument("--resolution", type=int, help="image side (default: the tokenizer run's)")
    c.add_argument("--split", default="train", help="dataset split (default train)")
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--flips", action="store_true", help="also cache every image's horizontal flip")
    c.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="storage type of continuous tokens (default float32)")  # fmt: skip
    c.add_argument("--batch-size", type=int, default=64, help="images per encoder batch")
    c.add_argument("--shard-size", type=int, default=4096, help="images per shard file")
    c.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    c.add_argument("options", nargs="*", metavar="key=value",
                   help="data.KEY=VALUE dataset options (e.g. data.root=/data/imagenet), "
                   "tokenizer.KEY=VALUE tokenizer options (e.g. tokenizer.path=/weights/sd-vae-ft-ema)")  # fmt: skip
    c.set_defaults(fn=cmd_cache)


def _options(texts: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {"data": {}, "tokenizer": {}}
    for text in texts:
        keys, value = parse_override(text)
        if keys[0] not in out or len(keys) < 2:
            raise ConfigError(f"option {text!r}: expected data.KEY=VALUE or tokenizer.KEY=VALUE")
        node = out[keys[0]]
        for k in keys[1:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return out


def resolve_tokenizer(spec: str, resolution: int | None, overrides: dict) -> tuple[torch.nn.Module, dict, dict]:
    """(tokenizer in eval mode, its config spec, the run's data section or {}) from a run directory, a preset or a
    registered tokenizer name."""
    path = Path(spec)
    if path.is_dir():
        run_data = {}
        if (path / "config.yaml").is_file():
            from genlab.runs.store import RunFolder

            data = RunFolder(path).read_config_dict().get("data")  # a malformed file: one RunError naming it
            run_data = data if isinstance(data, dict) else {}
        if run_data.get("name") == "token-cache":  # a generator trained on a cache: the images that cache came from
            try:
                run_data = read_manifest(str(run_data.get("path", "")))["dataset"]
            except DataError:
                run_data = {}  # the cache is gone: --dataset and --resolution must say it
        res = resolution or run_data.get("resolution")
        if not res:
            raise ConfigError(
                f"--resolution is needed: {path} does not say which image side its tokenizer was made for"
            )
        if overrides:
            raise ConfigError("tokenizer.KEY=VALUE options apply to presets and registered names, not to a trained run")
        tok = load_tokenizer_folder(path, resolution=int(res))
        return tok, tok.source, run_data
    if spec in registry.names("tokenizer"):
        section, run_data = {"name": spec}, {}
    else:
        try:
            preset = load_preset_dict(spec)
        except ConfigError:
            raise ConfigError(
                f"--tokenizer {spec}: not a directory, a preset or a registered tokenizer "
                f"({', '.join(registry.names('tokenizer'))})"
            ) from None
        section, run_data = preset.get("tokenizer") or {}, preset.get("data") or {}
    section = {**section, **overrides}
    res = resolution or run_data.get("resolution")
    if not res:
        raise ConfigError("--resolution is needed for a tokenizer given by name")
    comp = component_from_dict("tokenizer", section, "tokenizer")
    tok = comp.build(resolution=int(res))
    return tok.eval(), tokenizer_spec(tok, comp), run_data


def cmd_cache(args: argparse.Namespace) -> int:
    opts = _options(args.options)
    tok, spec, run_data = resolve_tokenizer(args.tokenizer, args.resolution, opts["tokenizer"])
    name = args.dataset or run_data.get("name")
    if not name:
        raise ConfigError("--dataset NAME is needed (the tokenizer does not come from a run that names one)")
    data = {**(run_data if name == run_data.get("name") else {}), "name": name, **opts["data"]}
    if "split" in {f.name for f in dataclasses.fields(registry.get("dataset", name).Config)}:
        data["split"] = args.split
    if args.resolution:
        data["resolution"] = args.resolution
    data.pop("hflip", None)  # flips are cached explicitly (--flips), never drawn at random
    comp = component_from_dict("dataset", data, "data")
    if hasattr(comp.cfg, "hflip"):
        comp = dataclasses.replace(comp, cfg=dataclasses.replace(comp.cfg, hflip=False))
    resolution = comp.cfg.resolution
    dataset = comp.build()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok = tok.to(device)
    ts = tok.token_spec
    meta = {
        "tokenizer": {"name": spec["name"], "config": spec, "fingerprint": fingerprint(tok, spec)},
        "dataset": to_dict(comp),
        "resolution": resolution,
        "token_spec": {
            "kind": ts.kind,
            "shape": list(ts.shape),
            "vocab_size": ts.vocab_size,
            "scales": list(ts.scales),
            **({} if ts.classic else {"axes": list(ts.axes)}),
        },
    }
    dtype = None if args.dtype == "float32" else getattr(torch, args.dtype)
    with torch.no_grad():
        manifest = write_token_cache(
            tok.encode_batch, dataset, args.out, meta=meta, flips=args.flips, shard_size=args.shard_size,
            batch_size=args.batch_size, dtype=dtype, device=device,
        )  # fmt: skip
    print(
        f"cached {manifest['count']} images of {name} ({resolution}px{', both flips' if args.flips else ''}) "
        f"as {ts.kind} tokens {tuple(ts.shape)} in {len(manifest['shards'])} shard(s) -> {args.out}"
    )
    same = f"tokenizer.name=run tokenizer.path={args.tokenizer}" if Path(args.tokenizer).is_dir() else "this tokenizer"
    print(f"train on it with: data.name=token-cache data.path={args.out} and {same}")
    return 0
