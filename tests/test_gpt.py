"""The GPT over tokens: KV-cached logits equal the full pass, sampling is per-seed and batch-size independent, CFG 1
is the conditional pass, top-k 1 is argmax, the loss falls, and LlamaGen's sizes count as its code builds them."""

import math
from functools import partial

import pytest
import torch

from genlab import registry
from genlab.generators.base import GeneratorError
from genlab.generators.gpt import GPT, decode, gpt_param_count, guidance_scales
from genlab.nn.kv_cache import KVCache
from genlab.nn.sampling import sample_tokens
from genlab.tokenizers.base import TokenSpec

pick_tokens = partial(sample_tokens, rule="sorted")  # the GPT's rule (LlamaGen's)

V, C = 32, 10  # vocabulary, classes


def tiny_gpt(shape=(4, 4), *, variable_length=False, seed=0, **cfg) -> GPT:
    torch.manual_seed(seed)
    spec = TokenSpec("discrete", shape, vocab_size=V, variable_length=variable_length)
    model = GPT(GPT.Config(**cfg), spec=spec, num_classes=C).eval()
    for p in model.parameters():  # the zero output head would make every logit equal
        torch.nn.init.normal_(p, std=0.2)
    return model


class MockModel:
    """Logits from the last input alone (a class row at position 0, a token row after); records what it is fed."""

    def __init__(self, vocab=7, classes=C):
        self.vocab, self.table = (
            vocab,
            torch.randn(vocab + classes + 1, vocab, generator=torch.Generator().manual_seed(1)),
        )
        self.seen = []

    def forward_step(self, x, cache, pos):
        assert isinstance(cache, KVCache) and x.shape[1] == 1
        self.seen.append((pos, x[:, 0].clone()))
        return self.table[x + (self.vocab if pos == 0 else 0)]  # (B, 1, vocab)


def options(**kw) -> GPT.SampleOptions:
    o = GPT.SampleOptions(**kw)
    o.validate()
    return o


def test_registered_as_a_generator_of_discrete_tokens():
    cls = registry.get("generator", "gpt")
    assert cls is GPT and cls.ROLE == "generator" and cls.TOKEN_KINDS == ("discrete",) and cls.LOG_KEYS == ("acc",)
    with pytest.raises(GeneratorError, match="discrete"):
        GPT(GPT.Config(), spec=TokenSpec("continuous", (4, 8, 8)), num_classes=C)


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (12,)], ids=["2d-rope", "2d-rope-hxw", "1d-rope"])
def test_kv_cached_logits_equal_full_recompute(shape):
    model = tiny_gpt(shape)
    N = model.spec.num_positions
    seq = torch.cat([torch.tensor([[3], [C]]), torch.randint(0, V, (2, N - 1))], dim=1)  # a class and the null class
    with torch.no_grad():
        full = model(seq)  # (2, N, V)
        cache = KVCache(N)
        steps = [model.forward_step(seq[:, :1], cache, 0), model.forward_step(seq[:, 1:4], cache, 1)]  # a block too
        steps += [model.forward_step(seq[:, i : i + 1], cache, i) for i in range(4, N)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_sampling_is_per_seed_and_batch_size_independent():
    model = tiny_gpt()
    opts = options(temperature=1.0, top_k=8, top_p=0.9, cfg=2.0, cfg_schedule="linear")
    labels, seeds = torch.tensor([1, 2, 3, 1]), torch.tensor([10, 11, 12, 13])
    out = model.sample(labels, seeds, opts)
    assert out.tokens.shape == (4, 4, 4) and out.nfe == 16
    assert torch.equal(model.sample(labels, seeds, opts).tokens, out.tokens)  # same seeds, same tokens
    for i in range(4):  # alone, or in a batch of another size and order, image i is the same
        assert torch.equal(model.sample(labels[i : i + 1], seeds[i : i + 1], opts).tokens[0], out.tokens[i])
    flipped = model.sample(labels.flip(0)[:3], seeds.flip(0)[:3], opts).tokens
    assert torch.equal(flipped, out.tokens.flip(0)[:3])
    assert not torch.equal(out.tokens[0], out.tokens[3])  # same class, other seed


def test_mock_model_sampling_is_per_seed_and_batch_independent():
    mock = MockModel()
    opts = options(temperature=1.0, top_p=0.8)
    labels, seeds = torch.tensor([0, 4, 4]), torch.tensor([5, 6, 7])
    batch = decode(mock, labels, seeds, 9, opts, null_class=C)
    assert batch.shape == (3, 9) and [pos for pos, _ in mock.seen] == list(range(9))
    for i in range(3):
        assert torch.equal(decode(mock, labels[i : i + 1], seeds[i : i + 1], 9, opts, null_class=C)[0], batch[i])


def test_cfg_one_is_the_conditional_pass():
    mock = MockModel()
    decode(mock, torch.tensor([2, 3]), torch.tensor([0, 1]), 5, options(cfg=1.0, cfg_schedule="linear"), null_class=C)
    assert all(len(x) == 2 for _, x in mock.seen) and C not in mock.seen[0][1]  # no null rows were run
    guided = MockModel()
    decode(guided, torch.tensor([2, 3]), torch.tensor([0, 1]), 5, options(cfg=3.0), null_class=C)
    assert guided.seen[0][1].tolist() == [2, 3, C, C]  # CFG: conditional and null rows in one batch

    model, labels, seeds = tiny_gpt(), torch.tensor([1, 5]), torch.tensor([3, 4])
    cond = model.sample(labels, seeds, options(cfg=1.0)).tokens
    with torch.no_grad():
        model.cls_embedding.embedding_table.weight[C].normal_()  # the null class cannot matter at cfg 1
    assert torch.equal(model.sample(labels, seeds, options(cfg=1.0)).tokens, cond)
    greedy = model.sample(labels, seeds, options(temperature=0.0)).tokens.flatten(1)
    seq = labels[:, None]
    with torch.no_grad():  # greedy decoding by full recomputation, conditional only
        for _ in range(16):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq[:, 1:], greedy)


def test_top_k_one_is_argmax_and_inverse_cdf_follows_the_probabilities():
    logits, u = torch.randn(64, V), torch.rand(64)
    assert torch.equal(pick_tokens(logits, u, temperature=1.3, top_k=1, top_p=1.0), logits.argmax(-1))
    assert torch.equal(pick_tokens(logits, u, temperature=0.0, top_k=0, top_p=1.0), logits.argmax(-1))
    probs = torch.tensor([0.2, 0.5, 0.3])
    grid = (torch.arange(1000) + 0.5) / 1000  # a uniform grid of draws: counts are the probabilities x 1000
    rows = probs.log().expand(1000, 3)
    counts = pick_tokens(rows, grid, temperature=1.0, top_k=0, top_p=1.0).bincount(minlength=3)
    assert counts.tolist() == [200, 500, 300]
    nucleus = pick_tokens(rows, grid, temperature=1.0, top_k=0, top_p=0.6).bincount(minlength=3)
    assert nucleus.tolist() == [0, 625, 375]  # 0.5 + 0.3 hold >= 0.6: renormalised 5/8, 3/8
    top2 = pick_tokens(rows, grid, temperature=1.0, top_k=2, top_p=1.0).bincount(minlength=3)
    assert top2.tolist() == [0, 625, 375]


def test_guidance_schedules():
    assert guidance_scales(4.0, "constant", 3) == [4.0, 4.0, 4.0]
    assert guidance_scales(4.0, "linear", 4) == [1.0, 2.0, 3.0, 4.0]
    assert guidance_scales(4.0, "linear", 1) == [4.0]
    with pytest.raises(ValueError, match="cfg_schedule"):
        options(cfg_schedule="cosine")
    with pytest.raises(ValueError, match="top_p"):
        options(top_p=0.0)


def test_variable_length_sequences_sample_a_prefix():
    model = tiny_gpt((12,), variable_length=True)
    out = model.sample(torch.tensor([1, 2]), torch.tensor([0, 1]), options(num_tokens=5))
    assert out.tokens.shape == (2, 5) and out.nfe == 5
    full = model.sample(torch.tensor([1, 2]), torch.tensor([0, 1]), options(temperature=0.0)).tokens
    prefix = model.sample(torch.tensor([1, 2]), torch.tensor([0, 1]), options(temperature=0.0, num_tokens=5)).tokens
    assert torch.equal(full[:, :5], prefix)
    with pytest.raises(GeneratorError, match="variable-length"):
        tiny_gpt().sample(torch.tensor([1]), torch.tensor([0]), options(num_tokens=5))


def test_loss_falls_when_overfitting_a_batch():
    torch.manual_seed(0)
    model = GPT(GPT.Config(class_dropout=0.0), spec=TokenSpec("discrete", (4, 4), vocab_size=V), num_classes=C)
    tokens, labels, seeds = torch.randint(0, V, (8, 4, 4)), torch.arange(8) % C, torch.arange(8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = model.loss(tokens, labels, seeds)
    assert set(first) == {"loss", "acc"} and first["loss"].item() == pytest.approx(math.log(V), abs=1e-4)
    for _ in range(60):
        out = model.loss(tokens, labels, seeds)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["loss"].item() < 0.5 * first["loss"].item() and out["acc"].item() > 0.5


def test_class_dropout_is_per_sample():
    model = tiny_gpt(class_dropout=0.5)
    tokens, labels, seeds = torch.randint(0, V, (6, 4, 4)), torch.arange(6), torch.arange(6) * 7
    with torch.no_grad():
        batch = [model.loss(tokens[i : i + 1], labels[i : i + 1], seeds[i : i + 1])["loss"] for i in range(6)]
        assert torch.stack(batch).mean().item() == pytest.approx(model.loss(tokens, labels, seeds)["loss"].item())


def test_llamagen_sizes_count_as_its_code_builds_them():
    # LlamaGen's gpt.py GPT_B / GPT_L (c2i, vocab 16384, 1 class token, 1001-row class table), built on the meta device
    assert gpt_param_count("B") == 110_888_448  # "111M"
    assert gpt_param_count("L") == 342_910_976  # "343M"


def test_smoke_preset_builds_trains_and_decodes():
    """smoke-gpt's sections, built directly (the pipeline wiring of discrete generators is the lead's): the GPT fits
    the untrained tokenizer's digit tokens and its samples decode to images."""
    import genlab.data  # noqa: F401  (registers the datasets)
    import genlab.tokenizers  # noqa: F401  (registers the tokenizers)
    from genlab import config

    raw = config.load_preset_dict("smoke-gpt")
    data = config.component_from_dict("dataset", raw["data"], "data").build()
    torch.manual_seed(0)
    tokenizer = config.component_from_dict("tokenizer", raw["tokenizer"], "tokenizer").build(resolution=16).eval()
    spec = tokenizer.token_spec
    assert spec.kind == "discrete" and spec.grid == (8, 8) and spec.vocab_size == 64
    model = config.component_from_dict("generator", raw["generator"], "generator").build(spec=spec, num_classes=10)
    batch = data.get_batch(torch.arange(32))
    with torch.no_grad():
        tokens = tokenizer.encode(batch["image"])  # (32, 8, 8) ids
    opt = torch.optim.AdamW(model.parameters(), lr=raw["train"]["lr"], betas=raw["train"]["betas"])
    losses = []
    for step in range(25):
        out = model.loss(tokens, batch["label"], torch.arange(32) + 1000 * step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])  # from log 64 = 4.16 to about 3.4
    fields = GPT.SampleOptions.fields()
    opts = options(**{k: v for k, v in raw["sample"].items() if k in fields})
    sampled = model.sample(torch.arange(4), torch.arange(4), opts)
    assert sampled.tokens.shape == (4, 8, 8) and sampled.nfe == 64
    with torch.no_grad():
        assert tokenizer.decode(sampled.tokens).shape == (4, 3, 16, 16)


def test_bench_against_transformers_llama_runs_at_tiny_size():
    pytest.importorskip("transformers")
    from genlab.bench import gpt as bench_gpt

    s = bench_gpt.SIZES["tiny"]
    for result in (bench_gpt.bench_train(0.5, 1, sizes=("tiny",)), bench_gpt.bench_sample(0.5, 1, sizes=("tiny",))):
        r = result["sizes"]["tiny"]
        assert r["genlab_tok_s"] > 0 and r["transformers_tok_s"] > 0 and r["rounds"] >= bench_gpt.MIN_ROUNDS
        assert r["ratio"] == pytest.approx(r["genlab_tok_s"] / r["transformers_tok_s"], rel=0.01)
        # the same model but for genlab's class table (classes + 1 rows) where Llama has a token in its place
        assert r["genlab_params"] - r["transformers_params"] == (s.classes + 1) * s.width
        assert len(result["load_avg_1min"]) == 2
