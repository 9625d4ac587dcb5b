"""``genlab --nproc N``: a command in N processes that exits like one genlab process (issue 27)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlab import threads
from genlab.cli import main
from genlab.cli.launch import exit_status

ROOT = Path(__file__).resolve().parents[1]


def test_a_failing_process_gives_its_line_and_status_and_nothing_of_torchrun(tmp_path):
    # under torchrun itself: each process's line, then torchrun's ChildFailedError traceback and status 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        env.pop(k, None)
    missing = tmp_path / "no-such-run"
    cmd = [sys.executable, "-m", "genlab", "--nproc", "2", "sample", "--run", str(missing), "--n", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert 1 <= len(lines) <= 2 and all(ln.startswith("genlab sample: error: ") for ln in lines), done.stderr
    assert str(missing) in lines[0] and not tmp_path.joinpath("no-such-run").exists()


def test_nproc_is_bounded_and_not_nested(capsys, monkeypatch):
    for bad in ("0", "-1", "two", "100000"):
        with pytest.raises(SystemExit) as e:
            main(["--nproc", bad, "info", "--list"])
        assert e.value.code == 2
    assert "number of processes" in capsys.readouterr().err
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["--nproc", "2", "info", "--list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--nproc inside a process that torchrun" in err


def test_the_thread_defaults_see_the_command_after_nproc():
    env = {}
    assert threads.configure(["--nproc", "2", "train", "--preset", "smoke"], env) == {} and env == {}
    assert threads.configure(["--nproc", "2", "sample", "--run", "r"], env) == {"GOMP_SPINCOUNT": "1000"}


def test_a_signal_is_128_plus_its_number():
    assert exit_status(2) == 2 and exit_status(-9) == 137 and exit_status(0) == 0
