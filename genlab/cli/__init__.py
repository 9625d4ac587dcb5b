"""The ``genlab`` command: one module per subcommand (``add_parser(sub)`` and ``run(args)``).

train | sample | eval | cache | data | info | bench | demo | import | export | reflow. Bad input exits with status 2 and one line
on stderr
saying what to do, never a traceback (``errors.user_errors``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from genlab.cli.errors import EXIT_USAGE, UsageError, user_errors

# the command modules, imported when the parser is built: after ``threads.configure()``, since they import torch
COMMANDS = ("train", "sample", "eval", "cache", "data", "info", "bench", "demo", "imports", "export", "reflow")

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from genlab import __version__
    from genlab.cli.launch import nproc_arg

    p = argparse.ArgumentParser(prog="genlab", description="genlab: class-conditional image generation workbench")
    p.add_argument("--version", action="version", version=f"genlab {__version__}")
    p.add_argument("--nproc", type=nproc_arg, default=1, metavar="N",
                   help="run the command in N processes on this machine (torchrun --standalone; gloo on a CPU), "
                   "exiting with the first failed process's status")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"genlab.cli.{name}").add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from genlab import threads

    # before torch is imported: libgomp's wait policy for the command (see genlab/threads.py)
    threads.configure(sys.argv[1:] if argv is None else argv)
    from genlab.registry import PluginError
    from genlab.safeio import file_error_line, one_line

    try:
        parser = build_parser()  # the registry imports the built-ins and the plugins on its first lookup
    except PluginError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    try:
        if args.nproc > 1:
            return launched(argv, args)
        return args.fn(args)
    except user_errors() as e:
        print(f"genlab {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a corrupt run file or an unwritable output: one line; anything else is a bug
        line = file_error_line(e, getattr(args, "run", None) or getattr(args, "tokenizer", None))
        if line is None:
            raise
        print(f"genlab {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"genlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # what a size within every bound still asked of this machine
        print(f"genlab {args.command}: error: out of memory; use a smaller batch size, resolution or model",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`genlab info --list | head`): nothing left to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def launched(argv: list[str], args: argparse.Namespace) -> int:
    """``genlab --nproc N CMD …``: CMD in N processes (``genlab.cli.launch``); its first failed process's status."""
    from genlab.cli.launch import in_launched_process, launch

    if in_launched_process():
        raise UsageError("--nproc inside a process that torchrun or accelerate started: give one or the other")
    return launch(args.nproc, argv[argv.index(args.command) :])


if __name__ == "__main__":
    sys.exit(main())
