"""``genlab bench NAME``: side-by-side speed (and quality) measurements, one sub-command per registered benchmark.

Each benchmark (``registry.names("benchmark")``, protocol in ``genlab/bench/__init__.py``) declares its flags;
``--json`` prints its result as JSON, otherwise its ``summary`` (or the JSON when it has none)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    from genlab import registry

    b = sub.add_parser("bench", help="benchmarks", description="Benchmarks, one per registered name.")
    names = registry.names("benchmark")
    which = b.add_subparsers(dest="what", required=True, metavar="NAME", help=", ".join(names))
    for name in names:
        bench = registry.get("benchmark", name)
        p = which.add_parser(name, help=bench.help, description=bench.help)
        bench.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(fn=run, benchmark=bench)


def run(args: argparse.Namespace) -> int:
    result = args.benchmark.run(args)
    summary = getattr(args.benchmark, "summary", None)
    print(json.dumps(result, indent=2) if args.json or summary is None else summary(result) or json.dumps(result))
    return 0
