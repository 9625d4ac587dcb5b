"""Run under torchrun (1 or 2 processes): features of a fixed .npz through genlab's sharded extraction.

Usage: torchrun --standalone --nproc_per_node N tests/dist_eval_features.py IMAGES.npz OUT.pt
"""

import sys

import torch

from genlab.evals import resolve
from genlab.evals.features import extract, process_state
from genlab.evals.sources import NpzImages

if __name__ == "__main__":
    images, out = sys.argv[1], sys.argv[2]
    state = process_state()
    feats = extract(NpzImages(images), resolve(), batch_size=2, progress=False, state=state)
    if state.is_main_process:
        torch.save({"pool": feats.pool, "world": state.num_processes}, out)
