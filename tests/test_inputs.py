"""Every bad input is one line: train numbers, presets, safetensors files (and a property test over them)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from genlab import config
from genlab.config import ConfigError, TrainConfig
from genlab.safeio import CorruptFileError, load_safetensors_checked

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=inf", "train.lr must be a finite number"),
        ("train.lr=.nan", "train.lr must be a finite number"),
        ("train.lr=nan", "train.lr must be a finite number"),
        ("train.lr=1e308", "train.lr must be in"),
        ("train.grad_clip=nan", "train.grad_clip must be a finite number"),
        ("train.grad_clip=-1", "train.grad_clip must be >= 0"),
        ("train.betas=[0.9,nan]", r"train.betas\[1\] must be a finite number"),
        ("train.betas=[0.9]", "train.betas must be two numbers"),
        ("train.ema_decay=1", r"train.ema_decay must be in \[0, 1\)"),
        ("train.weight_decay=-inf", "train.weight_decay must be a finite number"),
        ("train.seed=9223372036854775808", r"train.seed must be in \[0, 2\*\*63\)"),
        ("train.seed=-1", r"train.seed must be in \[0, 2\*\*63\)"),
        ("train.warmup_steps=-5", "train.warmup_steps must be >= 0"),
    ],
)
def test_train_numbers_are_finite_and_in_range(override, message):
    with pytest.raises(ConfigError, match=message):
        config.load("smoke", [override])


FINITE_OR_NOT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.sampled_from(["x", "", None, True])
)


@settings(max_examples=60, deadline=None)
@given(key=st.sampled_from(["lr", "grad_clip", "ema_decay", "weight_decay", "disc_lr", "seed", "steps"]),
       value=FINITE_OR_NOT)  # fmt: skip
def test_property_a_train_number_is_accepted_only_when_finite_and_in_range(key, value):
    """Any value of a numeric train key either builds a config whose numbers are all finite, or is a ConfigError."""
    try:
        cfg = config.from_dict(TrainConfig, {key: value}, "train")
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    for name in ("lr", "grad_clip", "ema_decay", "weight_decay", "disc_lr"):
        assert math.isfinite(getattr(cfg, name))
    assert cfg.lr > 0 and cfg.grad_clip >= 0 and 0 <= cfg.ema_decay < 1 and 0 <= cfg.seed < 2**63


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b\n", "must be a mapping of sections, got a list"),
        ("data: !!python/object/apply:os.system ['touch /tmp/genlab-pwned']\n", "not valid YAML"),
        ("data: {name: digits\n", "not valid YAML"),
        ("base: SELF\ntrain: {steps: 1}\n", "names itself"),
        ("42\n", "got a int"),
    ],
)
def test_bad_presets_are_one_config_error(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("SELF", str(path)))
    with pytest.raises(ConfigError, match=message):
        config.load(str(path))
    assert not Path("/tmp/genlab-pwned").exists()


def test_presets_basing_on_each_other_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="names itself or a preset that bases on it"):
        config.load(str(tmp_path / "a.yaml"))


def test_a_bad_preset_on_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("- a\n")
    r = subprocess.run([sys.executable, "-m", "genlab", "info", "--preset", str(path)], env=ENV, capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_load_safetensors_checked_names_the_file_and_the_problem(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.zeros(2, 3), "b": torch.zeros(3)}, str(good))
    assert set(load_safetensors_checked(good, {"w", "b"}, {"w": (2, 3)})) == {"w", "b"}
    cases = {
        "missing": (None, "missing"),
        "empty": (b"", "too short"),
        "pickle": (b"\x80\x04\x95" + b"\x00" * 40, "header length"),
        "huge": ((10**15).to_bytes(8, "little") + b"{}", "header length"),
        "notjson": ((4).to_bytes(8, "little") + b"\xff\xfe{}", "not JSON"),
        "list": ((2).to_bytes(8, "little") + b"[]", "not a mapping"),
        "truncated": (good.read_bytes()[:-4], "outside the file"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(CorruptFileError, match=message) as e:
            load_safetensors_checked(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CorruptFileError, match="missing b; unexpected x"):
        save_file({"w": torch.zeros(2, 3), "x": torch.zeros(1)}, str(tmp_path / "keys.safetensors"))
        load_safetensors_checked(tmp_path / "keys.safetensors", {"w", "b"})
    with pytest.raises(CorruptFileError, match=r"shape \(2, 3\), expected \(3, 2\)"):
        load_safetensors_checked(good, expected_shapes={"w": (3, 2)})


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample", "--run", "RUN", "--n", str(10**9)], r"--n \(images per class\) must be in \[1, 10,000,000\]"),
        (["sample", "--run", "RUN", "--seed", str(2**63)], r"--seed must be in \[0, 2\*\*63 - 8\]"),
        (["sample", "--run", "RUN", "--seed", "-1"], r"--seed must be in"),
        (["sample", "--run", "RUN", "--device", "tpu"], "--device must be cpu, cuda, cuda:N or mps"),
        (["sample", "--run", "RUN", "--batch-size", "0"], "--batch-size must be in"),
        (["demo", "--run", "RUN", "--port", "99999"], r"--port must be in \[1, 65535\]"),
        (["demo", "--run", "RUN", "--port", "-1"], r"--port must be in \[1, 65535\]"),
    ],
)
def test_numeric_flags_are_checked_before_any_work(args, message, capsys):
    from genlab.cli import main

    assert main(args) == 2  # RUN does not exist: the range is checked before the run is looked at
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")
def test_device_cuda_without_a_gpu_is_one_line(capsys):
    from genlab.cli import main

    assert main(["sample", "--run", "RUN", "--device", "cuda"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@settings(max_examples=40, deadline=None)
@given(n=st.integers(-(2**70), 2**70), seed=st.integers(-(2**70), 2**70), port=st.integers(-(2**20), 2**20))
def test_property_sample_and_demo_numbers_are_refused_in_one_line_or_reach_the_run(n, seed, port, tmp_path_factory):
    """Whatever the numbers, a missing run is reached only with valid ones; everything else is one usage line."""
    import contextlib
    import io

    from genlab import inputs
    from genlab.cli import main

    missing = str(tmp_path_factory.getbasetemp() / "no-such-run")
    for args, valid in (
        (["sample", "--run", missing, "--n", str(n), "--seed", str(seed)],
         1 <= n <= inputs.MAX_IMAGES and 0 <= seed <= inputs.MAX_SEED - n),
        (["demo", "--run", missing, "--port", str(port)], 1 <= port <= 65535),
    ):  # fmt: skip
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(args) == 2
        text = err.getvalue()
        assert text.count("\n") == 1 and "Traceback" not in text
        assert ("does not exist" in text or "no such" in text.lower()) == valid, (args, text)


def test_a_fifo_in_an_image_folder_never_blocks(tmp_path):
    import numpy as np
    from PIL import Image

    from genlab.data.base import DataError
    from genlab.data.imagefolder import ImageFolderDataset, load_image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / c / "ok.png")
    os.mkfifo(tmp_path / "a" / "stuck.png")  # opening it for reading would wait for a writer forever
    ds = ImageFolderDataset(ImageFolderDataset.Config(root=str(tmp_path), resolution=8, num_classes=0))
    assert len(ds) == 2
    with pytest.raises(DataError, match="stuck.png: not a regular file"):
        load_image(str(tmp_path / "a" / "stuck.png"), 8)


def test_a_data_loader_workers_error_is_its_original_message():
    from genlab.data.base import DataError
    from genlab.safeio import one_line

    wrapped = DataError(
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(...)\ngenlab.data.base.DataError: cannot read image a.png: '
        "truncated"
    )
    assert one_line(wrapped) == "cannot read image a.png: truncated (in a DataLoader worker)"


def test_unwritable_outputs_and_foreign_files_are_one_line(tmp_path):
    import errno

    from safetensors import SafetensorError

    from genlab.safeio import file_error_line

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    assert file_error_line(full) == f"{tmp_path / 'x'}: No space left on device"
    assert "corrupt or not one genlab wrote" in file_error_line(SafetensorError("bad header"), "runs/x")
    assert file_error_line(KeyError("a bug")) is None  # not a file problem: stays a traceback
