"""A toy task for the trainer's state tests: a tiny MLP with dropout (so the global RNG state matters) on random
vectors. Runs in milliseconds per step; ``python tests/toytrain.py OUT STEPS [RESUME]`` trains in a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from genlab.config import TrainConfig
from genlab.train import Trainer


class Points(torch.utils.data.Dataset):
    class_names = ["a", "b"]

    def __init__(self, n: int = 64):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 8, generator=g), torch.randint(0, 2, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item: tuple[int, bool]) -> dict:  # (index, flip), as the trainer's sampler yields
        i = item[0]
        return {"image": self.x[i], "label": self.y[i]}


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))

    def forward(self, batch: dict) -> dict:
        return {"loss": nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])}


def config(steps: int = 30, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=8, lr=1e-2, checkpoint_every=10, keep_checkpoints=10, log_every=5,
                tensorboard=False, lr_schedule="cosine", warmup_steps=3, ema_decay=0.9)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def trainer(out: Path, cfg: TrainConfig | None = None, model: nn.Module | None = None) -> Trainer:
    torch.manual_seed(0)
    return Trainer(cfg or config(), model or Toy(), Points(), Path(out))


if __name__ == "__main__":
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    cfg = config(steps, checkpoint_every=int(sys.argv[4]) if len(sys.argv) > 4 else 10)
    trainer(out, cfg).fit(resume=sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None)


def assert_kill_9_resume_is_bitwise(args: list[str], tmp_path: Path, env: dict) -> None:
    """``genlab train ARGS`` killed with -9 after its first checkpoint and resumed with ``--resume auto`` ends with
    the weights of an uninterrupted run of the same ARGS, tensor for tensor."""
    import os
    import signal
    import subprocess
    import time

    from safetensors.torch import load_file

    from genlab.train import checkpoint

    def train(*extra):
        cmd = [sys.executable, "-m", "genlab", "train", *args, *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True)

    ref, run = tmp_path / "ref", tmp_path / "run"
    done = train("--out", str(ref))
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen([sys.executable, "-m", "genlab", "train", *args, "--out", str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while checkpoint.latest_checkpoint(run / "checkpoints") is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "generator").exists(), "the run finished before it could be killed"
    resumed = train("--out", str(run), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (load_file(str(r / "generator" / "model.safetensors")) for r in (ref, run))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
