"""TiTok and FlexTok end to end at smoke size: train the tokenizer, cache its 1-D tokens (both flips), train the
quickstart's generator on them (MaskGIT on TiTok, the GPT on FlexTok, shrunk), sample; FlexTok's GPT also samples a
prefix (``num_tokens``), which FlexTok decodes."""

import pytest
import torch

from genlab.cli import main
from genlab.pipeline import Pipeline

SHRINK = ["generator.depth=1", "generator.hidden_size=32", "generator.num_heads=2", "train.steps=2",
          "train.batch_size=8", "train.checkpoint_every=0", "train.mixed_precision='no'", "train.tensorboard=false",
          "sample.per_class=1", "data.classes=10", "data.resolution=16"]  # fmt: skip


@pytest.mark.parametrize(("tokenizer", "generator"), [("smoke-titok", "quickstart-titok-maskgit"),
                                                      ("smoke-flextok", "quickstart-flextok-gpt")])  # fmt: skip
def test_tokenizer_cache_generator_sample(tmp_path, tokenizer, generator):
    tok, cache, gen = tmp_path / "tok", tmp_path / "cache", tmp_path / "gen"
    assert main(["train", "--preset", tokenizer, "--out", str(tok), "train.steps=2", "train.batch_size=8"]) == 0
    assert main(["cache", "--tokenizer", str(tok), "--flips", "--out", str(cache)]) == 0
    args = ["train", "--preset", generator, "--out", str(gen), f"data.path={cache}", f"tokenizer.path={tok}", *SHRINK]
    assert main(args) == 0
    pipe = Pipeline.load(gen)
    K = pipe.tokenizer.token_spec.shape[0]
    a = pipe.generate([0, 3], seed=5).images
    assert a.shape == (2, 3, 16, 16) and torch.isfinite(a).all()
    assert torch.allclose(
        pipe.generate([3], seed=6).images, a[1:], atol=1e-5
    )  # image i from seed i (decoder noise too)
    if pipe.tokenizer.token_spec.variable_length:
        opts = pipe.sample_options({"num_tokens": K // 4})
        assert pipe.generator.sample(torch.tensor([0, 3]), torch.tensor([5, 6]), opts).tokens.shape == (2, K // 4)
        short = pipe.generate([0, 3], seed=5, options=opts).images  # a 4-token prefix, decoded by FlexTok
        assert short.shape == a.shape and torch.isfinite(short).all()
