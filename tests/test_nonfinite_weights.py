"""Issue 27: weights holding NaN or infinity are refused when they load (``genlab.safeio.load_safetensors_checked``,
the one checked loader every weight file goes through): one line naming the file and the first bad tensor."""

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import generator_run

from genlab.cli import main
from genlab.config import RunConfig
from genlab.pipeline import Pipeline
from genlab.safeio import CorruptFileError, load_safetensors_checked


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("nan") / "run"
    torch.manual_seed(0)
    Pipeline.from_config(RunConfig.from_dict(generator_run("maskgit")), [str(i) for i in range(10)]).save(path)
    return path


def poison(path, value, nth=2):
    """Put ``value`` into one element of the ``nth`` floating tensor (sorted keys); returns that tensor's name."""
    tensors = load_file(str(path))
    key = [k for k in sorted(tensors) if tensors[k].is_floating_point()][nth]
    tensors[key].view(-1)[tensors[key].numel() // 2] = value
    save_file(tensors, str(path))
    return key


@pytest.mark.parametrize("part", ["generator", "tokenizer"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_a_non_finite_weight_is_one_line_naming_file_and_tensor(run, tmp_path, capsys, part, value):
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    key = poison(bad / part / "model.safetensors", value)
    png = tmp_path / "x.png"
    code = main(["sample", "--run", str(bad), "--n", "1", "--out", str(png)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{bad / part / 'model.safetensors'}: tensor {key!r} holds NaN or infinite values" in err, err
    assert not png.exists()
    for argv in (["info", "--run", str(bad)], ["eval", "--tokenizer", str(bad), "--n", "4"]):
        if part == "generator" and argv[0] == "eval":
            continue  # the tokenizer's evaluation never reads the generator
        assert main(argv) == 2 and key in capsys.readouterr().err


def test_the_checked_loader_names_the_first_bad_tensor_and_lets_integers_be(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")]), "c": torch.tensor([float("inf")]),
               "ids": torch.tensor([-1, 2**31])}, str(f))  # fmt: skip
    with pytest.raises(CorruptFileError, match=r"w.safetensors: tensor 'b' holds NaN"):
        load_safetensors_checked(f)
    assert load_safetensors_checked(f, finite=False)["b"].isnan().any()
    save_file({"ids": torch.tensor([-1, 2**31]), "h": torch.ones(2, dtype=torch.bfloat16)}, str(f))
    assert set(load_safetensors_checked(f)) == {"ids", "h"}
