"""``genlab info``: a preset's or a run's resolved config, parameter counts and counted sampling cost (GFLOPs per
image, ``genlab.bench.cost``); ``--list`` the registry."""

from __future__ import annotations

import argparse
import json

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    i = sub.add_parser(
        "info",
        help="resolved config and parameter counts",
        description="Show a preset's or run's config and parameter counts.",
    )
    i.add_argument("--preset", help="preset name or .yaml path")
    i.add_argument("--run", help="run directory")
    i.add_argument("--json", action="store_true", help='one JSON object: {"params": {...}, "config": {...}}')
    i.add_argument("--list", action="store_true", help="list the shipped presets and registered components")
    cost = i.add_mutually_exclusive_group()
    cost.add_argument("--cost", action="store_true", help="count the sampling GFLOPs/image even for a big preset")
    cost.add_argument("--no-cost", action="store_true", help="skip counting the sampling GFLOPs/image")
    i.add_argument("overrides", nargs="*", metavar="key=value")
    i.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from genlab import config
    from genlab.bench import cost as bench_cost
    from genlab.pipeline import Pipeline, RunError

    if args.list:
        return list_all()
    if bool(args.preset) == bool(args.run):
        raise UsageError("give exactly one of --preset NAME or --run DIR")
    if args.preset:
        cfg = config.load(args.preset, args.overrides)
        if not isinstance(cfg, config.RunConfig):  # a refiner run: its sizes depend on its base run
            print(json.dumps({"params": {}, "config": cfg.to_dict()}) if args.json else yaml_dump(cfg.to_dict()))
            return 0
    else:
        from genlab.runs import RunFolder

        run = RunFolder(args.run)
        if not run.exists():
            raise RunError(f"run directory {args.run} does not exist")
        cfg = run.read_config() if run.has("config.yaml") else None
        if cfg is not None and not isinstance(cfg, config.RunConfig):
            cfg = None  # a refiner run: Pipeline.load brings its base run
    cost = None
    if cfg is not None and cfg.task == "tokenizer":  # a tokenizer run: the tokenizer alone, counted on the meta device
        from genlab.runs.limits import check_build

        tokenizer = check_build(lambda: cfg.tokenizer.build(resolution=cfg.data.cfg.resolution), "tokenizer",
                                allocate=False)  # fmt: skip
        params = {"tokenizer": sum(p.numel() for p in tokenizer.parameters())}
    elif args.preset:
        params = Pipeline.from_config(cfg, device=torch.device("meta")).param_counts()
        cost = None if args.no_cost else bench_cost.preset_cost(cfg, force=args.cost)
    else:
        pipe = Pipeline.load(run)  # the same RunFolder: config.yaml is read once
        cfg, params = pipe.cfg, pipe.param_counts()
        cost = None if args.no_cost else bench_cost.count_sampling(pipe)
    info = {"params": params, "config": cfg.to_dict()}
    if cost is not None:
        info["cost"] = cost
    if args.json:
        print(json.dumps(info))
    else:
        for part, n in info["params"].items():
            print(f"{part:>10}: {n:,} parameters ({n / 1e6:.2f}M)")
        if cost is not None:
            print(f"{'cost':>10}: {bench_cost.describe(cost)}")
        print(yaml.safe_dump(info["config"], sort_keys=False), end="")
    return 0


def yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).rstrip()


def list_all() -> int:
    from genlab import config, registry

    print("presets:", ", ".join(config.list_presets()))
    for kind in registry.KINDS:
        names = [n if (o := registry.origin(kind, n)) == "genlab" else f"{n} [{o}]" for n in registry.names(kind)]
        print(f"{kind}s:", ", ".join(names) or "(none)")
    if plugins := registry.plugins():
        print("plugins:", ", ".join(f"{m} ({w})" for w, m in plugins))
    print("(every name is genlab's own unless marked [plugin MODULE])")
    return 0
