"""The genlab command: sampling from a run, info, and one-line errors with exit status 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genlab.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_png_one_row_per_class_and_same_seed_same_images(smoke_run, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path in (a, b):
        code, out, _ = run_cli(
            capsys,
            "sample",
            "--run",
            str(smoke_run),
            "--classes",
            "0,3,7",
            "--n",
            "4",
            "--steps",
            "4",
            "--out",
            str(path),
        )
        assert code == 0 and "4 NFE" in out
    img = np.asarray(Image.open(a))
    assert img.shape[0] == 3 * 18 + 2 and img.shape[2] == 3  # 3 rows of 16 px images, 2 px padding
    assert img.shape[1] > 4 * 18 + 2  # 4 images per row, right of a column with the class names
    assert np.array_equal(img, np.asarray(Image.open(b)))


def test_sample_npz_by_class_name_independent_of_batch_size(smoke_run, tmp_path, capsys):
    paths = [tmp_path / "x.npz", tmp_path / "y.npz"]
    for path, bs in zip(paths, ("64", "3")):
        code, _, _ = run_cli(capsys, "sample", "--run", str(smoke_run), "--classes", "7,2", "--n", "5", "--steps", "3",
                             "--cfg", "2", "--batch-size", bs, "--out", str(path))  # fmt: skip
        assert code == 0
    x, y = np.load(paths[0]), np.load(paths[1])
    assert x["arr_0"].shape == (10, 16, 16, 3) and x["arr_0"].dtype == np.uint8
    assert list(x["labels"]) == [7] * 5 + [2] * 5
    assert np.abs(x["arr_0"].astype(int) - y["arr_0"].astype(int)).max() <= 1  # float reassociation at most


def test_sample_in_bf16_is_close_to_fp32_and_a_bad_precision_is_one_line(smoke_run, tmp_path, capsys):
    """--precision bf16 (autocast) moves images by a little, never by a whole image; fp32 is the default."""
    outs = {}
    for prec in ("fp32", "bf16"):
        path = tmp_path / f"{prec}.npz"
        code, _, _ = run_cli(capsys, "sample", "--run", str(smoke_run), "--classes", "1,4", "--n", "4", "--steps", "4",
                             "--precision", prec, "--out", str(path))  # fmt: skip
        assert code == 0
        outs[prec] = np.load(path)["arr_0"].astype(int)
    diff = np.abs(outs["fp32"] - outs["bf16"])
    assert 0 < diff.max() and diff.mean() < 8  # bf16 changes the numbers, not the picture
    bad = subprocess.run([sys.executable, "-m", "genlab", "sample", "--run", str(smoke_run), "--precision", "fp16"],
                         capture_output=True, text=True)  # fmt: skip
    assert (
        bad.returncode == 2 and "argument --precision: invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    )
    from genlab.pipeline import Pipeline

    with pytest.raises(ValueError, match="precision must be one of"):
        Pipeline.load(smoke_run).generate([0], precision="int8")


def test_info_json_counts_paper_models_quickly(capsys):
    code, out, _ = run_cli(capsys, "info", "--preset", "imagenet256/dit-xl-2", "--json")
    assert code == 0
    info = json.loads(out)
    assert abs(info["params"]["generator"] - 675e6) / 675e6 < 0.01
    assert info["params"]["tokenizer"] > 80e6  # SD-VAE, counted on the meta device without weights
    assert info["config"]["generator"]["depth"] == 28


def test_info_of_a_run(smoke_run, capsys):
    code, out, _ = run_cli(capsys, "info", "--run", str(smoke_run), "--json")
    assert code == 0 and json.loads(out)["params"]["generator"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--run", "RUN", "--classes", "banana"], "unknown class 'banana'"),
        (["sample", "--run", "RUN", "--classes", "12"], "class id 12 is out of range"),
        (["sample", "--run", "RUN", "--steps", "0"], "steps must be in [1, 10000], got 0"),
        (["sample", "--run", "RUN", "--cfg", "-1"], "cfg must be in [0.0, 100.0], got -1.0"),
        (["sample", "--run", "RUN", "--n", "0"], "--n must be positive"),
        (["sample", "--run", "/nonexistent/run"], "does not exist"),
        (["train", "--preset", "smoke", "data.resolution=18"], "not divisible by the patch size 4"),
        (["train", "--preset", "smoke", "generator.dpeth=2"], "unknown key generator.dpeth"),
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--preset", "smoke", "--resume", "/nonexistent/ckpt"], "no such checkpoint directory"),
        (["info", "--preset", "smoke", "--run", "x"], "exactly one of"),
        (["train", "--preset", "imagenet256/dit-s-2", "data.root=/nonexistent"], "/nonexistent"),
    ],
)
def test_bad_input_exits_2_with_one_line(smoke_run, tmp_path, capsys, argv, message):
    argv = [str(smoke_run) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_incomplete_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("{}")
    code, _, err = run_cli(capsys, "sample", "--run", str(tmp_path / "half"))
    assert code == 2 and "not a finished genlab run" in err


@pytest.mark.slow
def test_an_npz_sampled_by_two_processes_is_the_one_process_file(smoke_run, tmp_path, capsys):
    """50,000-image batches are shared over torchrun's processes; image i still comes from seed i."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun missing")
    args = ["sample", "--run", str(smoke_run), "--classes", "all", "--n", "3", "--steps", "3", "--batch-size", "4"]
    assert run_cli(capsys, *args, "--out", str(tmp_path / "one.npz"))[0] == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "genlab", "--", *args, "--out",
                          str(tmp_path / "two.npz")], env=env, capture_output=True, text=True)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    one, both = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert both["arr_0"].shape == (30, 16, 16, 3) and list(both["labels"]) == list(one["labels"])
    assert np.abs(one["arr_0"].astype(int) - both["arr_0"].astype(int)).max() <= 1  # float reassociation at most
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]  # no part files left
