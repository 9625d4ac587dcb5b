import os
from pathlib import Path

import pytest
import torch

import genlab.data  # noqa: F401  (register built-ins)
import genlab.generators  # noqa: F401
import genlab.samplers  # noqa: F401
import genlab.tokenizers  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # pytest-xdist runs one worker per core; more threads per worker only oversubscribe


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished smoke run (digits 16x16, tiny DiT, 40 steps), trained once per test session."""
    from genlab import config
    from genlab.tasks import train_run

    out = tmp_path_factory.mktemp("runs") / "smoke"
    train_run(config.load("smoke"), out)
    return out


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("GENLAB_CACHE", os.environ.get("GENLAB_CACHE", str(Path.home() / ".cache" / "genlab")))
