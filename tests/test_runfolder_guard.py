"""One run per folder: a new config is checked against the one in --out before anything is written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genlab.runs.store import RunError, RunFolder
from genlab.train import TrainError
from genlab.train.runfolder_guard import check_run_folder, clear_run_outputs, differences

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
CFG = {"data": {"name": "digits"}, "generator": {"name": "dit", "depth": 2}, "train": {"steps": 40, "lr": 0.001}}


def genlab(*args):
    return subprocess.run([sys.executable, "-m", "genlab", *args], env=ENV, capture_output=True, text=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_folder(tmp_path, cfg=CFG, checkpoint=True) -> Path:
    out = tmp_path / "run"
    RunFolder(out).write_config(cfg)
    if checkpoint:
        (out / "checkpoints" / "step_0000040").mkdir(parents=True)
    return out


def test_differences_name_the_dotted_keys():
    new = {**CFG, "generator": {"name": "dit", "depth": 3}, "preset": "x", "sample": {"cfg": 4.0}}
    assert differences(CFG, new) == ["generator.depth: 2 -> 3"]


def test_a_fresh_or_unrelated_folder_trains(tmp_path):
    check_run_folder(tmp_path / "new", CFG, resume=None)
    (tmp_path / "notes.txt").write_text("mine")
    check_run_folder(tmp_path, CFG, resume=None)
    check_run_folder(tmp_path, CFG, resume="auto")


def test_a_folder_holding_a_run_is_refused_unless_told(tmp_path):
    out = run_folder(tmp_path)
    with pytest.raises(
        TrainError, match=r"already holds a run \(checkpoints up to step 40\).*--resume auto.*--overwrite"
    ):
        check_run_folder(out, CFG, resume=None)
    other = {**CFG, "train": {"steps": 40, "lr": 0.01}}
    with pytest.raises(TrainError, match="train.lr: 0.001 -> 0.01"):
        check_run_folder(run_folder(tmp_path / "b", checkpoint=False), other, resume=None)
    check_run_folder(out, other, resume=None, overwrite=True)
    check_run_folder(run_folder(tmp_path / "c", checkpoint=False), CFG, resume=None)  # a retry before any checkpoint


def test_a_resume_may_change_only_the_schedule(tmp_path):
    out = run_folder(tmp_path)
    check_run_folder(out, {**CFG, "train": {"steps": 80, "lr": 0.001}}, resume="auto")
    with pytest.raises(TrainError, match="--resume: the config differs .* generator.depth: 2 -> 3"):
        check_run_folder(out, {**CFG, "generator": {"name": "dit", "depth": 3}}, resume="auto")
    with pytest.raises(TrainError, match="give one of them"):
        check_run_folder(out, CFG, resume="auto", overwrite=True)


def test_a_broken_or_missing_config_is_refused(tmp_path):
    out = run_folder(tmp_path)
    (out / "config.yaml").write_text("[unclosed")
    with pytest.raises(RunError, match="config.yaml is not valid YAML"):
        check_run_folder(out, CFG, resume="auto")
    (out / "config.yaml").unlink()
    with pytest.raises(TrainError, match="no config.yaml"):
        check_run_folder(out, CFG, resume=None)
    check_run_folder(out, CFG, resume="auto")  # checkpoints copied without their config: their loaders check shapes
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainError, match="is a file"):
        check_run_folder(tmp_path / "file", CFG, resume=None)


def test_overwrite_deletes_only_what_genlab_wrote(tmp_path):
    out = run_folder(tmp_path)
    (out / "metrics.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    assert clear_run_outputs(out) == ["config.yaml", "checkpoints", "metrics.jsonl"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_failed_resume_leaves_the_run_folder_byte_for_byte(tmp_path):
    out = tmp_path / "vq"

    def train(*flags_and_overrides):
        flags = [a for a in flags_and_overrides if a.startswith("--") or a == "auto"]
        overrides = [a for a in flags_and_overrides if a not in flags]
        base = ["train.steps=4", "train.checkpoint_every=2"]
        return genlab("train", "--preset", "smoke-vq", "--out", str(out), *flags, *base, *overrides)

    done = train()
    assert done.returncode == 0, done.stderr[-2000:]
    before = snapshot(out)
    cases = [
        ("--resume", "auto", "tokenizer.embed_dim=8"),  # another model: refused before anything is built
        (),  # the same run again without --resume: would mix two runs
        ("train.lr=0.5",),
    ]
    for extra in cases:
        r = train(*extra)
        assert r.returncode == 2, (extra, r.stderr[-2000:])
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("genlab train: error:") and "Traceback" not in r.stderr, extra
        assert snapshot(out) == before, f"{extra} changed the run folder"
    # a resume the guard accepts (a longer run) whose checkpoints all fail to load: still nothing written
    for f in (out / "checkpoints").rglob("model.safetensors"):
        f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    before = snapshot(out)
    r = train("--resume", "auto", "train.steps=6")
    assert r.returncode == 2 and "could be loaded" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert snapshot(out) == before
    # --overwrite starts over
    r = train("--overwrite", "train.steps=2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["steps"] == 2
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000002"]
