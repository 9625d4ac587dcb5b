"""TiTok (1-D tokens): the bottleneck, both recipes (single-stage; two-stage against a teacher run), the usage
warning, the paper presets' parameter counts against the public models."""

import pytest
import torch
from tiny import NET, TITOK_TOKENIZER

from genlab import config, registry
from genlab.config import RunConfig, component_from_dict
from genlab.runs.store import RunFolder
from genlab.tasks.base import init_from
from genlab.tasks.titok import TiTokRun, TiTokRunConfig
from genlab.tasks.tokenizer import TokenizerTraining

TEACHER = {
    "name": "vqgan",
    "net": NET,
    "embed_dim": 4,
    "quantizer": {"name": "vq", "codebook_size": 16},
    "loss": {"perceptual": "none", "disc_weight": 0.0},
}  # fmt: skip  (f2: 16x16 digits -> 8x8 codes)
STAGE1 = {**TITOK_TOKENIZER, "patch_size": 2, "head": "legacy", "proxy": TEACHER}  # an 8x8 decoder grid


def digits(n, start=0):
    ds = registry.get("dataset", "digits")(registry.get("dataset", "digits").Config(resolution=16))
    return ds.get_batch(torch.arange(start, start + n))["image"]


def build(spec, resolution=16):
    torch.manual_seed(0)
    return component_from_dict("tokenizer", dict(spec), "tokenizer").build(resolution=resolution)


def test_the_decoder_sees_only_the_latent_tokens():
    tok = build(TITOK_TOKENIZER).eval()
    x = digits(4)
    ref_ids, ref_img = tok.encode(x), tok.decode(tok.encode(x))
    T = 1 + tok.grid**2  # class token + patches come first in the encoder's sequence

    def perturb(lo, hi):
        def hook(module, args, out):
            out = out.clone()
            out[:, lo:hi] += 10 * torch.randn_like(out[:, lo:hi])
            return out

        return tok.encoder.transformer.register_forward_hook(hook)

    handle = perturb(0, T)  # every patch (and class) output: the decoder must not notice
    assert torch.equal(tok.encode(x), ref_ids)
    assert torch.equal(tok.decode(tok.encode(x)), ref_img)
    handle.remove()
    handle = perturb(T, T + 8)  # the latent outputs: the tokens change (so the test can fail)
    assert not torch.equal(tok.encode(x), ref_ids)
    handle.remove()


def test_tokens_codes_and_decode_agree():
    tok = build(TITOK_TOKENIZER).eval()
    x = digits(2)
    q = tok.quantize(x)
    ids = tok.encode(x)
    assert ids.shape == (2, 8) and torch.equal(q.indices.flatten(1), ids)
    assert torch.allclose(tok.indices_to_codes(ids), q.codes.squeeze(2), atol=1e-6)
    assert torch.allclose(tok.decode(ids), tok.decode_codes(q.codes.squeeze(2)), atol=1e-6)
    with pytest.raises(Exception, match="expected token ids"):
        tok.decode(ids[:, :4])


def stage1_ce(tok, teacher, images):
    with torch.no_grad():
        codes = tok.quantize(images).codes.squeeze(2)
        logits = tok.decoder_output(codes)
        return torch.nn.functional.cross_entropy(logits, teacher.encode(images)).item()


def test_stage1_learns_the_teachers_codes_better_than_a_random_decoder():
    teacher = build(TEACHER).eval()
    tok = build(STAGE1)
    tok.load_proxy(teacher.state_dict())
    train, held_out = digits(64), digits(32, start=64)
    random_ce = stage1_ce(tok.eval(), teacher, held_out)
    opt = torch.optim.Adam([p for p in tok.parameters() if p.requires_grad], lr=3e-3)
    tok.train()
    for step in range(40):
        x = train[(step * 16) % 64 :][:16]
        out = tok.loss({"image": x, "proxy_codes": teacher.encode(x)}, step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    trained_ce = stage1_ce(tok.eval(), teacher, held_out)
    assert trained_ce < 0.8 * random_ce, (trained_ce, random_ce)
    # the proxy decoder is the teacher's: the legacy head's pixels come out of it
    assert torch.equal(
        tok.proxy.decoder.state_dict()["conv_out.weight"], teacher.decoder.state_dict()["conv_out.weight"]
    )


def _teacher_run(tmp_path):
    teacher = build(TEACHER)
    RunFolder(tmp_path / "teacher").write_component("tokenizer", TEACHER, teacher)
    data = {"task": "tokenizer", "data": {"name": "digits", "resolution": 16}, "tokenizer": TEACHER}
    RunFolder(tmp_path / "teacher").write_config(RunConfig.from_dict(data).to_dict())
    RunFolder(tmp_path / "teacher").write_class_names([str(i) for i in range(10)])
    return teacher


def _titok_run(tmp_path, tokenizer, **extra):
    train = {"steps": 3, "batch_size": 8, "log_every": 1, "ema_decay": 0.0, "tensorboard": False, **extra}
    data = {"task": "titok", "data": {"name": "digits", "resolution": 16}, "tokenizer": tokenizer, "train": train,
            "teacher": {"run": str(tmp_path / "teacher")}, "sample": {"per_class": 2}}  # fmt: skip
    return TiTokRunConfig.from_dict(data)


def test_two_stage_recipe_through_the_task(tmp_path):
    """Stage 1 against a teacher run (its codes, its proxy weights, its sha256 recorded); stage 2 from stage 1's
    weights (train.init_from) with the encoder frozen and the decoder trained on pixels."""
    teacher = _teacher_run(tmp_path)
    stage1 = _titok_run(tmp_path, {k: v for k, v in STAGE1.items() if k != "proxy"})
    TiTokRun.train(stage1, tmp_path / "s1")
    run = RunFolder(tmp_path / "s1")
    cfg = run.read_config()
    assert cfg.task == "titok" and len(cfg.teacher.sha256) == 64 and cfg.tokenizer.cfg.proxy["name"] == "vqgan"
    w1 = run.read_weights("tokenizer")
    assert torch.equal(w1["proxy.quantizer.codebook"], teacher.quantizer.codebook.detach())
    assert any("ce" in line for line in (tmp_path / "s1" / "metrics.jsonl").read_text().splitlines())

    s2_tok = {**STAGE1, "freeze_encoder": True}
    stage2 = _titok_run(tmp_path, s2_tok, init_from=f"{tmp_path / 's1'}:tokenizer")
    TiTokRun.train(stage2, tmp_path / "s2")
    w2 = RunFolder(tmp_path / "s2").read_weights("tokenizer")
    frozen = [k for k in w1 if k.startswith(("encoder.", "latent_tokens", "quantizer.codebook"))]
    assert frozen and all(torch.equal(w1[k], w2[k]) for k in frozen)
    assert not torch.equal(w1["head.ffn.2.weight"], w2["head.ffn.2.weight"])  # the decoder trained on pixels


def test_init_from_refuses_a_run_that_does_not_fit(tmp_path):
    _teacher_run(tmp_path)
    tok = build(TITOK_TOKENIZER)
    with pytest.raises(config.ConfigError, match="train.init_from: .*teacher/tokenizer"):
        init_from(config.TrainConfig(init_from=str(tmp_path / "teacher")), {"tokenizer": tok})
    with pytest.raises(config.ConfigError, match="does not exist"):
        init_from(config.TrainConfig(init_from=str(tmp_path / "nowhere")), {"tokenizer": tok})


def test_stage1_without_a_teacher_is_one_clear_error(tmp_path):
    cfg = _titok_run(tmp_path, {k: v for k, v in STAGE1.items() if k != "proxy"})
    cfg.teacher = None
    with pytest.raises(config.ConfigError, match="teacher.run"):
        TiTokRun.train(cfg, tmp_path / "out")


def test_usage_and_perplexity_are_shown_and_collapse_warns(capsys):
    model = TokenizerTraining(build(TITOK_TOKENIZER))
    assert {"usage", "perplexity"} <= set(model.log_keys) and model.bar_keys == ("usage", "perplexity")
    model.on_log(10, {"usage": 0.5})
    assert "warning" not in capsys.readouterr().err
    model.on_log(20, {"usage": 0.03})
    assert "codebook usage 3.0% < 5%" in capsys.readouterr().err


# TiTok's public models: bytedance/1d-tokenizer @ 942a96f, modeling/titok.py TiTok(config) built from
# configs/training/TiTok/stage{1,2}/titok_*.yaml and counted on the meta device. Stage 1 (encoder, decoder with the
# legacy head, quantizer, latent tokens) must match exactly; the released stage-2 checkpoint adds the MaskGIT-VQGAN
# decoder and codebook (30,740,483), which genlab's proxy (imagenet256/maskgit-vqgan's quantizer + decoder,
# 30,829,955) matches to 0.3% (genlab's res-block convs have biases).
PUBLIC = {"titok-l-32": (610_314_252, 641_054_735), "titok-b-64": (174_073_612, 204_814_095),
          "titok-s-128": (52_934_156, 83_674_639)}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PUBLIC))
def test_paper_presets_match_the_public_parameter_counts(preset):
    cfg = config.load(f"imagenet256/{preset}")
    assert cfg.task == "titok" and isinstance(cfg, TiTokRunConfig)
    with torch.device("meta"):
        tok = cfg.tokenizer.build(resolution=256)
    total = sum(p.numel() for p in tok.parameters())
    own = total - sum(p.numel() for p in tok.proxy.parameters())
    stage1, released = PUBLIC[preset]
    assert own == stage1
    assert abs(total - released) / released < 0.003
    s2 = config.load(f"imagenet256/{preset}-stage2")
    assert s2.tokenizer.cfg.freeze_encoder and s2.train.init_from.endswith(":tokenizer")
