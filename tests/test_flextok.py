"""FlexTok (1-D tokens, any prefix, a rectified-flow decoder): nested dropout, prefix decoding for every k,
determinism given the seeds, the VAE-latent path, REPA's message, the causal register mask, the presets."""

import pytest
import torch
from tiny import FLEXTOK_TOKENIZER, NET

from genlab import config, registry
from genlab.config import component_from_dict
from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.flextok import keep_counts


def digits(n):
    ds = registry.get("dataset", "digits")(registry.get("dataset", "digits").Config(resolution=16))
    return ds.get_batch(torch.arange(n))["image"]


def build(**over):
    torch.manual_seed(0)
    spec = {**FLEXTOK_TOKENIZER, **over}
    return component_from_dict("tokenizer", spec, "tokenizer").build(resolution=16).eval()


def wake(tok):
    """Non-zero adaLN and output layers (adaLN-Zero starts them at exactly zero: no path from the registers)."""
    with torch.no_grad():
        for p in tok.decoder.final_layer.parameters():
            p.normal_(0, 0.1)
        for b in tok.decoder.blocks:
            b.adaLN_modulation[-1].weight.normal_(0, 0.1)
    return tok


def test_nested_dropout_keep_counts():
    u = torch.rand(4000, generator=torch.Generator().manual_seed(0))
    pow2 = {8: {1, 2, 4, 8}, 16: {1, 2, 4, 8, 16}, 12: {1, 2, 4, 8, 12}}
    for K in (8, 16, 12):
        assert set(keep_counts(u, K, "pow2").tolist()) == pow2[K]
        uni = keep_counts(u, K, "uniform")
        assert uni.min() == 1 and uni.max() == K and len(set(uni.tolist())) == K
        up = keep_counts(u, K, "uniform_pow2")
        assert set(up.tolist()) <= {1, 2, 4, 8, 16, K} and up.max() == K and (up >= uni.clamp_max(K)).all()
        assert (keep_counts(u, K, "none") == K).all()


def test_every_prefix_decodes_and_decoding_is_deterministic_given_the_seed():
    tok = build()
    x = digits(3)
    ids = tok.encode(x)
    K = tok.cfg.num_registers
    assert ids.shape == (3, K) and tok.token_spec.variable_length and tok.token_spec.stochastic_decoder
    seeds = torch.tensor([5, 6, 7])
    outs = {}
    for k in range(1, K + 1):
        img = tok.decode(ids[:, :k], seeds)
        assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()
        outs[k] = img
    assert torch.equal(tok.decode(ids[:, :4], seeds), outs[4])  # same seeds, same images
    assert torch.equal(tok.decode(ids[1:2, :4], seeds[1:2]), outs[4][1:2])  # image i depends on seed i only
    assert not torch.equal(tok.decode(ids[:, :4], seeds + 1), outs[4])
    with pytest.raises(TokenizerError, match="1..8 tokens"):
        tok.decode(ids[:, :0])


def test_the_prefix_reaches_the_decoder():
    tok = wake(build())
    ids = tok.encode(digits(2))
    seeds = torch.tensor([1, 2])
    one, two = tok.decode(ids[:, :1], seeds), tok.decode(ids[:, :2], seeds)
    assert not torch.equal(one, two)
    other = ids.clone()
    other[:, 1] = (other[:, 1] + 1) % tok.token_spec.vocab_size
    assert torch.equal(tok.decode(other[:, :1], seeds), one)  # tokens past the prefix do not matter
    assert not torch.equal(tok.decode(other[:, :2], seeds), two)
    assert tok.decode(ids, seeds, cfg=3.0).shape == (2, 3, 16, 16)  # guidance against the all-masked registers


def test_registers_are_causal_in_the_encoder():
    tok = build()
    x = digits(2)
    base = tok.encoder(x)
    with torch.no_grad():
        tok.encoder.registers[5].add_(1.0)  # a later register's input changes ...
    moved = tok.encoder(x)
    assert torch.equal(moved[:, :5], base[:, :5])  # ... the earlier registers' outputs do not
    assert not torch.equal(moved[:, 5:], base[:, 5:])


def test_training_loss_is_per_sample_and_reaches_the_encoder():
    tok = build().train()
    x = digits(4)
    seeds = torch.tensor([3, 4, 5, 6])
    out = tok.loss({"image": x, "seed": seeds}, 0)
    assert set(tok.LOG_KEYS) - {"repa"} <= set(out) and torch.isfinite(out["loss"])
    with torch.no_grad():
        half = tok.loss({"image": x[:2], "seed": seeds[:2]}, 0)["flow"]
        rest = tok.loss({"image": x[2:], "seed": seeds[2:]}, 0)["flow"]
    assert torch.allclose((half + rest) / 2, out["flow"], atol=1e-5)  # batch split does not change the loss
    wake(tok).loss({"image": x, "seed": seeds}, 0)["loss"].backward()
    assert tok.encoder.proj.weight.grad.abs().sum() > 0  # through FSQ's straight-through estimator


def test_a_vae_latent_target(tmp_path):
    vae = {"name": "kl-vae", "net": {**NET, "ch_mult": [1, 2, 2]}, "embed_dim": 4, "normalize": "none"}
    tok = build(vae=vae)
    assert tok.latent_shape == (4, 4, 4) and not any(p.requires_grad for p in tok.vae.parameters())
    ids = tok.encode(digits(2))
    assert tok.decode(ids[:, :3], torch.tensor([0, 1])).shape == (2, 3, 16, 16)
    tok.train()
    assert not tok.vae.training  # the frozen VAE stays in eval mode


def test_repa_without_its_encoder_is_one_clear_message():
    tok = build(repa={"weight": 0.5, "encoder": {"name": "dinov2", "path": "/no/such/dinov2"}})
    with pytest.raises(TokenizerError, match="repa.encoder.path"):
        tok.training_losses()
    tok = build(repa={"weight": 0.5, "depth": 1, "encoder": {"name": "random-conv", "dim": 16, "layers": 2}})
    losses = tok.training_losses()
    out = tok.train().loss({"image": digits(2), "seed": torch.tensor([0, 1])}, 0, losses)
    assert "repa" in out and torch.isfinite(out["repa"]) and build().training_losses() is None


# genlab's counts (encoder + decoder, the frozen VAE excluded) at widths 64 x depth (module _flextok.yaml)
COUNTS = {"flextok-d12-d12": 215_119_942, "flextok-d18-d18": 722_331_718, "flextok-d18-d28": 1_917_339_078}
VAE_F8C16 = {"name": "kl-vae", "net": {"ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_levels": [],
             "mid_attn": True, "z_channels": 16}, "embed_dim": 16}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(COUNTS))
def test_paper_presets(preset):
    cfg = config.load(f"imagenet256/{preset}")
    assert cfg.tokenizer.cfg.vae["name"] == "run" and cfg.tokenizer.cfg.levels == (8, 8, 8, 5, 5, 5)
    cfg.tokenizer.cfg.vae = VAE_F8C16  # the run it names does not exist here: an f8c16 VAE of the same shape
    with torch.device("meta"):
        tok = cfg.tokenizer.build(resolution=256)
    assert tok.token_spec.shape == (256,) and tok.token_spec.vocab_size == 64_000 and tok.latent_shape == (16, 32, 32)
    assert sum(p.numel() for m in (tok.encoder, tok.decoder) for p in m.parameters()) == COUNTS[preset]


def _flextok_run(tmp_path):
    from genlab.config import RunConfig
    from genlab.runs.store import RunFolder

    run = RunFolder(tmp_path / "flextok")
    run.write_component("tokenizer", FLEXTOK_TOKENIZER, build())
    data = {"task": "tokenizer", "data": {"name": "digits", "resolution": 16}, "tokenizer": FLEXTOK_TOKENIZER}
    run.write_config(RunConfig.from_dict(data).to_dict())
    run.write_class_names([str(i) for i in range(10)])
    return run.path


def test_eval_reports_metrics_per_prefix_length(tmp_path, capsys):
    import json

    from genlab.cli import main

    run = _flextok_run(tmp_path)
    assert main(["eval", "--tokenizer", str(run), "--tokens", "1,4,8", "--no-rfid", "--n", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(out["tokens"]) == ["1", "4", "8"] and all("psnr" in r for r in out["tokens"].values())
    assert main(["eval", "--tokenizer", str(run), "--tokens", "0,9", "--no-rfid", "--n", "8"]) == 2
    assert "prefix lengths must be in 1..8" in capsys.readouterr().err


def test_range_penalty_and_pooled_conditioning():
    tok = build(pooled_cond=True).train()
    x, seeds = digits(2), torch.tensor([0, 1])
    with torch.no_grad():
        tok.encoder.proj.weight.mul_(100)  # push FSQ's inputs far past tanh's range
    out = tok.loss({"image": x, "seed": seeds}, 0)
    assert out["range"] > 0 and torch.allclose(out["loss"], out["flow"] + out["range"])
    assert (
        build(range_weight=0.0).loss({"image": x, "seed": seeds}, 0)["loss"]
        == build().loss({"image": x, "seed": seeds}, 0)["flow"]
    )
    wake(tok).eval()
    ids = tok.encode(x)
    assert tok.decoder.pool is not None and tok.decode(ids[:, :2], seeds).shape == (2, 3, 16, 16)


def test_the_demo_decodes_any_prefix_from_the_token_spec(tmp_path):
    """The Reconstruct tab's token-count slider: shown for a variable-length tokenizer (from its token spec), up
    to N; the handler decodes the first k tokens, deterministically; a count outside 1..N is the app's message."""
    gr = pytest.importorskip("gradio", reason="the demo extra (gradio) is not installed")
    import numpy as np
    from PIL import Image
    from tiny import generator_run

    from genlab.config import RunConfig
    from genlab.demo import Demo, Limits, build_app, load_runs, token_slider
    from genlab.pipeline import Pipeline

    torch.manual_seed(0)
    data = {**generator_run("gpt"), "tokenizer": FLEXTOK_TOKENIZER}
    pipe = Pipeline.from_config(RunConfig.from_dict(data), [str(i) for i in range(10)])
    wake(pipe.tokenizer)
    pipe.save(tmp_path / "flex")
    torch.manual_seed(0)
    Pipeline.from_config(RunConfig.from_dict(generator_run("gpt")), [str(i) for i in range(10)]).save(tmp_path / "vq")
    limits = Limits(max_images=2, max_steps=4)
    runs = load_runs([tmp_path / "flex", tmp_path / "vq"], device="cpu", limits=limits)
    demo = Demo(runs, limits)
    upload = tmp_path / "up.png"
    Image.fromarray(((digits(1)[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(upload)

    seen, one, report = demo.reconstruct("flex", str(upload), 1)
    assert "first 1 of 8 tokens" in report and seen.shape == one.shape == (16, 16, 3)
    tok = runs[0].pipe.tokenizer
    x = torch.from_numpy(seen).permute(2, 0, 1)[None].float().div(127.5).sub(1)
    want = tok.decode(tok.encode(x)[:, :1]).clamp(-1, 1)
    assert np.abs(((want[0].permute(1, 2, 0) + 1) * 127.5).round().numpy() - one).max() <= 1  # uint8 rounding
    assert np.array_equal(demo.reconstruct("flex", str(upload), 1)[1], one)  # deterministic
    assert not np.array_equal(demo.reconstruct("flex", str(upload), 8.0)[1], one)  # the prefix reaches the decoder
    assert "8 tokens" in demo.reconstruct("flex", str(upload))[2]  # no count: all of them
    for bad in (0, 9, 2.5, "x"):
        with pytest.raises(gr.Error, match="token count"):
            demo.reconstruct("flex", str(upload), bad)
    assert "first" not in demo.reconstruct("vq", str(upload), 3)[2]  # a 2-D tokenizer ignores the count

    sliders = {b.label: b for b in build_app(runs, limits).blocks.values() if isinstance(b, gr.Slider)}
    slider = next(b for label, b in sliders.items() if label.startswith("Tokens to decode"))
    assert slider.visible and slider.maximum == 8 and slider.value == 8
    assert token_slider(gr, runs[1])["visible"] is False and token_slider(gr, runs[0])["maximum"] == 8
