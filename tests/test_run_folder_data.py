"""Issue 27: every file of a run folder someone handed over is data, checked before anything is built.

Crafted ``generator/config.json`` / ``tokenizer/config.json`` files, models too large to allocate, and a
``tokenizer/`` folder swapped for another run's each end in one line, exit status 2, with nothing written."""

import json
import shutil
import time

import pytest
import torch
from tiny import generator_run

from genlab.cli import main
from genlab.config import RunConfig
from genlab.pipeline import Pipeline
from genlab.runs.limits import MAX_PARAMETERS

CLASSES = [str(i) for i in range(10)]


def save_run(path, seed=0, name="maskgit"):
    torch.manual_seed(seed)
    Pipeline.from_config(RunConfig.from_dict(generator_run(name)), CLASSES).save(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return save_run(root / "a", 0), save_run(root / "b", 1)


def copy(run, dst):
    shutil.copytree(run, dst)
    return dst


def edit_json(path, fn):
    data = json.loads(path.read_text())
    path.write_text(json.dumps(fn(data)))


def one_line_error(capsys, argv, *, written=None):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("genlab "), err
    if written is not None:
        assert not written.exists(), f"{written} was written"
    return err


def sample(capsys, run, tmp_path):
    png = tmp_path / "out.png"
    return one_line_error(capsys, ["sample", "--run", str(run), "--n", "1", "--out", str(png)], written=png)


def spec_edit(value):
    def fn(d):
        d["token_spec"] = value(d["token_spec"])
        return d

    return fn


CRAFTED = {
    "token_spec kind bogus": (spec_edit(lambda s: {**s, "kind": "bogus"}), "token_spec.kind must be one of"),
    "token_spec a list": (spec_edit(lambda s: [1, 2, 3]), "token_spec must be a JSON object"),
    "token_spec shape of strings": (spec_edit(lambda s: {**s, "shape": ["8", "8"]}), "list of integers"),
    "token_spec unknown field": (spec_edit(lambda s: {**s, "x": 1}), "unknown fields ['x']"),
    "generator a list": (lambda d: {**d, "generator": [1, 2, 3]}, "generator: needs a 'name'"),
    "depth and width 100000": (
        lambda d: {**d, "generator": {**d["generator"], "depth": 100000, "hidden_size": 100000, "num_heads": 1}},
        "parameters",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_generator_config_is_one_line(runs, tmp_path, capsys, case):
    run = copy(runs[0], tmp_path / "run")
    fn, want = CRAFTED[case]
    edit_json(run / "generator" / "config.json", fn)
    t0 = time.perf_counter()
    err = sample(capsys, run, tmp_path)
    assert want in err and ("generator/config.json" in err or "generator" in err), err
    assert time.perf_counter() - t0 < 30  # counted, never allocated
    if case == "depth and width 100000":
        assert f"{MAX_PARAMETERS:,}" in err
        assert f"{MAX_PARAMETERS:,}" in one_line_error(capsys, ["info", "--run", str(run)])


def test_a_tokenizer_config_too_large_is_refused_with_its_number(runs, tmp_path, capsys):
    run = copy(runs[0], tmp_path / "run")
    edit_json(run / "tokenizer" / "config.json", lambda d: {**d, "net": {**d["net"], "ch": 100000}})
    err = sample(capsys, run, tmp_path)
    assert "tokenizer/config.json" in err and "parameters" in err, err
    err = one_line_error(capsys, ["info", "--run", str(run)])
    assert "tokenizer/config.json" in err and "parameters" in err, err


def test_a_preset_too_large_is_refused_by_info_and_train(tmp_path, capsys):
    big = ["generator.depth=100000", "generator.hidden_size=100000", "generator.num_heads=1"]
    err = one_line_error(capsys, ["info", "--preset", "smoke-maskgit", *big])
    assert f"{MAX_PARAMETERS:,}" in err, err
    out = tmp_path / "out"
    err = one_line_error(capsys, ["train", "--preset", "smoke-maskgit", "--out", str(out), *big], written=out)
    assert f"{MAX_PARAMETERS:,}" in err, err


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"vqgan"', "\xff\xfe not utf-8"])
def test_a_tokenizer_run_whose_config_is_not_a_mapping_is_one_line(runs, tmp_path, capsys, content):
    tok = copy(runs[0], tmp_path / "tok")
    (tok / "tokenizer" / "config.json").write_bytes(content.encode("latin-1"))
    out = tmp_path / "out"
    argv = ["train", "--preset", "smoke-maskgit", "--out", str(out), "tokenizer.name=run", f"tokenizer.path={tok}"]
    err = one_line_error(capsys, argv, written=out)
    assert str(tok / "tokenizer" / "config.json") in err, err


def test_a_swapped_tokenizer_folder_is_refused(runs, tmp_path, capsys):
    run = copy(runs[0], tmp_path / "run")
    shutil.rmtree(run / "tokenizer")
    shutil.copytree(runs[1] / "tokenizer", run / "tokenizer")  # the same token spec, other weights
    err = sample(capsys, run, tmp_path)
    assert "is not the tokenizer" in err and "fingerprint" in err, err
    edit_json(run / "tokenizer" / "config.json", lambda d: {**d, "quantizer": {**d["quantizer"], "beta": 0.5}})
    assert "is not the tokenizer" in sample(capsys, run, tmp_path)  # same weights, another config


def test_a_run_without_a_fingerprint_still_loads(runs, tmp_path):
    run = copy(runs[0], tmp_path / "run")
    edit_json(run / "generator" / "config.json", lambda d: {k: v for k, v in d.items() if k != "tokenizer_fingerprint"})
    assert main(["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "ok.png")]) == 0
    assert (tmp_path / "ok.png").is_file()
