"""``train.fsdp``: FSDP2 through accelerate, on 2 CPU processes over gloo (issue 26).

Under FSDP every parameter, gradient and optimizer state is a DTensor shard; genlab's checkpoints and exports hold
the gathered full tensors, so an FSDP run must train, checkpoint, resume and export exactly as the same run
without FSDP (measured: equal bitwise at 2 processes on the CPU, the tolerance below is float rounding room), and
its checkpoint resumes on one process without FSDP (measured: 2.1e-8 from the 2-process run, the all-reduce's
rounding).
"""

import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_trainer import _torchrun, genlab

ARGS = ["--preset", "smoke", "train.steps=4", "train.checkpoint_every=2", "train.keep_checkpoints=10",
        "sample.grid_classes=2"]  # fmt: skip
FSDP = ["train.fsdp=true", "train.fsdp_wrap=DiTBlock"]
FILES = ["generator/model.safetensors", *(f"checkpoints/step_0000004/{f}" for f in
         ("model.safetensors", "ema.safetensors", "optimizer.safetensors"))]  # fmt: skip


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys(), (a, b)
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


@pytest.mark.parametrize(
    "extra,says",
    [
        (FSDP[:1], "train.fsdp needs 2 or more processes"),
        (["train.fsdp_wrap=DiTBlock"], "train.fsdp_wrap needs train.fsdp=true"),
        ([*FSDP[:1], "train.fsdp_wrap=NoSuchBlock"], "has no module of class NoSuchBlock"),
    ],
    ids=["one-process", "wrap-without-fsdp", "unknown-wrap-class"],
)
def test_an_unsupported_fsdp_run_is_one_line_and_status_2(tmp_path, capsys, extra, says):
    from genlab.cli import main

    assert main(["train", "--preset", "smoke", *extra, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.strip().count("\n") == 0 and not (tmp_path / "run").exists(), err


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun missing",
)
def test_fsdp_on_two_processes_trains_resumes_and_exports_as_without_it(tmp_path):
    ddp, sharded, resumed = tmp_path / "ddp", tmp_path / "fsdp", tmp_path / "resumed"
    for out, extra in ((ddp, []), (sharded, FSDP)):
        done = _torchrun(2, *ARGS, *extra, "--out", str(out))
        assert done.returncode == 0, done.stderr[-3000:]
    # it trained: the weights moved between the two checkpoints
    assert _max_diff(sharded / "checkpoints/step_0000002/model.safetensors", sharded / FILES[1]) > 1e-4
    for f in FILES:
        assert _max_diff(sharded / f, ddp / f) < 1e-5, f
    assert (sharded / "samples/step_0000004.png").read_bytes() == (ddp / "samples/step_0000004.png").read_bytes()

    # the step-2 checkpoint written under FSDP resumes under FSDP to the uninterrupted run's step 4
    shutil.copytree(sharded, resumed)
    shutil.rmtree(resumed / "checkpoints/step_0000004")
    shutil.rmtree(resumed / "generator")
    done = _torchrun(2, *ARGS, *FSDP, "--out", str(resumed), "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr and "at step 2" in done.stdout + done.stderr
    for f in FILES:
        assert _max_diff(resumed / f, sharded / f) < 1e-5, f

    # and it is an ordinary checkpoint: it resumes on one process without FSDP (to the all-reduce's rounding)
    shutil.copytree(sharded, plain := tmp_path / "plain")
    shutil.rmtree(plain / "checkpoints/step_0000004")
    shutil.rmtree(plain / "generator")
    done = genlab("train", *ARGS, "--out", str(plain), "--resume", "auto")
    assert done.returncode == 0 and "at step 2" in done.stdout + done.stderr, done.stderr[-3000:]
    assert _max_diff(plain / FILES[0], ddp / FILES[0]) < 1e-5

    # the exported run is an ordinary run: genlab sample loads it in one process
    done = genlab("sample", "--run", str(sharded), "--classes", "0", "--n", "2", "--out", str(tmp_path / "s.png"))
    assert done.returncode == 0 and (tmp_path / "s.png").stat().st_size > 0, done.stderr[-2000:]
