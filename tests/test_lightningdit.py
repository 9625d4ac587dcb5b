"""LightningDiT's options: DiT config switches, RoPE, the flow objective's time shift and cosine term, the run's
sampling defaults (shift, guidance interval) and the preset's parameter count."""

import json
import math

import pytest
import torch

from genlab import config
from genlab.config import ConfigError
from genlab.generators.dit import DiT, dit_param_count, latent_spec, lightningdit_param_count, swiglu_hidden
from genlab.generators.objectives.flow import FlowSampleOptions, RectifiedFlow, velocity_loss
from genlab.nn import apply_rope, rope_2d
from genlab.samplers import timesteps
from genlab.samplers.schedules import shift_time

# the tiny LightningDiT of this file: 4x4x8 latents, patch 1, depth 2, width 64, 4 heads (head dim 16)
TINY = dict(depth=2, hidden_size=64, num_heads=4, patch_size=1)
ALL_ON = dict(mlp="swiglu", norm="rmsnorm", rope=True, qk_norm=True, adaln="scale_gate")
C, S, K = 8, 4, 10  # channels, side, classes


def tiny(**switches) -> DiT:
    return DiT(DiT.Config(**TINY, **switches), spec=latent_spec(C, S), num_classes=K)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- parameter counts


def lightningdit_reference_count(depth, D, heads, patch, channels, grid, classes, *, frozen_pos_embed) -> int:
    """LightningDiT-XL/1's parameters from the shapes in hustvl/LightningDiT models/lightningdit.py (released
    switches: use_swiglu, use_rmsnorm, use_rope on; use_qknorm, wo_shift, learn_sigma off), written out by hand."""
    patch_embed = channels * patch * patch * D + D  # timm PatchEmbed: Conv2d(C, D, p, p) with bias
    pos_embed = grid * grid * D  # nn.Parameter(requires_grad=False): in model.parameters(), never trained
    t_embedder = 256 * D + D + D * D + D  # Linear(256, D), SiLU, Linear(D, D)
    y_embedder = (classes + 1) * D  # class_dropout_prob > 0 adds the null row
    H = int(2 / 3 * int(D * 4.0))  # SwiGLUFFN(D, int(2/3 * mlp_hidden_dim))
    block = (
        2 * D  # norm1, norm2: RMSNorm(D) with a weight
        + D * 3 * D + 3 * D  # qkv, qkv_bias=True
        + D * D + D  # proj
        + D * 2 * H + 2 * H  # w12
        + H * D + D  # w3
        + D * 6 * D + 6 * D  # adaLN_modulation: Linear(D, 6D)
    )  # fmt: skip
    final = D + D * patch * patch * channels + patch * patch * channels + D * 2 * D + 2 * D  # RMSNorm, linear, adaLN
    rope = 0  # VisionRotaryEmbeddingFast: buffers only
    total = patch_embed + t_embedder + y_embedder + depth * block + final + rope
    return total + pos_embed if frozen_pos_embed else total


def test_lightningdit_xl1_matches_the_paper_and_the_public_module():
    n = lightningdit_param_count("XL/1")  # f16d32 latents: 32 channels, 16x16, patch 1; 1000 classes
    trained = lightningdit_reference_count(28, 1152, 16, 1, 32, 16, 1000, frozen_pos_embed=False)
    assert n == trained == 674_961_824
    # LightningDiT's sum(p.numel() for p in model.parameters()) also counts its frozen sin-cos table (256 x 1152)
    assert lightningdit_reference_count(28, 1152, 16, 1, 32, 16, 1000, frozen_pos_embed=True) == 675_256_736
    assert abs(n - 675e6) / 675e6 < 0.015  # the paper's 675M: 0.006% off


def test_default_dit_is_unchanged():
    model = tiny()
    keys = list(model.state_dict())
    assert not any(s in k for k in keys for s in ("q_norm", "k_norm", "w12", "norm1.weight", "rope"))
    assert model.rope is None
    assert dit_param_count("XL/2") == 674_816_272  # as before the switches (test_dit checks every paper size)


def test_each_switch_costs_what_it_documents():
    D, depth, Dh = 64, 2, 16
    base = n_params(tiny())
    H = swiglu_hidden(D, 4.0)
    assert H == int(2 / 3 * 256) == 170 and swiglu_hidden(1152, 4.0) == 3072
    swiglu = (D * 2 * H + 2 * H + H * D + D) - (D * 4 * D + 4 * D + 4 * D * D + D)
    assert n_params(tiny(mlp="swiglu")) - base == depth * swiglu
    assert n_params(tiny(norm="rmsnorm")) - base == (2 * depth + 1) * D  # a learnable scale per norm
    assert n_params(tiny(rope=True)) - base == 0  # a buffer
    assert n_params(tiny(qk_norm=True)) - base == depth * 2 * 2 * Dh  # LayerNorm(Dh) with weight and bias, q and k
    assert n_params(tiny(qk_norm=True, norm="rmsnorm")) - n_params(tiny(norm="rmsnorm")) == depth * 2 * Dh
    assert n_params(tiny(adaln="scale_gate")) - base == -depth * 2 * (D * D + D)  # no shift_msa, shift_mlp


def test_bad_rope_head_dim_is_a_clear_error():
    with pytest.raises(ConfigError, match="rope needs a head dimension .* divisible by 4"):
        config.load("smoke", ["generator.hidden_size=72", "generator.num_heads=12", "generator.rope=true"])


# ----------------------------------------------------------------------------- forward passes


def _randomise(model: DiT, seed: int, keep: dict | None = None) -> DiT:
    """Every parameter random (N(0, 0.1): adaLN-Zero would hide every difference), except norm weights, which keep
    their init of 1; parameters named in ``keep`` are copied from there."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if keep is not None and name in keep and keep[name].shape == p.shape:
                p.copy_(keep[name])
            elif "norm" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _inputs(n=2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, C, S, S, generator=g), torch.rand(n, generator=g), torch.arange(n) % K


@pytest.mark.parametrize(
    "switch", [dict(mlp="swiglu"), dict(norm="rmsnorm"), dict(rope=True), dict(qk_norm=True), dict(adaln="scale_gate")]
)
def test_each_switch_changes_the_forward_pass(switch):
    x, t, y = _inputs()
    assert torch.count_nonzero(tiny(**switch)(x, t, y)) == 0  # adaLN-Zero init holds with every switch
    off = _randomise(tiny(), seed=0)
    on = _randomise(tiny(**switch), seed=0, keep=dict(off.named_parameters()))
    shared = [k for k, _ in on.named_parameters() if k in dict(off.named_parameters())]
    assert len(shared) >= 10  # same weights wherever the switch leaves the shapes alone
    with torch.no_grad():
        a, b = off(x, t, y), on(x, t, y)
    assert a.shape == b.shape == x.shape
    assert (a - b).abs().max() > 1e-3, f"{switch} did not change the output"


def test_rope_scores_depend_only_on_relative_offsets():
    Dh, grid = 16, 6
    rope = rope_2d(Dh, grid)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(Dh, generator=g), torch.randn(Dh, generator=g)
    N = grid * grid
    rq = apply_rope(q.expand(1, 1, N, Dh), rope)[0, 0]  # the same query at every position, rotated
    rk = apply_rope(k.expand(1, 1, N, Dh), rope)[0, 0]
    scores = (rq @ rk.T).view(grid, grid, grid, grid)  # [r, c, r', c']
    assert torch.allclose(rq.norm(dim=1), q.norm().expand(N), atol=1e-5)  # rotations keep lengths
    assert torch.allclose(torch.diagonal(scores.view(N, N)), (q @ k).expand(N), atol=1e-5)  # no offset: q . k
    for dr, dc in [(1, 0), (0, 2), (3, 1), (2, 3)]:  # move both positions by (dr, dc): the same score
        here = scores[: grid - dr, : grid - dc, : grid - dr, : grid - dc]
        moved = scores[dr:, dc:, dr:, dc:]
        assert torch.allclose(here, moved, atol=1e-5)
    assert scores[0, 0, 0, 1] != pytest.approx(scores[0, 0, 1, 0].item())  # rows and columns rotate differently


def test_rope_table_by_hand():
    # head dim 8: rows use features 0..3, columns 4..7; pairs share the angles pos * 10000^(-2i/4) = pos * (1, 0.01)
    cos, sin = rope_2d(8, 3)
    r, c = 1, 2
    angles = torch.tensor([r, r, r * 0.01, r * 0.01, c, c, c * 0.01, c * 0.01], dtype=torch.float64)
    assert torch.allclose(cos[r * 3 + c].double(), angles.cos(), atol=1e-7)
    assert torch.allclose(sin[r * 3 + c].double(), angles.sin(), atol=1e-7)
    x = torch.tensor([1.0, 2.0, 0, 0, 0, 0, 0, 0]).view(1, 1, 1, 8).expand(1, 1, 9, 8)
    out = apply_rope(x, rope_2d(8, 3))[0, 0, r * 3 + c, :2]  # (1, 2) rotated by angle 1
    expect = torch.tensor([math.cos(1) - 2 * math.sin(1), math.sin(1) + 2 * math.cos(1)])
    assert torch.allclose(out, expect, atol=1e-6)


def test_bf16_autocast_with_rope_and_qk_norm_is_fp32_up_to_bf16_noise():
    model = _randomise(tiny(**ALL_ON), seed=3)
    for name, p in model.named_parameters():  # non-trivial norm scales too
        if "norm" in name:
            p.data.uniform_(0.5, 1.5)
    x, t, y = _inputs(4)
    with torch.no_grad():
        ref = model(x, t, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, y)
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.03, f"bf16 vs fp32 relative error {rel:.4f}"


# ----------------------------------------------------------------------------- the flow objective


class _Zero(torch.nn.Module):
    num_classes = K
    spec = latent_spec(C, S)

    def forward(self, x, t, y):
        return torch.zeros_like(x)


def test_time_shift_moves_the_training_t_as_the_formula_says():
    seeds = torch.arange(64)
    for sampling in ("uniform", "logit_normal"):
        plain = RectifiedFlow(RectifiedFlow.Config(time_sampling=sampling), _Zero()).sample_t(seeds, "cpu")
        shifted = RectifiedFlow(RectifiedFlow.Config(time_sampling=sampling, time_shift=3.0), _Zero()).sample_t(
            seeds, "cpu"
        )
        assert torch.allclose(shifted, 3 * plain / (1 + 2 * plain))
        assert (shifted >= plain).all()  # s > 1 moves every t towards noise
    assert shift_time(torch.tensor([0.5, 0.25, 0.0, 1.0]), 3.0).tolist() == [0.75, 0.5, 0.0, 1.0]  # by hand
    with pytest.raises(ConfigError, match="time_shift must be a positive number"):
        config.load("smoke", ["objective.time_shift=0"])


def test_cosine_term_by_hand():
    target = torch.zeros(1, 2, 1, 2)
    target[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    target[0, :, 0, 1] = torch.tensor([0.0, 1.0])
    assert velocity_loss(3 * target, target, 1.0).item() == pytest.approx(4 * 2 / 4)  # parallel: the MSE alone
    pred = torch.zeros_like(target)
    pred[0, :, 0, 0] = torch.tensor([0.0, 1.0])  # orthogonal: 1 - cos = 1
    pred[0, :, 0, 1] = torch.tensor([0.0, -1.0])  # opposite: 1 - cos = 2
    mse = (1 + 1 + 0 + 4) / 4
    assert velocity_loss(pred, target).item() == pytest.approx(mse)
    assert velocity_loss(pred, target, 1.0).item() == pytest.approx(mse + (1 + 2) / 2)
    assert velocity_loss(pred, target, 0.5).item() == pytest.approx(mse + 0.5 * (1 + 2) / 2)


def test_cosine_weight_in_the_objective():
    x0, y, seeds = torch.randn(3, C, S, S), torch.tensor([0, 1, 2]), torch.arange(3)
    loss = {
        w: RectifiedFlow(RectifiedFlow.Config(cosine_weight=w), _Zero()).loss(x0, y, seeds)["loss"] for w in (0, 1, 2)
    }
    # a zero prediction has cosine 0 with everything (torch's eps), so the term adds exactly w
    assert loss[1].item() == pytest.approx(loss[0].item() + 1)
    assert loss[2].item() == pytest.approx(loss[0].item() + 2)


# ----------------------------------------------------------------------------- sampling conventions


def test_lightningdit_sampling_times_in_genlab_convention():
    """LightningDiT: 250 points linspace(0, 1) (t = 1 data), shifted by 0.3; Euler between them. genlab: 249 steps
    from t = 1 (noise) with shift 1/0.3 give the same times as u = 1 - t."""
    theirs = torch.linspace(0, 1, 250, dtype=torch.float64)
    theirs = 0.3 * theirs / (1 + (0.3 - 1) * theirs)
    ours = timesteps(249, shift=1 / 0.3)
    assert torch.allclose(ours, 1 - theirs, atol=1e-12)
    # guidance where their t >= 0.125 (cfg_interval_start) is guidance where ours <= 0.875
    assert torch.equal(theirs[:-1] >= 0.125, ours[:-1] <= 0.875)


def test_sample_config_validation():
    for bad, match in [
        ("sample.shift=0", r"sample: shift must be in \[0.001, 1000.0\]"),
        ("sample.shift=-2", "shift must be in"),
        ("sample.shift=.inf", "shift must be a finite number"),
        ("sample.cfg_interval=[0.5,0.2]", "cfg_interval must be"),
        ("sample.cfg_interval=[0,1.5]", "cfg_interval must be"),
        ("sample.cfg_interval=[-0.1,1]", "cfg_interval must be"),
        ("sample.cfg_interval=[0.1]", "cfg_interval must be"),
    ]:
        with pytest.raises(ConfigError, match=match):
            config.load("smoke", [bad])
    cfg = config.load("smoke", ["sample.shift=3", "sample.cfg_interval=0.1,0.7"])
    assert cfg.sample.options.shift == 3.0 and cfg.sample.options.cfg_interval == (0.1, 0.7)
    assert FlowSampleOptions().shift == 1.0 and FlowSampleOptions().cfg_interval == (0.0, 1.0)


# ----------------------------------------------------------------------------- presets


def test_tiny_lightningdit_trains_and_samples_with_shift_and_interval(tmp_path, monkeypatch):
    from genlab.pipeline import Pipeline
    from genlab.tasks import train_run

    cfg = config.load("smoke-lightningdit")
    g = cfg.generator.cfg
    assert (g.mlp, g.norm, g.rope, g.qk_norm, g.adaln, g.patch_size) == (
        "swiglu",
        "rmsnorm",
        True,
        True,
        "scale_gate",
        1,
    )
    out = tmp_path / "run"
    train_run(cfg, out)
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) >= 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], f"loss did not decrease: {losses}"

    pipe = Pipeline.load(out)
    assert pipe.tokenizer.token_spec.shape == (12, 4, 4)
    seen = []
    original = type(pipe.generator).sample

    def spy(self, labels, seeds, options):
        seen.append({k: getattr(options, k) for k in ("shift", "cfg_interval", "cfg", "steps")})
        return original(self, labels, seeds, options)

    monkeypatch.setattr(type(pipe.generator), "sample", spy)
    a = pipe.generate([0, 1, 2], seed=0)
    assert seen[-1] == {"shift": 1 / 0.3, "cfg_interval": (0.0, 0.875), "cfg": 2.0, "steps": 8}
    assert a.images.shape == (3, 3, 8, 8) and torch.isfinite(a.images).all() and a.nfe == 8
    b = pipe.generate([0, 1, 2], seed=0, options={"shift": 1.0, "cfg_interval": (0.0, 1.0)})  # a caller's win
    assert seen[-1]["shift"] == 1.0 and seen[-1]["cfg_interval"] == (0.0, 1.0)
    assert not torch.equal(a.images, b.images)


def test_lightningdit_xl1_preset_config():
    data = config.load_preset_dict("imagenet256/lightningdit-xl-1")
    g, o, s, t = data["generator"], data["objective"], data["sample"], data["train"]
    assert (g["depth"], g["hidden_size"], g["num_heads"], g["patch_size"]) == (28, 1152, 16, 1)
    assert (g["mlp"], g["norm"], g["rope"], g["qk_norm"], g["adaln"]) == (
        "swiglu", "rmsnorm", True, False, "shift_scale_gate"
    )  # fmt: skip
    assert (o["time_sampling"], o["cosine_weight"], o["time_shift"]) == ("logit_normal", 1.0, 1.0)
    assert (t["lr"], t["betas"], t["batch_size"], t["ema_decay"], t["mixed_precision"]) == (
        2e-4, [0.9, 0.95], 1024, 0.9999, "bf16"
    )  # fmt: skip
    assert (s["sampler"], s["steps"], s["shift"], s["cfg"], s["cfg_interval"], s["guidance_channels"]) == (
        "euler", 249, 1 / 0.3, 6.7, [0.0, 0.875], 3
    )  # fmt: skip
    assert data["tokenizer"]["name"] == "va-vae"


def test_lightningdit_xl1_preset_counts_through_genlab_info(capsys):
    from genlab.cli import main

    assert main(["info", "--preset", "imagenet256/lightningdit-xl-1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"]["generator"] == 674_961_824
