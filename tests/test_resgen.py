"""ResGen (genlab.generators.resgen): the mixture head's likelihood, deepest-first masking, re-quantization
into the tokenizer's codes, and sampling steps that do not grow with the RVQ depth."""

import math

import torch

from genlab.config import component_from_dict
from genlab.generators.resgen import ResGen, mog_log_prob, resgen_param_count

NET = {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [], "mid_attn": False, "z_channels": 8,
       "norm_groups": 8}  # fmt: skip


def tokenizer(depth: int):
    spec = {"name": "rqvae", "net": NET, "embed_dim": 4, "quantizer": {"name": "rvq", "depth": depth,
            "vq": {"codebook_size": 16}}, "loss": {"perceptual": "none", "disc_weight": 0.0}}  # fmt: skip
    torch.manual_seed(0)
    return component_from_dict("tokenizer", spec, "tokenizer").build(resolution=16).eval()


def model(depth: int = 3) -> ResGen:
    tok = tokenizer(depth)
    torch.manual_seed(0)
    cfg = ResGen.Config(depth=2, hidden_size=32, num_heads=2, components=3)
    return ResGen(cfg, spec=tok.token_spec, num_classes=10, codes=tok.codes()).eval(), tok


def test_mixture_log_likelihood_by_hand():
    # two 1-D components: pi = (0.25, 0.75), mu = (0, 2), sigma = (1, 0.5), at z = 1
    logits = torch.log(torch.tensor([0.25, 0.75]))
    mu, log_sigma = torch.tensor([[0.0], [2.0]]), torch.log(torch.tensor([[1.0], [0.5]]))
    n = lambda x, m, s: math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))  # noqa: E731
    expected = math.log(0.25 * n(1, 0, 1) + 0.75 * n(1, 2, 0.5))  # -1.95571...
    assert abs(mog_log_prob(torch.tensor([1.0]), logits, mu, log_sigma).item() - expected) < 1e-6
    # 2-D, one component: the sum of the two dimensions' Gaussian log-densities
    got = mog_log_prob(torch.tensor([0.5, -1.0]), torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, 2))
    assert abs(got.item() - (math.log(n(0.5, 0, 1)) + math.log(n(-1.0, 0, 1)))) < 1e-6


def test_training_masks_the_deepest_depths_first():
    m, _ = model(depth=4)
    n = m.training_mask(torch.arange(6), 64, "cpu")  # (6, 64) masked depths per position
    assert n.shape == (6, 64) and n.min() >= 0 and n.max() <= 4 and (n.sum(1) >= 1).all()
    ids = torch.randint(0, 16, (6, 64, 4))
    visible, masked = m.split_sum(ids, n)
    e = m.code_embeddings(ids)
    assert torch.allclose(visible + masked, e.sum(2), atol=1e-6)  # the two parts of the stack's cumulative code
    p = (n == 1).nonzero()[0]  # a position with its finest code alone masked
    assert torch.allclose(masked[p[0], p[1]], e[p[0], p[1], 3], atol=1e-6)


def test_requantization_makes_the_tokenizers_codes():
    m, tok = model(depth=3)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = tok.quant_conv(tok.encoder(images)).permute(0, 2, 3, 1).reshape(2, 64, 4)  # the latent RVQ quantizes
    x = tok.encode(images).reshape(2, 64, 3)
    assert torch.equal(m.requantize(z, torch.zeros_like(x), torch.full((2, 64), 3)), x)
    # with the first depth known, the rest come from the residual left by it
    first = m.code_embeddings(x)[:, :, 0]
    out = m.requantize(z - first, x * torch.tensor([1, 0, 0]), torch.full((2, 64), 2))
    assert torch.equal(out, x)


def test_sampling_steps_do_not_depend_on_the_depth():
    calls = {}
    for depth in (2, 4, 8):
        m, tok = model(depth)
        count = [0]
        m.blocks[0].register_forward_hook(lambda *a, c=count: c.__setitem__(0, c[0] + 1))
        out = m.sample(torch.tensor([1, 2]), torch.arange(2), m.SampleOptions(steps=5, cfg=2.0))
        assert out.nfe == 5 and out.tokens.shape == (2, 8, 8, depth) and (out.tokens < 16).all()
        assert tok.decode(out.tokens).shape == (2, 3, 16, 16)
        calls[depth] = count[0]
    assert calls == {2: 5, 4: 5, 8: 5}  # one (batched guided) network evaluation per step at every depth


def test_sampling_per_seed_whatever_the_batch():
    m, _ = model(depth=3)
    y, o = torch.tensor([0, 3, 5, 9]), m.SampleOptions(steps=4, cfg=2.0)
    a = m.sample(y, torch.arange(4), o).tokens
    assert torch.equal(m.sample(y, torch.arange(4), o).tokens, a)
    split = torch.cat([m.sample(y[:1], torch.arange(1), o).tokens, m.sample(y[1:], torch.arange(1, 4), o).tokens])
    assert torch.equal(split, a)
    assert not torch.equal(m.sample(y, torch.arange(4, 8), o).tokens, a)


def test_loss_trains_and_is_per_sample():
    m, tok = model(depth=3)
    m.train()
    tokens, y = tok.encode(torch.rand(4, 3, 16, 16) * 2 - 1), torch.tensor([0, 3, 5, 9])
    whole = m.loss(tokens, y, torch.arange(4))
    parts = torch.stack([m.loss(tokens[i : i + 1], y[i : i + 1], torch.arange(i, i + 1))["loss"] for i in range(4)])
    assert torch.allclose(whole["loss"], parts.mean(), atol=1e-5) and whole["mse"] >= 0
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = m.loss(tokens, y, torch.arange(4))["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_imagenet_size():
    # 28 layers of width 1152 over 8x8x16 stacks of 256-d codes (the preset imagenet256/resgen; unverified size)
    assert resgen_param_count("imagenet256") == 457_340_688


def test_depth_flattened_view_of_the_same_tokenizer():
    tok = tokenizer(3)
    flat = component_from_dict(
        "tokenizer",
        {
            "name": "rqvae",
            "net": NET,
            "embed_dim": 4,
            "flatten_depth": True,
            "quantizer": {"name": "rvq", "depth": 3, "vq": {"codebook_size": 16}},
        },
        "tokenizer",
    )
    flat = flat.build(resolution=16).eval()  # fmt: skip
    flat.load_state_dict(tok.state_dict())
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert flat.token_spec.kind == "discrete" and flat.token_spec.shape == (8 * 8 * 3,)
    ids = flat.encode(images)
    assert torch.equal(ids, tok.encode(images).reshape(2, -1))
    assert torch.equal(flat.decode(ids), tok.decode(tok.encode(images)))
