import math

import pytest
import torch

from genlab import registry
from genlab.generators.base import GeneratorError, TokenSpec
from genlab.generators.maskgit import MASKGIT_SIZES, MaskGIT, maskgit_param_count
from genlab.nn.sampling import sample_from_logits as sample_categorical

VOCAB, CLASSES = 32, 5


def tiny(shape=(4, 4), **cfg) -> MaskGIT:
    torch.manual_seed(0)
    spec = TokenSpec("discrete", shape, vocab_size=VOCAB)
    return MaskGIT(MaskGIT.Config(**{**MASKGIT_SIZES["tiny"], **cfg}), spec=spec, num_classes=CLASSES).eval()


def randomised(model: MaskGIT) -> MaskGIT:
    """Larger random weights, so that logits (and decoding choices) differ clearly between positions and classes."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def opts(**kw) -> MaskGIT.SampleOptions:
    return MaskGIT.SampleOptions(**kw)


def test_registered_and_refuses_other_token_kinds():
    assert registry.get("generator", "maskgit") is MaskGIT
    assert MaskGIT.LOG_KEYS == ("acc",)
    with pytest.raises(GeneratorError, match="discrete"):
        MaskGIT(MaskGIT.Config(), spec=TokenSpec("continuous", (4, 8, 8)), num_classes=2)


def test_paper_parameter_count():
    # google-research/maskgit's ImageNet-256 transformer (24 x 768, 16 heads, MLP 3072, 1024 codes + 1000 classes
    # + [MASK] = 2025 ids, 257 positions) has 172,457,193 parameters, counted from its code; ours adds the null
    # class row (768), a final LayerNorm (1,536) and has a head bias over 1024 codes (not 2025 ids): +1,303.
    n = maskgit_param_count("imagenet256")
    assert n == 172_458_496
    assert n - 172_457_193 == 768 + 1536 - (2025 - 1024)
    # the 227M of the VAR / TiTok tables = this transformer + MaskGIT's 54.5M VQGAN
    assert abs(n + 54_449_283 - 227e6) / 227e6 < 0.005


@pytest.mark.parametrize("shape", [(4, 4), (12,)])
def test_every_token_given_returns_them(shape):
    model = randomised(tiny(shape))
    tokens = torch.randint(0, VOCAB, (3, *shape), generator=torch.Generator().manual_seed(2))
    labels, seeds = torch.tensor([0, 1, CLASSES]), torch.tensor([5, 6, 7])
    out = model.decode(labels, seeds, opts(steps=4, cfg=2.0), tokens, torch.ones_like(tokens, dtype=torch.bool))
    assert torch.equal(out.tokens, tokens)


def test_partially_given_tokens_are_kept_and_the_rest_filled():
    model = randomised(tiny())
    tokens = torch.randint(0, VOCAB, (2, 4, 4), generator=torch.Generator().manual_seed(3))
    known = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(4)) < 0.5
    out = model.decode(torch.tensor([1, 2]), torch.tensor([8, 9]), opts(steps=3), tokens, known).tokens
    assert torch.equal(out[known], tokens[known])
    assert out.min() >= 0 and out.max() < VOCAB  # no [MASK] left


def test_inverse_cdf_draws_follow_the_distribution():
    logits = torch.tensor([0.1, 0.0, 0.6, 0.3]).log().expand(1000, 4)  # a zero-probability id is never drawn
    u = (torch.arange(1000) + 0.5) / 1000
    assert torch.bincount(sample_categorical(logits, u), minlength=4).tolist() == [100, 0, 600, 300]


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_masked_count_follows_the_decoding_schedule(schedule):
    model, T = randomised(tiny()), 5
    o = opts(steps=T, mask_schedule=schedule, cfg=2.0)
    ids = torch.full((2, 16), model.mask_id)
    labels, seeds, unknown0 = torch.tensor([0, 1]), torch.tensor([3, 4]), torch.tensor([16, 16])
    for i in range(T):
        ids = model.decode_step(ids, labels, seeds, o, i, unknown0)
        t = (i + 1) / T
        left = math.floor(16 * (math.cos(math.pi / 2 * t) if schedule == "cosine" else 1 - t))
        assert (ids == model.mask_id).sum(1).tolist() == [left, left]


def test_greedy_decoding_with_one_token_per_step_is_deterministic():
    model = randomised(tiny())
    labels = torch.tensor([0, 1, 2])
    o = opts(steps=16, temperature=0.0, choice_temperature=0.0)
    a = model.sample(labels, torch.tensor([1, 2, 3]), o)
    b = model.sample(labels, torch.tensor([40, 50, 60]), o)  # no randomness left: the seeds do not matter
    assert a.nfe == 16 and torch.equal(a.tokens, b.tokens)


def test_same_seed_same_tokens_and_batch_size_independence():
    model = randomised(tiny())
    labels, seeds = torch.tensor([0, 1, 2, 3]), torch.tensor([11, 12, 13, 14])
    o = opts(steps=6, cfg=3.0, temperature=1.0, choice_temperature=4.5)
    whole = model.sample(labels, seeds, o).tokens
    assert whole.shape == (4, 4, 4)
    assert torch.equal(whole, model.sample(labels, seeds, o).tokens)
    halves = torch.cat([model.sample(labels[:2], seeds[:2], o).tokens, model.sample(labels[2:], seeds[2:], o).tokens])
    assert torch.equal(whole, halves)
    assert not torch.equal(whole, model.sample(labels, seeds + 100, o).tokens)  # the seed does matter


def test_cfg_one_is_the_conditional_pass_alone(monkeypatch):
    model = randomised(tiny())
    ids = torch.randint(0, VOCAB + 1, (2, 16), generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([1, 3])
    cond, uncond = model(ids, labels), model(ids, torch.full_like(labels, CLASSES))
    assert torch.allclose(model.guided_logits(ids, labels, 2.5), uncond + 2.5 * (cond - uncond), atol=1e-5)
    assert torch.equal(model.guided_logits(ids, labels, 1.0), cond)
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda i, y: seen.append(y.clone()) or forward(i, y))
    for schedule in ("constant", "linear"):
        model.sample(labels, torch.tensor([1, 2]), opts(steps=4, cfg=1.0, cfg_schedule=schedule))
    assert seen and all(torch.equal(y, labels) for y in seen)  # never a null-class pass


def test_linear_cfg_ramps_with_the_mask_ratio(monkeypatch):
    model = randomised(tiny())
    weights = []
    guided = model.guided_logits
    monkeypatch.setattr(model, "guided_logits", lambda i, y, w: weights.append(w) or guided(i, y, w))
    model.sample(torch.tensor([0]), torch.tensor([0]), opts(steps=4, cfg=3.0, cfg_schedule="linear"))
    expected = [1 + 2.0 * (1 - math.cos(math.pi / 2 * i / 4)) for i in range(4)]
    assert weights == pytest.approx(expected)
    assert weights[0] == 1.0


def test_loss_is_independent_of_batch_composition():
    model = tiny()
    tokens = torch.randint(0, VOCAB, (4, 4, 4), generator=torch.Generator().manual_seed(6))
    labels, seeds = torch.tensor([0, 1, 2, 3]), torch.tensor([21, 22, 23, 24])
    whole = model.loss(tokens, labels, seeds)["loss"]
    parts = [model.loss(tokens[i : i + 1], labels[i : i + 1], seeds[i : i + 1])["loss"] for i in range(4)]
    assert torch.allclose(whole, torch.stack(parts).mean(), atol=1e-6)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(whole, model.loss(tokens[perm], labels[perm], seeds[perm])["loss"], atol=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "beta"])
def test_mask_ratios_follow_the_schedule(schedule):
    model = tiny(mask_schedule=schedule)
    r = model.mask_ratio(torch.arange(4000), "cpu")
    mean = 2 / math.pi if schedule == "cosine" else 12 / 15  # E cos(pi/2 u); Beta(12, 3)
    assert abs(r.mean().item() - mean) < 0.01 and 0 <= r.min() and r.max() <= 1


@pytest.mark.parametrize("schedule", ["cosine", "beta"])
def test_masked_ce_falls_when_overfitting_a_small_batch(schedule):
    model = tiny(mask_schedule=schedule, class_dropout=0.0, label_smoothing=0.0).train()
    tokens = torch.randint(0, VOCAB, (8, 4, 4), generator=torch.Generator().manual_seed(7))
    labels, seeds = torch.arange(8) % CLASSES, torch.arange(8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        out = model.loss(tokens, labels, seeds * 1000 + step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.65 * first, (first, last)
    assert 0.0 <= out["acc"].item() <= 1.0 and not out["acc"].requires_grad


@pytest.mark.parametrize(
    "bad",
    [
        dict(steps=0),
        dict(steps=2.5),
        dict(cfg=float("nan")),
        dict(cfg=float("inf")),
        dict(cfg=-1.0),
        dict(temperature=-0.1),
        dict(temperature=float("nan")),
        dict(choice_temperature=float("inf")),
        dict(cfg_schedule="cosine"),
        dict(mask_schedule="beta"),
    ],
)
def test_sample_options_refuse_bad_values(bad):
    with pytest.raises(ValueError):
        opts(**bad).validate()


def test_more_steps_than_tokens_is_refused():
    with pytest.raises(GeneratorError, match="at most the number of tokens"):
        tiny().sample(torch.tensor([0]), torch.tensor([0]), opts(steps=17))


def test_config_refuses_bad_values():
    for bad in (dict(hidden_size=60, num_heads=8), dict(label_smoothing=1.0), dict(class_dropout=-0.1)):
        with pytest.raises(ValueError):
            MaskGIT.Config(**bad).validate()


# ----------------------------------------------------------------------------- presets


def preset_parts(name: str):
    """The preset's generator Config and SampleOptions, checked as the config loader checks components."""
    from genlab.config import SampleSection, from_dict, load_preset_dict

    data = load_preset_dict(name)
    gen = dict(data["generator"])
    assert gen.pop("name") == "maskgit" and "objective" not in data
    sample = {k: v for k, v in data["sample"].items() if k not in SampleSection.GRID_KEYS}
    options = from_dict(MaskGIT.SampleOptions, sample, "sample")
    options.validate()
    return data, from_dict(MaskGIT.Config, gen, "generator"), options


def test_smoke_preset_trains_and_samples_on_its_tokenizer():
    from genlab.config import component_from_dict

    data, cfg, options = preset_parts("smoke-maskgit")
    tok = component_from_dict("tokenizer", data["tokenizer"], "tokenizer").build(resolution=16).eval()
    assert tok.token_spec.shape == (8, 8) and tok.token_spec.vocab_size == 64
    torch.manual_seed(0)
    model = MaskGIT(cfg, spec=tok.token_spec, num_classes=10, codes=tok.codes())
    images, labels = torch.rand(8, 3, 16, 16) * 2 - 1, torch.arange(8)
    with torch.no_grad():
        tokens = tok.encode(images)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):
        out = model.loss(tokens, labels, torch.arange(8) + 8 * step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    out = model.eval().sample(labels[:2], torch.tensor([0, 1]), options)
    assert out.tokens.shape == (2, 8, 8) and out.nfe == options.steps
    assert tok.decode(out.tokens).shape == (2, 3, 16, 16)


def test_quickstart_and_imagenet_presets_resolve():
    from genlab import config

    assert config.load("quickstart-vq").task == "tokenizer"
    data, cfg, options = preset_parts("quickstart-maskgit")
    assert data["tokenizer"] == {"name": "run", "path": "runs/quickstart-vq"}
    data, cfg, options = preset_parts("imagenet256/maskgit")
    assert data["task"] == "generator" and data["tokenizer"]["quantizer"]["codebook_size"] == 1024
    assert {k: getattr(cfg, k) for k in MASKGIT_SIZES["imagenet256"]} == MASKGIT_SIZES["imagenet256"]
    assert options.steps == 8 and options.choice_temperature == 4.5
