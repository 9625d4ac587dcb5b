"""ENAT (genlab.generators.enat): temporal reuse is exact when nothing new is revealed, given tokens come back,
per-sample seeds, and the disentangled network's bookkeeping."""

import torch

from genlab.generators.base import TokenSpec
from genlab.generators.enat import ENAT, enat_param_count

SPEC = TokenSpec("discrete", (4, 4), vocab_size=32)


def model(seed=0, **kw) -> ENAT:
    torch.manual_seed(seed)
    m = ENAT(ENAT.Config(encoder_depth=2, decoder_depth=1, hidden_size=64, num_heads=4, **kw), spec=SPEC,
             num_classes=10)  # fmt: skip
    with torch.no_grad():  # leave the adaLN-Zero init: zero gates would make every path trivially equal
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def masked_ids(n=3, masked=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 32, (n, 16), generator=g)
    for b in range(n):
        ids[b, torch.randperm(16, generator=g)[:masked]] = 32
    return ids


def test_reuse_equals_a_full_recompute_when_no_token_is_new():
    m, ids, y = model(), masked_ids(), torch.tensor([0, 4, 9])
    full = m.run(ids, y)
    reused = m.run(ids, y, full.cache)
    assert torch.allclose(reused.logits, full.logits, atol=1e-6)
    assert torch.allclose(reused.cache.feats, full.cache.feats, atol=1e-6)


def test_reuse_encodes_the_new_tokens_against_the_cache():
    m, y = model(), torch.tensor([0, 4, 9])
    ids = masked_ids(masked=6)
    prev = ids.clone()
    prev[:, :4] = 32  # a more-masked earlier step: the first 4 positions were revealed since
    cache = m.run(prev, y).cache
    reused, full = m.run(ids, y, cache), m.run(ids, y)
    assert reused.logits.shape == full.logits.shape and not torch.allclose(reused.logits, full.logits, atol=1e-4)
    old = cache.visible
    assert torch.equal(reused.cache.feats[old], cache.feats[old])  # cached features are kept as they are


def test_decoding_returns_given_tokens():
    m = model()
    tokens = torch.randint(0, 32, (2, 4, 4))
    out = m.decode(torch.tensor([1, 2]), torch.arange(2), m.SampleOptions(steps=4, cfg=2.0), tokens=tokens)
    assert torch.equal(out.tokens, tokens)
    known = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    out = m.decode(torch.tensor([1, 2]), torch.arange(2), m.SampleOptions(steps=4), tokens=tokens, known=known)
    assert torch.equal(out.tokens[known], tokens[known]) and (out.tokens < 32).all()


def test_sampling_per_seed_whatever_the_batch():
    m, y = model(), torch.tensor([0, 3, 5, 9])
    for no_reuse in (False, True):
        o = m.SampleOptions(steps=4, cfg=2.0, no_reuse=no_reuse, temperature=2.0)
        a = m.sample(y, torch.arange(4), o).tokens
        assert torch.equal(m.sample(y, torch.arange(4), o).tokens, a)
        split = torch.cat([m.sample(y[:1], torch.arange(1), o).tokens, m.sample(y[1:], torch.arange(1, 4), o).tokens])
        assert torch.equal(split, a)
        assert a.shape == (4, 4, 4) and (a < 32).all()


def test_loss_per_sample_whatever_the_batch_and_reuse_reaches_the_projection():
    m = model().train()
    tokens, y = torch.randint(0, 32, (4, 4, 4)), torch.tensor([0, 3, 5, 9])
    whole = m.loss(tokens, y, torch.arange(4))["loss"]
    parts = torch.stack([m.loss(tokens[i : i + 1], y[i : i + 1], torch.arange(i, i + 1))["loss"] for i in range(4)])
    assert torch.allclose(whole, parts.mean(), atol=1e-5)
    m.loss(torch.randint(0, 32, (16, 4, 4)), torch.arange(16) % 10, torch.arange(16))["loss"].backward()
    assert m.prev_proj.mlp[0].weight.grad.abs().sum() > 0  # some sample went through the reuse path


def test_enat_l_size():
    # 22 + 2 blocks of width 1024: the released model's modules minus its unused prev_embedder (docs/enat_resgen.md)
    assert enat_param_count("l") == 565_904_384
