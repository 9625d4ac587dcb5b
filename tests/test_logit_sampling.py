"""genlab.nn.sampling, the logit helpers every token family shares, against the code each family carried before
(main 1e17ee8's MaskGIT, GPT and VAR functions, copied here as references): every draw is bitwise the same."""

import torch

from genlab.nn.rng import per_sample_rand
from genlab.nn.sampling import drop_labels, filter_logits, guide_logits, sample_from_logits, sample_tokens


def maskgit_sample_categorical(logits, u):  # main's genlab/generators/maskgit.py
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous(), right=True)
    return idx.squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def gpt_pick_tokens(logits, u, *, temperature, top_k, top_p):  # main's genlab/generators/gpt.py
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits, idx = logits.float() / temperature, None
    if top_k > 0 or top_p < 1.0:
        k = min(top_k, logits.shape[-1]) if top_k > 0 else logits.shape[-1]
        logits, idx = logits.topk(k, dim=-1)
    probs = logits.softmax(dim=-1)
    if top_p < 1.0:
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs > top_p, 0.0)
    cdf = probs.cumsum(dim=-1)
    choice = torch.searchsorted(cdf, (u.to(cdf) * cdf[:, -1]).unsqueeze(-1), right=True)
    choice = choice.clamp_max(cdf.shape[-1] - 1)
    return (choice if idx is None else idx.gather(-1, choice)).squeeze(-1)


def logits_and_uniforms(shape=(64, 50), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 3, torch.rand(shape[:-1], generator=g)


def test_maskgit_draws_are_unchanged():
    logits, u = logits_and_uniforms((8, 16, 40))
    for temperature in (1.0, 0.7, 2.5):
        old = maskgit_sample_categorical(logits / temperature, u)
        assert torch.equal(sample_tokens(logits, u, temperature=temperature, rule="vocab"), old)
    assert torch.equal(sample_tokens(logits, None, temperature=0.0), logits.argmax(-1))


def test_gpt_draws_are_unchanged():
    logits, u = logits_and_uniforms()
    for t, k, p in [(1.0, 0, 1.0), (0.8, 10, 1.0), (1.2, 0, 0.7), (1.0, 5, 0.9), (0.0, 0, 1.0), (1.0, 100, 0.5)]:
        old = gpt_pick_tokens(logits, u, temperature=t, top_k=k, top_p=p)
        assert torch.equal(sample_tokens(logits, u, temperature=t, top_k=k, top_p=p, rule="sorted"), old), (t, k, p)


def test_var_draws_and_the_rules_differ():
    logits, u = logits_and_uniforms((4, 9, 50))
    old = sample_from_logits(filter_logits(logits / 0.9, 12, 0.8), u)  # main's VAR lines, verbatim
    assert torch.equal(sample_tokens(logits, u, temperature=0.9, top_k=12, top_p=0.8, rule="vocab"), old)
    flat, uf = logits.flatten(0, 1), u.flatten()
    vocab = sample_tokens(flat, uf, top_k=12, rule="vocab")
    assert not torch.equal(vocab, sample_tokens(flat, uf, top_k=12, rule="sorted"))  # the rule is a real choice


def test_guidance_and_class_dropout_are_the_families_formulas():
    cond, uncond = logits_and_uniforms((3, 7))[0], logits_and_uniforms((3, 7), seed=1)[0]
    assert torch.equal(guide_logits(cond, uncond, 2.5), uncond + 2.5 * (cond - uncond))  # MaskGIT, GPT
    both = torch.cat([cond, uncond])
    assert torch.equal(guide_logits(cond, uncond, 0.3, rule="extrapolate"), (1 + 0.3) * both[:3] - 0.3 * both[3:])
    labels, seeds = torch.arange(200) % 10, torch.arange(200)
    old = torch.where(per_sample_rand(seeds, (), stream=3) < 0.1, torch.full_like(labels, 10), labels)
    new = drop_labels(labels, seeds, 0.1, 10, stream=3)
    assert torch.equal(new, old) and 5 < int((new == 10).sum()) < 40
    assert torch.equal(drop_labels(labels[50:60], seeds[50:60], 0.1, 10, stream=3), new[50:60])  # per sample
