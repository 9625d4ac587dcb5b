"""γ (CTM's γ-sampling) as a user control: `genlab sample --gamma`, the demo's γ slider (shown for runs whose
sampling options take γ, whatever the family), `genlab bench sample --gamma`; bad values are one line, status 2."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from tiny import TINY, generator_run

from genlab.cli import main
from genlab.config import RunConfig
from genlab.pipeline import Pipeline

CLASSES = [str(i) for i in range(10)]
BAD = [("nan", "finite"), ("-0.1", "[0"), ("1.5", "[0"), ("inf", "finite")]


def saved(tmp_path_factory, objective: dict, name: str):
    """A tiny DiT run under ``objective``, random weights (its output layer too), saved as a run folder."""
    run = generator_run("dit")
    run["objective"] = objective
    run["sample"] = {"steps": 2} if objective["name"] == "ctm" else run["sample"]
    torch.manual_seed(0)
    pipe = Pipeline.from_config(RunConfig.from_dict(run), CLASSES)
    torch.nn.init.normal_(pipe.weights.final_layer.linear.weight, std=0.05)
    path = tmp_path_factory.mktemp("gamma") / name
    pipe.save(path)
    return path


@pytest.fixture(scope="module")
def ctm_run(tmp_path_factory):
    return saved(tmp_path_factory, {"name": "ctm", **TINY["objective"]["ctm"]}, "ctm")


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    return saved(tmp_path_factory, {"name": "flow"}, "flow")


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- genlab sample


def test_genlab_sample_takes_gamma_and_refuses_bad_values(ctm_run, flow_run, capsys, tmp_path):
    out = tmp_path / "s.npz"
    code, _, _ = cli(capsys, "sample", "--run", str(ctm_run), "--n", "1", "--steps", "3", "--gamma", "0.5",
                     "--out", str(out))  # fmt: skip
    assert code == 0
    import numpy as np

    half = np.load(out)["arr_0"]
    cli(capsys, "sample", "--run", str(ctm_run), "--n", "1", "--steps", "3", "--gamma", "0", "--out", str(out))
    assert not np.array_equal(half, np.load(out)["arr_0"])  # γ re-noises between the jumps
    for value, message in BAD:
        code, _, err = cli(capsys, "sample", "--run", str(ctm_run), "--gamma", value, "--out", str(tmp_path / "x.png"))
        assert code == 2 and message in err and one_line(err), err
    code, _, err = cli(capsys, "sample", "--run", str(flow_run), "--gamma", "0.5", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "gamma" in err and one_line(err), err  # a flow run's sampling takes no γ


# ----------------------------------------------------------------------------- the demo

gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")


@pytest.fixture(scope="module")
def demo(ctm_run, flow_run):
    from genlab.demo import Demo, Limits, load_runs

    limits = Limits(max_images=4, max_steps=8)
    return Demo(load_runs([ctm_run, flow_run], device="cpu", limits=limits), limits)


def test_the_demo_shows_gamma_for_runs_whose_sampling_takes_it(demo):
    ctm, flow = demo.run("ctm"), demo.run("flow")
    assert ctm.takes_gamma and not flow.takes_gamma  # read from the runs' sampling options, not their names
    assert "deterministic" in ctm.gamma_label() and flow.gamma_label() == ""
    from genlab.demo import gamma_slider

    assert gamma_slider(gr, flow, 0.0)["visible"] is False
    shown = gamma_slider(gr, ctm, 0.3)
    assert shown["visible"] is True and shown["value"] == 0.3 and shown["label"].startswith("γ")


def test_the_demo_samples_with_gamma_and_writes_it_into_the_command(demo):
    gallery, _, _, _, command = demo.generate("ctm", ["3"], 2, "euler", 3, 1.0, 5, 0.0, 1.0, 0.4)
    assert shlex.split(command)[shlex.split(command).index("--gamma") + 1] == "0.4"
    want = demo.run("ctm").pipe.generate([3, 3], seed=5, options={"steps": 3, "cfg": 1.0, "gamma": 0.4})
    from genlab.data import to_uint8

    assert all((g[0] == w).all() for g, w in zip(gallery, to_uint8(want.images).permute(0, 2, 3, 1).numpy()))
    zero = demo.generate("ctm", ["3"], 2, "euler", 3, 1.0, 5, 0.0, 1.0, 0.0)[0]
    assert not all((a[0] == b[0]).all() for a, b in zip(gallery, zero))
    *_, flow_command = demo.generate("flow", ["3"], 1, "euler", 2, 1.0, 5, 0.0, 1.0, 0.4)  # ignored there
    assert "--gamma" not in flow_command


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.5, "x", [0.5]])
def test_the_demo_refuses_bad_gamma(demo, value):
    with pytest.raises(gr.Error, match="γ"):
        demo.generate("ctm", ["3"], 1, "euler", 2, 1.0, 5, 0.0, 1.0, value)


def test_the_page_has_one_gamma_slider_visible_for_a_ctm_run(ctm_run, flow_run):
    from genlab.demo import build_app, load_runs

    for first, visible in ((ctm_run, True), (flow_run, False)):
        app = build_app(load_runs([first], device="cpu"))
        sliders = [c for c in app.config["components"] if str(c["props"].get("label", "")).startswith("γ")]
        assert len(sliders) == 1 and sliders[0]["props"]["visible"] is visible


# ----------------------------------------------------------------------------- genlab bench sample


def test_bench_sample_takes_gamma(ctm_run, flow_run, capsys):
    code, out, _ = cli(capsys, "bench", "sample", "--run", str(ctm_run), "--n", "4", "--nfe", "2,4", "--gamma",
                       "0.25", "--no-fid", "--max-batch", "0", "--json")  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert result["gamma"] == 0.25 and [r["gamma"] for r in result["rows"]] == [0.25, 0.25]
    assert [r["nfe"] for r in result["rows"]] == [2, 4]
    for value, message in BAD:
        code, _, err = cli(capsys, "bench", "sample", "--run", str(ctm_run), "--gamma", value)
        assert code == 2 and message in err and one_line(err), err
    code, _, err = cli(capsys, "bench", "sample", "--run", str(flow_run), "--n", "4", "--gamma", "0.5", "--no-fid")
    assert code == 2 and "takes no γ" in err and one_line(err), err
