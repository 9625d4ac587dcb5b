"""Checkpoints hold no pickles, verify themselves, and a corrupt newest one costs nothing but its own steps.

Uses the toy task of tests/toytrain.py (milliseconds per step), so every test here is independent of the models."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genlab.safeio import CorruptFileError
from genlab.train import TrainError, checkpoint
from genlab.train import state as trainstate

sys.path.insert(0, str(Path(__file__).parent))
import toytrain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
COMPARED = ("model.safetensors", "optimizer.safetensors", "ema.safetensors", "schedulers.json", "rng_0.safetensors")


class Plant:
    """Unpickling this creates ``path``: the proof that a loader ran code from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def malicious_pickle(marker: Path) -> bytes:
    blob = pickle.dumps(Plant(marker))
    pickle.loads(blob)  # the bait works: loading it in full would create the marker
    assert marker.exists()
    marker.unlink()
    return blob


def final_files(run: Path) -> dict[str, bytes]:
    final = checkpoint.step_dir(run / "checkpoints", 30)
    return {name: (final / name).read_bytes() for name in COMPARED}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted toy run of 30 steps with checkpoints at 10, 20 and 30."""
    out = tmp_path_factory.mktemp("toy") / "ref"
    toytrain.trainer(out).fit()
    assert [s for s, _ in checkpoint.valid_checkpoints(out / "checkpoints")] == [10, 20, 30]
    return out


def interrupted_copy(reference: Path, dest: Path) -> Path:
    """The reference run as if stopped right after the checkpoint of step 20."""
    shutil.copytree(reference / "checkpoints", dest / "checkpoints")
    shutil.rmtree(dest / "checkpoints" / "step_0000030")
    return dest


def test_a_checkpoint_is_safetensors_and_json_only(reference):
    folder = checkpoint.step_dir(reference / "checkpoints", 20)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*COMPARED, checkpoint.STATE_FILE])
    for name in names:
        head = (folder / name).read_bytes()[:2]
        assert head[:1] != b"\x80", f"{name} is a pickle"
    state = json.loads((folder / checkpoint.STATE_FILE).read_text())
    assert set(state["files"]) == set(COMPARED) and state["step"] == 20
    assert all(len(r["sha256"]) == 64 and r["size"] > 0 for r in state["files"].values())


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(reference, tmp_path):
    run = interrupted_copy(reference, tmp_path / "run")
    toytrain.trainer(run).fit(resume="auto")
    assert final_files(run) == final_files(reference)


def test_two_identical_runs_save_the_same_numpy_and_python_rng_states(reference, tmp_path):
    import random

    import numpy as np

    random.random(), np.random.rand()  # whatever ran before in this process
    toytrain.trainer(tmp_path / "again").fit()
    assert final_files(tmp_path / "again")["rng_0.safetensors"] == final_files(reference)["rng_0.safetensors"]


@pytest.mark.parametrize("name", [*COMPARED, checkpoint.STATE_FILE])
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, capsys, name, damage):
    run = interrupted_copy(reference, tmp_path / "run")
    bad = checkpoint.step_dir(run / "checkpoints", 20) / name
    data = bad.read_bytes()
    if damage == "flip":
        i = len(data) // 2
        bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
    elif damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.unlink()
    toytrain.trainer(run).fit(resume="auto")
    err = capsys.readouterr()
    assert "step_0000020" in err.err and "warning" in err.err
    assert "resumed from" in err.out and "step_0000010" in err.out
    assert final_files(run) == final_files(reference)


def test_an_explicit_corrupt_checkpoint_is_one_error(reference, tmp_path):
    run = interrupted_copy(reference, tmp_path / "run")
    path = checkpoint.step_dir(run / "checkpoints", 20)
    (path / "ema.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(TrainError, match="ema.safetensors"):
        toytrain.trainer(run).fit(resume=str(path))


def test_nothing_in_a_checkpoint_folder_is_unpickled(reference, tmp_path):
    marker = tmp_path / "marker"
    blob = malicious_pickle(marker)
    run = interrupted_copy(reference, tmp_path / "run")
    root = run / "checkpoints"
    # 1: every file a pickle, also the names accelerate's save_state used
    for folder in checkpoint.step_folders(root):
        for f in list(folder.iterdir()):
            f.write_bytes(blob)
        for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin"):
            (folder / name).write_bytes(blob)
    with pytest.raises(TrainError, match="could be loaded"):
        toytrain.trainer(run).fit(resume="auto")
    assert not marker.exists()
    # 2: an attacker who also rewrites the manifest, so that every checksum matches the pickles
    for folder in checkpoint.step_folders(root):
        state = {"step": int(folder.name[5:]), "steps": 30, "format": checkpoint.FORMAT}
        checkpoint.write_json_atomic(folder / checkpoint.STATE_FILE, {**state, "files": checkpoint.manifest(folder)})
    with pytest.raises(TrainError, match="could be loaded"):
        toytrain.trainer(run).fit(resume="auto")
    assert not marker.exists()
    # 3: an accelerate-era checkpoint (format 1: pickles) is refused, not loaded
    old = checkpoint.step_dir(root, 10)
    (old / checkpoint.STATE_FILE).write_text(json.dumps({"step": 10, "steps": 30}))
    with pytest.raises(TrainError, match="older genlab"):
        toytrain.trainer(run).fit(resume=str(old))
    assert not marker.exists()


def test_crafted_state_files_are_refused_by_the_loaders(reference, tmp_path):
    """Valid safetensors with other keys, shapes, dtypes or JSON types never reach the live objects."""
    src = checkpoint.step_dir(reference / "checkpoints", 20)
    t = toytrain.trainer(tmp_path / "x")
    from safetensors.torch import load_file, save_file

    model = load_file(str(src / "model.safetensors"))
    save_file({**model, "net.0.weight": torch.zeros(3, 3)}, str(tmp_path / "m.safetensors"))
    with pytest.raises(CorruptFileError, match="shape"):
        trainstate.load_model(t.model, tmp_path / "m.safetensors")
    save_file({k: v.double() for k, v in model.items()}, str(tmp_path / "d.safetensors"))
    with pytest.raises(CorruptFileError, match="float64"):
        trainstate.load_model(t.model, tmp_path / "d.safetensors")
    sched = json.loads((src / "schedulers.json").read_text())
    (tmp_path / "s.json").write_text(json.dumps({"lr": {**sched["lr"], "last_epoch": "import os"}}))
    with pytest.raises(CorruptFileError, match="last_epoch"):
        trainstate.load_schedulers(tmp_path / "s.json", {"lr": t.sched})
    (tmp_path / "r.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(CorruptFileError, match="header length"):
        trainstate.load_rng(tmp_path / "r.safetensors")


def test_a_kill_while_pruning_leaves_nothing_behind(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20):
        tmp = checkpoint.begin(root, step)
        (tmp / "model.safetensors").write_bytes(b"x")
        checkpoint.commit(root, tmp, step, {}, keep=5)
    (root / "step_0000005").mkdir()  # what a prune by file left: a step folder without its state file
    (root / ".old-step_0000001").mkdir()  # a prune killed between its rename and its delete
    tmp = checkpoint.begin(root, 30)
    checkpoint.commit(root, tmp, 30, {}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_0000020", "step_0000030"]


def test_a_non_finite_loss_stops_at_its_step_and_saves_nothing(tmp_path):
    class Explodes(toytrain.Toy):
        def forward(self, batch):
            out = super().forward(batch)
            self.calls = getattr(self, "calls", 0) + 1
            return {"loss": out["loss"] * (float("nan") if self.calls == 13 else 1.0)}

    t = toytrain.trainer(tmp_path / "run", toytrain.config(30, log_every=100), Explodes())
    with pytest.raises(TrainError, match="at step 13"):
        t.fit()
    assert [s for s, _ in checkpoint.valid_checkpoints(tmp_path / "run" / "checkpoints")] == [10]
    weights = trainstate.load_safetensors_checked(
        tmp_path / "run" / "checkpoints" / "step_0000010" / "model.safetensors"
    )
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_a_non_finite_loss_read_lazily_names_its_step_and_saves_nothing(tmp_path):
    """On a GPU the loss flag is read every log_every steps (no host sync per step): the run still stops naming the
    first bad step, and no checkpoint after it is written."""

    class Explodes(toytrain.Toy):
        def forward(self, batch):
            out = super().forward(batch)
            self.calls = getattr(self, "calls", 0) + 1
            return {"loss": out["loss"] * (float("nan") if self.calls in (13, 15) else 1.0)}

    t = toytrain.trainer(tmp_path / "run", toytrain.config(30, log_every=100), Explodes())
    t.finite_check_every = 8  # what a GPU run with log_every=8 does
    with pytest.raises(TrainError, match="non-finite at step 13; nothing was saved"):
        t.fit()
    assert [s for s, _ in checkpoint.valid_checkpoints(tmp_path / "run" / "checkpoints")] == [10]


@pytest.mark.slow
@pytest.mark.parametrize("omp_threads", ["1", None], ids=["1-thread", "default-threads"])
def test_kill_9_and_resume_auto_is_bitwise_identical(tmp_path, omp_threads):
    """kill -9 at any moment (also inside a save) and --resume auto ends where an uninterrupted run ends (with a
    fixed thread count, and with the default settings: the thread governor on)."""
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}
    env.update({"OMP_NUM_THREADS": omp_threads} if omp_threads else {})
    steps, every = 300, 7
    ref, run = tmp_path / "ref", tmp_path / "run"
    script = [sys.executable, str(Path(__file__).parent / "toytrain.py")]
    done = subprocess.run([*script, str(ref), str(steps), "-", str(every)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for attempt in range(3):
        proc = subprocess.Popen(
            [*script, str(run), str(steps), "auto", str(every)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline, seen = time.time() + 60, len(checkpoint.valid_checkpoints(run / "checkpoints"))
        while len(checkpoint.valid_checkpoints(run / "checkpoints")) <= seen and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(0.02 * attempt)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert checkpoint.latest_checkpoint(run / "checkpoints") != checkpoint.step_dir(run / "checkpoints", steps)
    finished = subprocess.run(
        [*script, str(run), str(steps), "auto", str(every)], env=env, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    a = checkpoint.step_dir(ref / "checkpoints", steps)
    b = checkpoint.step_dir(run / "checkpoints", steps)
    for name in COMPARED:  # rng_0 too: numpy's and Python's global RNGs are seeded from train.seed (issue 27)
        assert (a / name).read_bytes() == (b / name).read_bytes(), f"{name} differs after kill -9 and resume"
