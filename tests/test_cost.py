"""Counted cost (genlab.bench.cost): GFLOPs per image from FlopCounterMode over real sampling runs."""

import json

import torch
from tiny import generator_run

from genlab.bench.cost import count_flops, count_sampling, preset_cost
from genlab.config import RunConfig
from genlab.pipeline import Pipeline

CLASSES = [str(i) for i in range(10)]


def pipeline(name: str, **changes) -> Pipeline:
    run = generator_run(name)
    run["generator"].update(changes)
    torch.manual_seed(0)
    return Pipeline.from_config(RunConfig.from_dict(run), CLASSES).eval()


def test_a_flow_model_costs_nfe_forwards():
    pipe = pipeline("dit")
    spec = pipe.tokenizer.token_spec
    x, t, y = torch.randn(2, *spec.shape), torch.rand(2), torch.tensor([0, 1])
    forward, _ = count_flops(pipe.generator.backbone, x, t, y)
    assert forward > 0
    for steps in (3, 5):
        cost = count_sampling(pipe, options={"steps": steps, "cfg": 1.0, "sampler": "euler"})
        assert cost["nfe"] == steps
        assert cost["generator_gflops_per_image"] * 2 * 1e9 == steps * forward  # batch 2: NFE x the forward
    guided = count_sampling(pipe, options={"steps": 3, "cfg": 2.0, "sampler": "euler"})
    assert guided["generator_gflops_per_image"] * 2 * 1e9 == 2 * 3 * forward  # the guided pair: twice the batch


def test_masked_generators_cost_grows_with_steps():
    pipe = pipeline("maskgit")
    four, eight = (count_sampling(pipe, options={"steps": s, "cfg": 1.0}) for s in (4, 8))
    assert four["generator_gflops_per_image"] > 0 and four["decode_gflops_per_image"] > 0
    assert abs(eight["generator_gflops_per_image"] - 2 * four["generator_gflops_per_image"]) < 1e-12
    assert eight["gflops_per_image"] > four["gflops_per_image"]


def test_enat_reuse_and_disentangling_count_fewer_flops():
    enat, maskgit = pipeline("enat", encoder_depth=2), pipeline("maskgit", depth=3)  # same widths, 3 blocks each
    o = {"steps": 4, "cfg": 1.0}
    reuse = count_sampling(enat, options=o)["generator_gflops_per_image"]
    full = count_sampling(enat, options={**o, "no_reuse": True})["generator_gflops_per_image"]
    dense = count_sampling(maskgit, options=o)["generator_gflops_per_image"]
    assert 0 < reuse < full < dense


def test_info_shows_the_cost_and_skips_big_presets(capsys):
    from genlab import config
    from genlab.cli import main

    assert main(["info", "--preset", "smoke-maskgit", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    assert cost["gflops_per_image"] > 0 and cost["nfe"] == 8
    assert main(["info", "--preset", "smoke-maskgit", "--no-cost", "--json"]) == 0
    assert "cost" not in json.loads(capsys.readouterr().out)
    assert "not_counted" in preset_cost(config.load("imagenet256/maskgit"))
