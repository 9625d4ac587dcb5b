"""Per-sample token lengths (FlexTok's prefixes): a token batch carries them through the token cache, generator
training's ``loss`` and ``Sampled``; tokens without lengths go exactly the old way."""

import pytest
import torch
from torch import nn

from genlab.data.base import TensorImageDataset
from genlab.data.cache import TokenCacheDataset, write_token_cache
from genlab.generators.base import Generator, GeneratorError, Sampled
from genlab.tasks.generator import GeneratorTraining
from genlab.tokenizers.base import TokenBatch, Tokenizer, TokenSpec, check_lengths

SPEC = TokenSpec("discrete", (6,), vocab_size=50, variable_length=True)


def images(n=13):
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return TensorImageDataset(x, torch.arange(n) % 2, ["a", "b"])


class Prefixes(Tokenizer):
    """A toy tokenizer that picks each image's length from its content (as an adaptive-length tokenizer does)."""

    token_spec = SPEC

    def encode(self, images):
        return (images.flatten(1)[:, :6] * 20).long().clamp(0, 49)

    def encode_batch(self, images):
        lengths = 1 + (images[:, 0, 0, 0] > 0).long() * 2 + (images[:, 0, :, -1].mean(-1) > 0).long() * 3
        return TokenBatch(self.encode(images), lengths)


def test_the_cache_stores_and_returns_lengths_with_flips(tmp_path):
    data, tok = images(), Prefixes()
    meta = {"tokenizer": {"name": "toy"}, "dataset": {"name": "random"}, "resolution": 4,
            "token_spec": SPEC.to_dict()}  # fmt: skip
    write_token_cache(tok.encode_batch, data, tmp_path / "c", meta=meta, flips=True, shard_size=5, batch_size=3)
    cache = TokenCacheDataset(TokenCacheDataset.Config(path=str(tmp_path / "c")))
    idx, flip = torch.tensor([12, 0, 7, 3]), torch.tensor([True, False, False, True])
    x = data.get_batch(idx)["image"]
    plain, mirrored = tok.encode_batch(x), tok.encode_batch(x.flip(-1))
    got = cache.get_batch(idx, flip)
    assert got["lengths"].dtype == torch.long
    assert torch.equal(got["lengths"], torch.where(flip, mirrored.lengths, plain.lengths))
    assert torch.equal(got["tokens"], torch.where(flip.view(-1, 1), mirrored.tokens, plain.tokens))
    assert not torch.equal(plain.lengths, torch.full_like(plain.lengths, 6))  # the lengths do differ per sample
    assert cache[3]["lengths"].ndim == 0
    write_token_cache(tok.encode, data, tmp_path / "plain", meta=meta, shard_size=5)  # plain tokens: no lengths
    assert "lengths" not in TokenCacheDataset(TokenCacheDataset.Config(path=str(tmp_path / "plain"))).get_batch(idx)


class Recorder(Generator):
    TOKEN_KINDS = ("discrete",)

    def __init__(self, takes: bool):
        super().__init__()
        self.TAKES_LENGTHS, self.seen, self.w = takes, [], nn.Parameter(torch.zeros(()))

    def loss(self, tokens, labels, seeds, **kw):
        self.seen.append(kw)
        return {"loss": self.w * 0}


def test_training_passes_lengths_only_when_the_batch_has_them():
    batch = {"image": images(4).get_batch(torch.arange(4))["image"], "label": torch.zeros(4, dtype=torch.long),
             "seed": torch.arange(4)}  # fmt: skip
    gen = Recorder(takes=True)
    GeneratorTraining(Prefixes(), gen)(batch)  # encoded on the fly: the tokenizer's lengths
    lengths = Prefixes().encode_batch(batch["image"]).lengths
    assert torch.equal(gen.seen[-1]["lengths"], lengths)
    GeneratorTraining(Prefixes(), gen)({**batch, "tokens": torch.zeros(4, 6, dtype=torch.long)})  # cached, none
    assert gen.seen[-1] == {}  # the call every family of round 2 gets
    with pytest.raises(GeneratorError, match="does not train on per-sample token lengths"):
        GeneratorTraining(Prefixes(), Recorder(takes=False))(batch)
    with pytest.raises(ValueError, match=r"lengths must be in 1..6"):
        GeneratorTraining(Prefixes(), gen)({**batch, "tokens": torch.zeros(4, 6).long(), "lengths": torch.arange(4)})


def test_lengths_are_checked_against_the_spec():
    check_lengths(SPEC, torch.tensor([1, 6]), 2)
    with pytest.raises(ValueError, match="variable-length"):
        check_lengths(TokenSpec("discrete", (4, 4), vocab_size=3), torch.tensor([1]), 1)
    with pytest.raises(ValueError, match=r"\(2,\) integers"):
        check_lengths(SPEC, torch.tensor([1.0, 2.0]), 2)
    assert Sampled(tokens=torch.zeros(2, 6), nfe=3).lengths is None  # no lengths: every sample uses all tokens
