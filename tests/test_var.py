"""VAR (genlab.generators.var): the block-causal mask, KV-cached vs teacher-forced logits, per-seed sampling,
the guidance ramp at cfg 1, training on a small batch, and the parameter counts of the released sizes."""

import pytest
import torch

from genlab.config import component_from_dict, load_preset_dict
from genlab.generators.var import VAR, block_causal_mask, guided_logits, var_param_count
from genlab.nn import per_sample_rand
from genlab.nn.kv_cache import KVCache
from genlab.nn.sampling import filter_logits, sample_from_logits


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    spec = load_preset_dict("smoke-var")["tokenizer"]  # scales 1,2,3,4 on a 4x4 latent, 32 codes
    return component_from_dict("tokenizer", spec, "tokenizer").build(resolution=16).eval()


def tiny_var(tokenizer, *, noisy: bool = True, **kw) -> VAR:
    torch.manual_seed(1)
    cfg = VAR.Config(depth=2, hidden_size=32, num_heads=2, **kw)
    model = VAR(cfg, spec=tokenizer.token_spec, num_classes=10, codes=tokenizer.codes())
    if noisy:  # VAR's init makes every block nearly the identity (gamma 1e-5); perturb so that attention matters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def test_block_causal_mask_rows_for_scales_1_2_3():
    m = block_causal_mask((1, 2, 3))
    assert m.shape == (14, 14) and m.dtype == torch.bool
    rows = {0: 1}  # row -> number of leading columns it attends to: scale 0 sees itself
    rows.update({r: 5 for r in range(1, 5)})  # scale 1 (4 positions) sees scales 0 and 1
    rows.update({r: 14 for r in range(5, 14)})  # scale 2 (9 positions) sees everything
    for r, n in rows.items():
        expected = torch.tensor([True] * n + [False] * (14 - n))
        assert torch.equal(m[r], expected), r
    # VAR's construction: d = scale index of each position, mask where d_row >= d_col
    d = torch.tensor([0] + [1] * 4 + [2] * 9)
    assert torch.equal(m, d[:, None] >= d[None, :])


@pytest.mark.parametrize("l2", [True, False])
def test_kv_cached_logits_equal_teacher_forced(tokenizer, l2):
    model = tiny_var(tokenizer, attn_l2_norm=l2)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    tokens = tokenizer.encode(images)
    labels = torch.tensor([1, 4, 10])  # 10: the null class
    with torch.no_grad():
        full = model(labels, model.teacher_forcing(tokens))  # (B, L, V), block-causal mask
        x, c = model.embed(labels, model.teacher_forcing(tokens))
        cache, parts = KVCache(model.spec.num_positions), []
        for b, e in model.begin_ends:  # one scale per forward, attending to the cached prefix
            parts.append(model.blocks_and_head(x[:, b:e], c, cache=cache))
    assert len(cache) == model.spec.num_positions
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_sampling_is_deterministic_per_seed_and_batch_independent(tokenizer):
    model = tiny_var(tokenizer)
    opts = model.SampleOptions(cfg=1.5, top_k=20, top_p=0.9)
    labels, seeds = torch.tensor([1, 2, 3]), torch.tensor([5, 6, 7])
    a = model.sample(labels, seeds, opts)
    b = model.sample(labels, seeds, opts)
    one = model.sample(labels[1:2], seeds[1:2], opts)
    assert a.nfe == 4 and [t.shape for t in a.tokens] == [(3, s, s) for s in (1, 2, 3, 4)]
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))
    assert all(torch.equal(x[1:2], y) for x, y in zip(a.tokens, one.tokens))
    other = model.sample(labels, torch.tensor([8, 9, 10]), opts)
    assert not all(torch.equal(x, y) for x, y in zip(a.tokens, other.tokens))
    assert tokenizer.decode(a.tokens).shape == (3, 3, 16, 16)


def test_cfg_one_is_the_conditional_pass(tokenizer):
    """cfg 1 gives t = 0 at every scale: the tokens are those drawn from the conditional logits alone (recomputed
    here teacher-forced on the sampled maps, with the same per-sample uniforms)."""
    cond, uncond = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    assert torch.equal(guided_logits(torch.cat([cond, uncond]), 2, 0.0), cond)
    model = tiny_var(tokenizer)
    opts = model.SampleOptions(cfg=1.0, top_k=10, top_p=0.0, temperature=0.8)
    labels, seeds = torch.tensor([0, 7]), torch.tensor([3, 4])
    maps = model.sample(labels, seeds, opts).tokens
    with torch.no_grad():
        logits = model(labels, model.teacher_forcing(maps))
    for k, (b, e) in enumerate(model.begin_ends):
        lk = filter_logits(logits[:, b:e] / 0.8, 10, 0.0)
        ids = sample_from_logits(lk, per_sample_rand(seeds, (model.scales[k] ** 2,), stream=k))
        assert torch.equal(ids, maps[k].flatten(1)), k


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    p = logits.softmax(-1)[0]  # 0.032, 0.087, 0.237, 0.644
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7))
    assert kept.tolist() == [[False, False, True, True]] and p[2:].sum() >= 0.7
    assert torch.equal(sample_from_logits(logits, torch.tensor([0.999])), torch.tensor([3]))


def test_loss_falls_when_overfitting_a_small_batch(tokenizer):
    model = tiny_var(tokenizer, noisy=False, class_dropout=0.0).train()
    tokens = tokenizer.encode(torch.rand(4, 3, 16, 16) * 2 - 1)
    labels, seeds = torch.tensor([0, 1, 2, 3]), torch.arange(4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = model.loss(tokens, labels, seeds)
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert set(out) == {"loss", "acc"}
    assert out["loss"].item() < 0.5 * first and out["acc"].item() > 0.5


def test_class_dropout_and_drop_path_follow_the_seeds(tokenizer):
    model = tiny_var(tokenizer, drop_path=0.5, class_dropout=0.5).train()
    tokens = tokenizer.encode(torch.rand(3, 3, 16, 16) * 2 - 1)
    labels, seeds = torch.tensor([0, 1, 2]), torch.tensor([11, 12, 13])
    torch.manual_seed(0)
    a = model.loss(tokens, labels, seeds)["loss"]
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(a, model.loss(tokens, labels, seeds)["loss"])


# VAR's README: 310M, 600M, 1.0B, 2.0B. The public model (FoundationVision/VAR @78b9539, build_vae_var with
# attn_l2_norm, no shared adaLN) counted on the meta device gives exactly these numbers too.
@pytest.mark.parametrize(
    "depth,count", [(16, 310_283_520), (20, 600_917_136), (24, 1_033_399_360), (30, 2_010_020_356)]
)
def test_param_counts_of_the_released_sizes(depth, count):
    assert var_param_count(depth) == count


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_presets_build_the_released_sizes(depth):
    data = load_preset_dict(f"imagenet256/var-d{depth}")
    with torch.device("meta"):
        tok = component_from_dict("tokenizer", data["tokenizer"], "tokenizer").build(resolution=256)
        gen = component_from_dict("generator", data["generator"], "generator").build(
            spec=tok.token_spec, num_classes=1000
        )
    assert sum(p.numel() for p in gen.parameters()) == var_param_count(depth)
    assert tok.token_spec.scales == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert data["sample"] == {"per_class": 4, "grid_classes": 8, "seed": 0, "cfg": 2.5, "top_k": 900, "top_p": 0.96, "temperature": 1.0}


def test_masked_attention_bf16_cpu_path_matches_sdpa():
    from genlab.nn.attention import attention

    q, k, v = (torch.randn(2, 2, 14, 8) for _ in range(3))
    mask = block_causal_mask((1, 2, 3))
    ref = attention(q, k, v, mask=mask, scale=0.3)  # fp32: SDPA
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask=mask, scale=0.3)  # the explicit product
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
