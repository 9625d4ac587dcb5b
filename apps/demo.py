"""``python -m apps.demo --run runs/NAME [--run ...] [--host 127.0.0.1] [--port 7860]``.

The app itself is built by ``genlab.demo`` (so ``genlab demo`` can start it without importing ``apps``);
this entry point takes the same arguments as ``genlab demo``.
"""

import sys

from genlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
