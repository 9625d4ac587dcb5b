"""ViTok: image and clip shapes, the token spec's time axis, a training step, and the named variants' sizes."""

from __future__ import annotations

import pytest
import torch

from genlab.nn import rope_2d, rope_3d
from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.vitok import VITOK_VARIANTS, ViTConfig, ViTokTokenizer, vitok_param_count

SMALL = ViTConfig(depth=1, width=32, num_heads=2)


def clip_tokenizer(**kw) -> ViTokTokenizer:
    torch.manual_seed(0)
    cfg = ViTokTokenizer.Config(frames=4, tubelet=2, patch=4, channels=4, encoder=SMALL, decoder=SMALL, **kw)
    return ViTokTokenizer(cfg, resolution=16)


def test_clip_tokens_have_a_time_axis_and_roundtrip_shapes():
    tok = clip_tokenizer(normalize="none")
    spec = tok.token_spec
    assert spec.axes == ("channel", "time", "height", "width") and spec.shape == (4, 2, 4, 4)
    assert spec.num_positions == 2 * 4 * 4 and spec.size("time") == 2
    x = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    z = tok.encode(x)
    assert z.shape == (2, 4, 2, 4, 4)
    assert tok.decode(z).shape == (2, 3, 4, 16, 16)
    with pytest.raises(TokenizerError, match="shape"):
        tok.encode(torch.zeros(2, 3, 3, 16, 16))  # 3 frames for a 4-frame tokenizer


def test_a_training_step_reaches_every_part_and_stats_normalise():
    tok = clip_tokenizer()
    x = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    out = tok.loss({"image": x, "seed": torch.tensor([0, 1])}, step=0)
    out["loss"].backward()
    for part in (tok.embed, tok.encoder, tok.to_moments, tok.from_latent, tok.decoder, tok.to_pixels):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), part
    assert out["kl"] > 0
    with pytest.raises(TokenizerError, match="never fitted"):
        tok.encode(x)
    tok.fit_latent_stats(iter([x]))
    z = tok.encode(x)
    assert torch.allclose(z.mean((0, 2, 3, 4)), torch.zeros(4), atol=1e-4)  # normalised per channel


def test_rope_3d_on_one_frame_rotates_time_features_by_nothing():
    r = rope_3d(32, (1, 3, 3))
    assert r.shape == (2, 9, 32)
    assert torch.equal(r[0, :, :8], torch.ones(9, 8)) and torch.equal(r[1, :, :8], torch.zeros(9, 8))
    assert rope_2d(32, 3).shape == r.shape
    with pytest.raises(ValueError):
        rope_3d(24, (2, 2, 2))


def test_named_variants_are_asymmetric_and_counted():
    counts = {name: vitok_param_count(name) for name in VITOK_VARIANTS}
    for name, c in counts.items():
        assert c["decoder"] > c["encoder"] > 0, name  # the small-encoder, large-decoder shape of the paper
    # ViT-S / ViT-B / ViT-L blocks in Llama form (RMSNorm, SwiGLU 8/3, no biases): 12 * 12 * 384^2 = 21.2M, etc.
    assert 21e6 < counts["S-B/16"]["encoder"] < 22e6
    assert 84e6 < counts["S-B/16"]["decoder"] < 86e6
    assert 300e6 < counts["S-L/16"]["decoder"] < 305e6


@pytest.mark.parametrize(
    "preset,variant", [("vitok-s-b-16", "S-B/16"), ("vitok-s-l-16", "S-L/16"), ("vitok-s-b-8", "S-B/8")]
)
def test_imagenet_presets_build_the_named_variants(preset, variant):
    from genlab import config

    cfg = config.load(f"imagenet256/{preset}")
    with torch.device("meta"):
        tok = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
    assert sum(p.numel() for p in tok.parameters()) == vitok_param_count(variant)["total"]
