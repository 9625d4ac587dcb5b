"""MaskGIT through the same commands as a DiT run: train, sample, eval, bench sample, info, the demo's handler,
and kill -9 + --resume auto (for VAR too)."""

import json
import os
from pathlib import Path

import pytest
import torch
import toytrain

from genlab.cli import main
from genlab.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def maskgit_run(tmp_path_factory) -> Path:
    from genlab import config
    from genlab.tasks import train_run

    out = tmp_path_factory.mktemp("runs") / "maskgit"
    train_run(config.load("smoke-maskgit", ["train.steps=20", "train.checkpoint_every=0"]), out)
    return out


def test_sample_info_and_option_errors(maskgit_run, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "sample", "--run", str(maskgit_run), "--classes", "0,7", "--n", "3", "--steps",
                           "4", "--cfg", "2", "--temperature", "0.5", "--out", str(tmp_path / "g.png"))  # fmt: skip
    assert code == 0 and "6 images, 4 NFE" in out and (tmp_path / "g.png").is_file()
    code, _, err = run_cli(
        capsys, "sample", "--run", str(maskgit_run), "--blocks", "H1P5", "--out", str(tmp_path / "x.png")
    )
    assert code == 2 and "blocks is not a sampling option of generator maskgit" in err and len(err.splitlines()) == 1
    for bad in (["--steps", "65"], ["--cfg", "nan"], ["--temperature", "inf"], ["--cfg-schedule", "cosine"]):
        code, _, err = run_cli(capsys, "sample", "--run", str(maskgit_run), *bad, "--out", str(tmp_path / "x.png"))
        assert code == 2 and len(err.strip().splitlines()) == 1, (bad, err)
    code, out, _ = run_cli(capsys, "info", "--run", str(maskgit_run), "--json")
    info = json.loads(out)
    assert code == 0 and info["config"]["generator"]["name"] == "maskgit" and info["params"]["generator"] > 0


def test_eval_and_bench_sample(maskgit_run, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    stats = tmp_path / "digits-val.npz"  # 8 images' statistics: the test checks the wiring, not the FID
    assert main(["eval", "ref", "--dataset", "digits", "--resolution", "16", "--split", "val", "--n", "8",
                 "--out", str(stats)]) == 0  # fmt: skip
    log = tmp_path / "m.jsonl"
    code, out, err = run_cli(capsys, "eval", "--run", str(maskgit_run), "--n", "6", "--metrics", "fid", "--steps",
                             "4", "--ref", str(stats), "--batch-size", "6", "--json", "--log", str(log))  # fmt: skip
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["fid"] > 0
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["sampling"]["steps"] == 4 and record["sampling"]["nfe"] == 4
    code, out, err = run_cli(capsys, "bench", "sample", "--run", str(maskgit_run), "--n", "4", "--nfe", "4,8,128",
                             "--no-fid", "--max-batch", "0", "--json")  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["sampler"], r["nfe"]) for r in rows] == [("maskgit", 4), ("maskgit", 8)]  # 128 > its 64 tokens


def test_demo_handler_generates_without_a_sampler(maskgit_run):
    pytest.importorskip("gradio")
    from genlab.demo import Demo, load_runs

    demo = Demo(load_runs([maskgit_run], device="cpu"))
    run = next(iter(demo.runs.values()))
    assert not run.has_sampler and not run.supports_interval
    gallery, info, grid, _, command = demo.generate(run.name, ["3"], 2, "euler", 4, 2.0, 5)
    assert len(gallery) == 2 and "4 NFE" in info and "--sampler" not in command and Path(grid).is_file()
    again = Pipeline.load(maskgit_run).generate([3, 3], seed=5, options={"steps": 4, "cfg": 2.0})
    assert torch.allclose(torch.from_numpy(gallery[0][0]).permute(2, 0, 1).float(),
                          ((again.images[0] + 1) * 127.5).round().clamp(0, 255), atol=1)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["smoke-maskgit", "smoke-var"])
def test_kill_9_and_resume_is_bitwise_identical(tmp_path, preset):
    """For a masked and an autoregressive generator of discrete tokens, as tests/test_trainer.py does for DiT."""
    args = ["--preset", preset, "train.steps=120", "train.checkpoint_every=20", "train.keep_checkpoints=10"]
    toytrain.assert_kill_9_resume_is_bitwise(args, tmp_path, ENV)


def test_eval_prints_its_result_before_a_log_that_cannot_be_written(maskgit_run, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    stats = tmp_path / "ref.npz"
    assert main(["eval", "ref", "--dataset", "digits", "--resolution", "16", "--split", "val", "--n", "8",
                 "--out", str(stats)]) == 0  # fmt: skip
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    code, out, err = run_cli(capsys, "eval", "--run", str(maskgit_run), "--n", "4", "--metrics", "fid", "--steps",
                             "2", "--ref", str(stats), "--json", "--log", str(tmp_path / "file" / "m.jsonl"))  # fmt: skip
    assert code == 2 and json.loads(out.strip().splitlines()[-1])["fid"] > 0 and "was not logged" in err
