"""``genlab demo``: the Gradio app over trained runs."""

from __future__ import annotations

import argparse

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    d = sub.add_parser(
        "demo", help="the Gradio demo app over trained runs", description="Serve trained runs in a Gradio app."
    )
    d.add_argument("--run", action="append", required=True, help="run directory; repeat for several models")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    d.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    d.add_argument("--max-images", type=int, default=16, help="images per request (default 16)")
    d.add_argument("--max-steps", type=int, default=100, help="sampler steps per request (default 100)")
    d.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from genlab.demo import Limits, serve

    if args.max_images <= 0 or args.max_steps <= 0:
        raise UsageError("--max-images and --max-steps must be positive")
    from genlab import inputs

    try:
        inputs.check_port(args.port)
        inputs.check_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    serve(args.run, host=args.host, port=args.port, device=args.device,
          limits=Limits(max_images=args.max_images, max_steps=args.max_steps))  # fmt: skip
    return 0
