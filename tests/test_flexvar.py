"""FlexVAR (genlab.generators.flexvar) on the non-residual multi-scale tokens of tokenizer flexvq: one model samples
at several scale schedules, its KV-cached logits equal the teacher-forced ones, and training on random
sub-schedules learns."""

import pytest
import torch
import torch.nn.functional as F

from genlab.config import component_from_dict, load_preset_dict
from genlab.generators.flexvar import FlexVAR
from genlab.nn.kv_cache import KVCache


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    spec = load_preset_dict("smoke-flexvar")["tokenizer"]  # scales 1,2,3,4 on a 4x4 latent, 32 codes
    return component_from_dict("tokenizer", spec, "tokenizer").build(resolution=16).eval()


def tiny_flexvar(tokenizer, **kw) -> FlexVAR:
    torch.manual_seed(1)
    cfg = FlexVAR.Config(depth=2, hidden_size=32, num_heads=2, **kw)
    model = FlexVAR(cfg, spec=tokenizer.token_spec, num_classes=10, codes=tokenizer.codes())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def test_tokens_are_non_residual_maps_of_one_vq(tokenizer):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    maps = tokenizer.encode(images)
    assert [tuple(m.shape) for m in maps] == [(2, s, s) for s in (1, 2, 3, 4)]
    z = tokenizer.quant_conv(tokenizer.encoder(images))
    for m, s in zip(maps, (1, 2, 3, 4)):  # scale s is the VQ of the latent area-downsampled to s x s
        assert torch.equal(m, tokenizer.quantizer(F.interpolate(z, size=(s, s), mode="area")).indices)
    assert tokenizer.decode(maps[:2]).shape == (2, 3, 16, 16)  # any prefix decodes from its last map


def test_one_model_samples_at_different_schedules(tokenizer):
    model = tiny_flexvar(tokenizer)
    labels, seeds = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    for schedule, side in (((), 16), ((1, 2, 4), 16), ((1, 3), 16), ((1, 2, 3, 4, 6), 24)):
        opts = model.SampleOptions(scales=schedule, cfg=2.5, top_k=10)
        out = model.sample(labels, seeds, opts)
        sides = schedule or (1, 2, 3, 4)
        assert out.nfe == len(sides) and [tuple(t.shape) for t in out.tokens] == [(3, s, s) for s in sides]
        again = model.sample(labels[1:], seeds[1:], opts)  # per-seed and batch-independent
        assert all(torch.equal(a[1:], b) for a, b in zip(out.tokens, again.tokens))
        assert tokenizer.decode(out.tokens).shape == (3, 3, side, side)
    with pytest.raises(ValueError, match="increasing"):
        model.SampleOptions(scales=(2, 1)).validate()


def test_kv_cached_logits_equal_teacher_forced(tokenizer):
    model = tiny_flexvar(tokenizer)
    tokens = tokenizer.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    labels = torch.tensor([3, 10])
    keep = torch.ones(2, 4, dtype=torch.bool)
    inputs = model.sub_schedule_inputs(tokens, keep)  # all scales kept: the tokenizer's teacher forcing
    ref = torch.cat([m.flatten(2).transpose(1, 2) for m in tokenizer.teacher_forcing_inputs(tokens)], 1)
    torch.testing.assert_close(inputs, ref)
    with torch.no_grad():
        full = model(labels, inputs)
        x, c = model.embed(labels, inputs)
        cache = KVCache(len(model.blocks))
        parts = [model.blocks_and_head(x[:, b:e], c, cache=cache) for b, e in model.begin_ends]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_training_on_random_sub_schedules_learns(tokenizer):
    model = tiny_flexvar(tokenizer, class_dropout=0.0)
    with torch.no_grad():  # back to a trainable scale
        for p in model.parameters():
            p.mul_(0.3)
    model.train()
    tokens = tokenizer.encode(torch.rand(4, 3, 16, 16) * 2 - 1)
    labels, seeds = torch.tensor([0, 1, 2, 3]), torch.arange(4)
    a = model.loss(tokens, labels, seeds)["loss"]
    assert torch.equal(a, model.loss(tokens, labels, seeds)["loss"])  # the sub-schedules follow the seeds
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(40):
        out = model.loss(tokens, labels, seeds + 100 * step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.6 * a.item()
