"""`genlab bench zoo`: every family at one budget, one table (issue 28). The tiny mode trains two smoke presets;
the feature network is a small fixed stand-in (the offline Inception is the evaluators' tests' business)."""

from __future__ import annotations

import json
import math

import pytest
from torch import nn

from genlab import evals
from genlab.bench import zoo
from genlab.cli import main
from genlab.evals.inception import FeatureNet


class PixelFeatures(nn.Module):
    """uint8 (B, 3, H, W) -> ((B, 48) features,): 4x4 average-pooled colours, a fixed and cheap feature map."""

    def forward(self, images):
        x = images.float() / 255
        return (nn.functional.adaptive_avg_pool2d(x, 4).flatten(1),)


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    net = FeatureNet(PixelFeatures(), "zoo-test-pixels", "test", has_logits=False)
    monkeypatch.setattr(evals, "resolve", lambda path=None, device="cpu": net)
    return net


def tiny(out, *extra):
    return ["bench", "zoo", "--tiny", "--out", str(out), "--steps", "3", "--batch", "8", "--n", "24", "--json", *extra]


def test_tiny_zoo_writes_one_table_and_resumes_without_retraining(stand_in, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert main(tiny(out)) == 0
    report = json.loads((out / "zoo.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names == ["dit", "maskgit"]
    for row in report["rows"]:
        assert row["train"]["train_seconds"] > 0 and row["parameters"]["generator"] > 0
        for point in row["points"].values():
            assert math.isfinite(point["fid"]) and point["fid"] > 0
            assert point["ms_per_image"] > 0 and point["gflops_per_image"] > 0 and point["nfe"] >= 1
    assert report["rows"][0]["points"]["euler-4"]["nfe"] == 4  # the point's options reach the sampler
    floor = report["floor"]["digits/train/16px"]
    assert floor is not None and 0 < floor < min(p["fid"] for r in report["rows"] for p in r["points"].values())
    table = (out / "zoo.md").read_text()
    assert "3 optimizer steps x batch 8" in table and "DiT (smoke)" in table and "MaskGIT (smoke)" in table
    assert (out / "zoo.png").stat().st_size > 1000
    trained = {n: (out / "rows" / n / "generator" / "model.safetensors").stat().st_mtime_ns for n in names}

    # an interrupted zoo: one point's result lost; the next call recomputes only that, trains nothing
    result = json.loads((out / "results" / "maskgit.json").read_text())
    kept = result["points"].pop("preset's")
    (out / "results" / "maskgit.json").write_text(json.dumps(result))
    assert main(tiny(out)) == 0
    again = json.loads((out / "results" / "maskgit.json").read_text())
    assert again["points"]["preset's"]["fid"] == pytest.approx(kept["fid"], abs=1e-6)  # same seeds, same images
    assert again["train"] == result["train"]
    assert trained == {n: (out / "rows" / n / "generator" / "model.safetensors").stat().st_mtime_ns for n in names}


def test_zoo_families_subset_and_bad_flags_are_one_line_errors(stand_in, tmp_path, capsys):
    for bad in (["--families", "dit,nosuch"], ["--n", "1"], ["--steps", "0"], ["--families", ","]):
        assert main(tiny(tmp_path / "z", *bad)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "z" / "rows").exists()


def test_every_zoo_row_names_a_preset_and_a_known_tokenizer():
    from genlab import config

    for row in zoo.ROWS:
        cfg = config.load(row.preset)  # every recipe resolves (paths are the zoo's, set when it trains)
        assert row.tokenizer is None or row.tokenizer in zoo.TOKENIZERS, row
        assert row.teacher is None or row.teacher in {r.name for r in zoo.ROWS}
        assert cfg is not None
    for tok in zoo.TOKENIZERS.values():
        assert config.load(tok.preset).task == "tokenizer"
    assert len({r.name for r in zoo.ROWS}) == len(zoo.ROWS)


def test_eval_of_a_run_says_what_it_samples_before_the_long_part(stand_in, smoke_run, capsys):
    """`genlab eval --run` (the quickstart's --eval): one line on stderr naming the images and the sampler before
    sampling starts, --json or not (the bar follows it); stdout holds the result alone."""
    code = main(["eval", "--run", str(smoke_run), "--n", "12", "--metrics", "fid", "--steps", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert json.loads(out)["n"] == 12
    assert f"sampling 12 images of {smoke_run}" in err and "steps 3" in err
