"""FlowTurbo's refiner trained by the generic trainer, the sampling options of `genlab sample`, `genlab bench sample`."""

import json

import pytest
import torch

from genlab import config
from genlab.cli import main
from genlab.generators.dit import DiT, latent_spec
from genlab.generators.refiner import RefinerTraining, VelocityRefiner
from genlab.pipeline import Pipeline


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def refiner_run(smoke_run, tmp_path_factory):
    """A FlowTurbo refiner for the smoke run, trained a few steps with the preset and the generic trainer."""
    from genlab.tasks import train_run

    out = tmp_path_factory.mktemp("runs") / "smoke-turbo"
    cfg = config.load(
        "flowturbo-refiner",
        [f"base_run={smoke_run}", "train.steps=6", "train.batch_size=8", "train.checkpoint_every=0",
         "refiner.hidden_size=32", "refiner.num_heads=2"],
    )  # fmt: skip
    train_run(cfg, out)
    return out


def test_refiner_loss_falls_against_a_frozen_base():
    torch.manual_seed(0)
    base = DiT(DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=2), spec=latent_spec(3, 8), num_classes=3)
    for p in base.parameters():
        torch.nn.init.normal_(p, std=0.1)
    ref = VelocityRefiner(VelocityRefiner.Config(hidden_size=32, num_heads=2, patch_size=2),
                          spec=latent_spec(3, 8), num_classes=3)  # fmt: skip
    task = RefinerTraining(base, ref)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    assert not any(p.requires_grad for p in base.parameters())
    x0, labels, seeds = torch.randn(8, 3, 8, 8), torch.arange(8) % 3, torch.arange(8)
    opt = torch.optim.AdamW(ref.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = task.loss(x0, labels, seeds)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert all(torch.equal(frozen[k], v) for k, v in base.state_dict().items())


def test_refiner_run_trains_exports_and_samples(refiner_run, smoke_run, tmp_path, capsys):
    assert (refiner_run / "refiner" / "model.safetensors").is_file()
    pipe = Pipeline.load(refiner_run)  # a refiner run loads its base run with the refiner attached
    assert "refiner" in pipe.generator.helpers and "refiner" not in Pipeline.load(smoke_run).generator.helpers
    n_ref, n_base = (sum(p.numel() for p in m.parameters()) for m in (pipe.generator.helpers["refiner"], pipe.weights))
    assert n_ref < n_base
    out = pipe.generate([0, 1, 2], options={"steps": 9, "sampler": "flowturbo", "cfg": 2.0})
    assert out.nfe == 7 and out.nfe_by_network == {"velocity": 7, "refiner": 5}  # H1P5R3, the last R step an Euler step
    code, text, _ = run_cli(capsys, "sample", "--run", str(smoke_run), "--refiner", str(refiner_run), "--classes",
                            "0,1", "--n", "2", "--sampler", "flowturbo", "--blocks", "H1P2R1", "--cfg", "2",
                            "--cfg-interval", "0.2,0.9", "--out", str(tmp_path / "t.png"))  # fmt: skip
    assert code == 0 and "4 NFE + 1 refiner evaluation" in text  # H1P2R1: the R step is the Euler last step


def test_sample_options_change_images_but_not_their_seeds(smoke_run, tmp_path, capsys):
    import numpy as np

    def sample(name, *extra):
        path = tmp_path / f"{name}.npz"
        code, _, err = run_cli(capsys, "sample", "--run", str(smoke_run), "--classes", "3", "--n", "3", "--steps",
                               "4", "--cfg", "2", "--out", str(path), *extra)  # fmt: skip
        assert code == 0, err
        return np.load(path)["arr_0"].astype(int)

    plain = sample("plain")
    assert np.array_equal(plain, sample("all", "--cfg-interval", "0,1"))
    for name, extra in {
        "heun": ["--sampler", "heun"],
        "dpm": ["--sampler", "dpm++", "--schedule", "edm"],
        "unipc": ["--sampler", "unipc", "--shift", "3"],
        "interval": ["--cfg-interval", "0.3,0.6", "--cfg-schedule", "linear"],
    }.items():
        assert np.abs(sample(name, *extra) - plain).max() > 0, name


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sampler", "nope"], "registered samplers: diffusers-euler, dpm++, euler, flowturbo, heun"),
        (["--cfg-interval", "0.5"], "cfg_interval must be LO,HI"),
        (["--cfg-interval", "0.8,0.2"], "0 <= LO <= HI <= 1"),
        (["--cfg-schedule", "square"], "cfg_schedule: must be one of 'constant', 'linear', 'cosine'"),
        (["--schedule", "karras"], "schedule: must be one of 'uniform', 'logit_normal', 'edm'"),
        (["--shift", "0"], "shift must be in [0.001, 1000.0]"),
        (["--blocks", "H1P5R3"], "blocks is an option of sampler flowturbo"),
        (["--sampler", "flowturbo", "--blocks", "H1X"], "must look like H1P5R3"),
        (["--sampler", "flowturbo", "--blocks", "H1P5R3", "--steps", "4"], "take 9 steps"),
        (["--sampler", "flowturbo", "--blocks", "H1P5R3"], "no velocity refiner was given"),
        (["--refiner", "/nonexistent"], "has no trained refiner"),
    ],
)
def test_sample_option_errors_are_one_line(smoke_run, capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "sample", "--run", str(smoke_run), "--out", str(tmp_path / "x.png"), *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_bench_sample_json(refiner_run, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "bench", "sample", "--run", str(refiner_run), "--n", "8", "--nfe", "4,8",
                           "--max-batch", "16", "--no-fid", "--json", "--out", str(tmp_path / "b.json"),
                           "--plot", str(tmp_path / "b.png"))  # fmt: skip
    assert code == 0
    result = json.loads(out)
    from PIL import Image

    assert Image.open(tmp_path / "b.png").size[0] > 100  # the plot (matplotlib is in the dev extra)
    assert json.loads((tmp_path / "b.json").read_text()) == result
    rows = {(r["sampler"], r["budget"]): r for r in result["rows"]}
    assert set(rows) == {(s, n) for s in ("euler", "heun", "dpm++", "unipc", "flowturbo") for n in (4, 8)}
    assert rows[("flowturbo", 8)]["blocks"] == "H1P6R4" and rows[("flowturbo", 8)]["nfe_by_network"] == {
        "velocity": 8,
        "refiner": 7,
    }
    assert (
        rows[("heun", 8)]["steps"] == 4
        and rows[("heun", 8)]["nfe"] == 7
        and all(r["ms_per_image"] > 0 for r in rows.values())
    )
    assert rows[("euler", 8)]["proxy_rmse"] < rows[("euler", 4)]["proxy_rmse"]  # closer to the Heun-128 reference
    assert result["quality"] == "proxy_rmse" and result["rows"][0]["fid"] is None and "FID" in result["fid_note"]
    peer = {p["nfe"]: p for p in result["peer"]}
    assert abs(peer[8]["proxy_rmse"] - rows[("euler", 8)]["proxy_rmse"]) < 1e-4  # diffusers' loop, same Euler
    assert result["throughput"]["rows"][0]["batch"] == 8 and "best_at_8_nfe" in result["targets"]


def test_bench_sample_takes_one_nfe_and_skips_the_samplers_that_cannot(smoke_run, capsys):
    code, out, _ = run_cli(capsys, "bench", "sample", "--run", str(smoke_run), "--n", "4", "--nfe", "1",
                           "--max-batch", "0", "--no-fid", "--json")  # fmt: skip
    assert code == 0
    budgets = {(r["sampler"], r["budget"]) for r in json.loads(out)["rows"]}
    assert ("euler", 1) in budgets and not {("heun", 1), ("flowturbo", 1)} & budgets
    code, _, err = run_cli(capsys, "bench", "sample", "--run", str(smoke_run), "--nfe", "0")
    assert code == 2 and "--nfe values must be >= 1" in err


def test_bench_sample_takes_a_metric(smoke_run):
    from genlab.bench.sample import bench_sample

    seen = []

    def metric(images):
        seen.append(images.shape)
        assert images.dtype == torch.uint8
        return float(images.float().mean())

    result = bench_sample(smoke_run, n=4, samplers=("euler", "dpm++"), nfes=(4,), metric=metric, max_batch=8)
    assert result["quality"] == "fid" and len(seen) == 2 and seen[0] == (4, 3, 16, 16)
    assert all(r["fid"] is not None for r in result["rows"])


def test_bench_sample_uses_genlab_evals_when_present(smoke_run, monkeypatch):
    """The adapter to genlab.evals (resolve, dataset_reference, evaluate), against a stand-in module."""
    import sys
    import types
    from dataclasses import dataclass

    from genlab.bench.sample import bench_sample

    @dataclass
    class Ref:
        n: int = 100

    calls = []
    evals = types.ModuleType("genlab.evals")
    sources = types.ModuleType("genlab.evals.sources")
    sources.ImageSource = type("ImageSource", (), {})
    evals.resolve = lambda device: types.SimpleNamespace(name="inception-stand-in")
    evals.dataset_reference = lambda name, res, net, **kw: (calls.append((name, res, kw["split"])) or Ref(), None, True)
    evals.evaluate = lambda source, ref, net, metrics, **kw: types.SimpleNamespace(
        metrics={"fid": float(source.batch(0, source.n).float().mean())}
    )
    monkeypatch.setitem(sys.modules, "genlab.evals", evals)
    import genlab

    monkeypatch.setattr(genlab, "evals", evals, raising=False)  # `import genlab.evals` reads the package attribute
    monkeypatch.setitem(sys.modules, "genlab.evals.sources", sources)
    result = bench_sample(smoke_run, n=4, samplers=("euler",), nfes=(4,), max_batch=8)
    assert calls == [("digits", 16, "train")] and result["quality"] == "fid"
    assert result["rows"][0]["fid"] > 0 and "against digits train (100 images)" in result["fid_note"]
