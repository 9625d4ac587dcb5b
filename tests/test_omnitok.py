"""OmniTokenizer: an image is a 1-frame clip (video path = image path), the causal temporal mask row by row on 3
frames, token shapes against the TokenSpec, a joint training step, and the paper-size parameter count."""

from __future__ import annotations

import pytest
import torch

from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.omnitok import OmniConfig, OmniTokenizer, OmniTokenizerKL, omnitok_param_count
from genlab.tokenizers.omnitok_blocks import PEG, CosineAttention

SMALL = dict(patch=4, temporal_patch=2, width=32, num_heads=2, encoder_blocks="tw", decoder_blocks="tw",
             temporal_depth=2, window=2, code_dim=4)  # fmt: skip


def vq(frames: int = 5, **kw) -> OmniTokenizer:
    torch.manual_seed(0)
    cfg = OmniTokenizer.Config(frames=frames, **{**SMALL, **kw}, quantizer={"codebook_size": 64, "l2_norm": True})
    return OmniTokenizer(cfg, resolution=16).eval()


def kl(frames: int = 5, **kw) -> OmniTokenizerKL:
    torch.manual_seed(0)
    return OmniTokenizerKL(OmniTokenizerKL.Config(frames=frames, **{**SMALL, **kw}), resolution=16).eval()


def clips(n: int = 2, frames: int = 5) -> torch.Tensor:
    return torch.rand(n, 3, frames, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("make", [vq, kl])
def test_a_one_frame_clip_through_the_video_path_equals_the_image_path(make):
    tok = make()
    x = clips(frames=1)  # (B, 3, 1, H, W)
    if isinstance(tok, OmniTokenizerKL):
        tok.fit_latent_stats(iter([clips()]))
    as_clip, as_image = tok.encode(x), tok.encode(x[:, :, 0])
    assert as_clip.shape[:-2] == ((2, 1) if tok.token_spec.discrete else (2, 4, 1))
    assert torch.equal(as_clip.squeeze(-3), as_image)  # bitwise: the same computation
    assert torch.equal(tok.decode(as_clip)[:, :, 0], tok.decode(as_image))
    # and causality makes it more than a reshape: the first frame of a 5-frame clip is encoded as that image
    longer = torch.cat([x, clips(frames=5)[:, :, 1:]], dim=2)
    first = tok.encode(longer)
    first = first[:, 0] if tok.token_spec.discrete else first[:, :, 0]
    if tok.token_spec.discrete:
        assert torch.equal(first, as_image)
    else:
        torch.testing.assert_close(first, as_image, rtol=0, atol=1e-5)


def changed_rows(module, x: torch.Tensor, frame: int) -> list[bool]:
    """Which output frames change when input frame ``frame`` of x (B, T, ...) changes."""
    y = x.clone()
    y[:, frame] += torch.randn(y[:, frame].shape, generator=torch.Generator().manual_seed(frame))  # not a constant (LN)
    with torch.no_grad():
        a, b = module(x), module(y)
    return [not torch.allclose(a[:, t], b[:, t], atol=1e-6) for t in range(x.shape[1])]


def test_the_causal_temporal_mask_on_three_frames_row_by_row():
    torch.manual_seed(0)
    attn = CosineAttention(32, 2, causal=True)  # over (B, T, D): each position's 3 frames
    x = torch.randn(4, 3, 32)
    # row t of the mask: frame t attends to frames 0..t; a change of frame j moves rows j.. only
    assert changed_rows(attn, x, 0) == [True, True, True]
    assert changed_rows(attn, x, 1) == [False, True, True]
    assert changed_rows(attn, x, 2) == [False, False, True]
    # the attention weights themselves, row by row: exactly the lower triangle is non-zero
    with torch.no_grad():
        xn = attn.norm(x)
        q = torch.nn.functional.normalize(attn.to_q(xn).view(4, 3, 2, 16).transpose(1, 2), dim=-1) * attn.q_scale
        k = torch.nn.functional.normalize(attn.to_kv(x)[..., :32].view(4, 3, 2, 16).transpose(1, 2), dim=-1)
        scores = (q @ (k * attn.k_scale).transpose(-1, -2)) * 8.0
        weights = scores.masked_fill(~torch.ones(3, 3, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    assert weights[..., 0, 1:].abs().max() == 0 and weights[..., 1, 2].abs().max() == 0
    assert (weights[..., 1, :2] > 0).all() and (weights[..., 2, :] > 0).all()
    # and the layer computes exactly that masked product (equal outputs to the hand-made causal attention)
    v = attn.to_kv(x)[..., 32:].view(4, 3, 2, 16).transpose(1, 2)
    ref = attn.to_out((weights @ v).transpose(1, 2).reshape(4, 3, 32))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-6)
    # the PEG looks back only: two past frames, none ahead
    peg = PEG(8, causal=True)
    grid = torch.randn(2, 3, 4, 4, 8)
    assert changed_rows(peg, grid, 1) == [False, True, True] and changed_rows(peg, grid, 2) == [False, False, True]
    assert changed_rows(PEG(8, causal=False), grid, 2) == [False, True, True]  # non-causal: one frame each way


@pytest.mark.parametrize("frame", [0, 1, 2])
def test_the_whole_tokenizer_is_causal_per_latent_frame(frame):
    tok = kl(frames=5)  # 5 frames, tubelets of 2 -> latent frames {0}, {1, 2}, {3, 4}
    x = clips()
    y = x.clone()
    y[:, :, [0, 1, 3][frame]] *= -1  # the first input frame of latent frame `frame`
    a, b = tok.posterior(x).mean, tok.posterior(y).mean  # (B, C, 3, h, w)
    assert [not torch.allclose(a[:, :, t], b[:, :, t], atol=1e-6) for t in range(3)] == [t >= frame for t in range(3)]
    da, db = tok.decode_latent(a), tok.decode_latent(b)  # decoded frames follow their latent frames
    first_moved = [0, 1, 3][frame]
    assert all(torch.equal(da[:, :, i], db[:, :, i]) for i in range(first_moved))


@pytest.mark.parametrize("make,frames", [(vq, 1), (vq, 5), (kl, 1), (kl, 5)])
def test_encode_and_decode_shapes_match_the_token_spec(make, frames):
    tok = make(frames=frames)
    x = clips(frames=frames)
    x = x[:, :, 0] if frames == 1 else x
    if isinstance(tok, OmniTokenizerKL):
        tok.fit_latent_stats(iter([x]))
    spec = tok.token_spec
    tokens = tok.encode(x)
    assert tuple(tokens.shape) == (2, *spec.shape)
    assert spec.size("time") == (None if frames == 1 else 3) and spec.grid == (4, 4)
    assert tok.decode(tokens).shape == x.shape
    if spec.discrete:
        assert tokens.dtype == torch.long and int(tokens.max()) < spec.vocab_size
        assert tok.indices_to_codes(tokens).shape == (2, 4, *spec.shape)
    with pytest.raises(TokenizerError, match="1 \\+ k\\*2"):
        tok.encode(torch.zeros(2, 3, 4, 16, 16))  # 4 frames is not 1 + k * 2


def test_a_joint_step_trains_every_part_on_clips_and_still_images():
    tok = vq().train()
    batch = {"image": clips(), "still": clips(frames=1)[:, :, 0], "seed": torch.tensor([0, 1])}
    out = tok.loss(batch, step=0)
    out["loss"].backward()
    idle = [n for n, p in tok.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not idle, idle
    alone = vq().train().loss({k: v for k, v in batch.items() if k != "still"}, step=0)
    assert out["rec"] != alone["rec"]  # the still images count


def test_the_paper_size_counts():
    # the public config (scripts/recons/train.sh, stage 2): patch 8, temporal patch 4, width 512, 8 heads x 64,
    # encoder ttww + 4 temporal, decoder tttt + 4 temporal, 8192 x 8 codes. The public code built at that config
    # (spatial_pos rope, on the meta device) has 53,708,440 parameters in its Encoder, Decoder and pre/post-VQ
    # linears, 2,153,536 of them never used by its forward (each global attention's context_norm, the temporal
    # stacks' position-bias MLPs): 51,554,904 used, and its 8192 x 8 codebook is a buffer. Here: those + the codes.
    vq_count = omnitok_param_count(OmniConfig())
    assert vq_count["total"] == 51_554_904 + 8192 * 8
    assert vq_count["quantizer"] == 8192 * 8
    assert omnitok_param_count(OmniConfig(), kl=True)["total"] == 51_620_440 - 8192 * 8 - 8 * 512 + 16 * 512 + 8


def test_a_clip_tokenizer_run_scores_reconstructions_per_frame():
    from genlab.evals.recon import psnr, reconstruction_metrics

    tok = vq()
    x = clips(n=3)
    metrics = reconstruction_metrics(tok, x, batch_size=2)
    rec = tok.decode(tok.encode(x)).clamp(-1, 1)
    per_frame = psnr(x.transpose(1, 2).flatten(0, 1), rec.transpose(1, 2).flatten(0, 1))  # (15,)
    assert metrics["n"] == 3 and metrics["psnr"] == pytest.approx(per_frame.mean().item(), rel=1e-6)
    assert metrics["ssim"] is not None and 0 < metrics["codebook_usage"] <= 1


def test_the_joint_stage_starts_from_the_image_stage(tmp_path):
    from genlab import config
    from genlab.runs.store import save_tokenizer
    from genlab.tasks.base import init_from

    one = config.load("smoke-omnitok")
    two = config.load("smoke-omnitok-joint", [f"train.init_from={tmp_path}"])
    assert one.data.name == "openmoji" and two.data.name == "joint" and two.data.cfg.key == "still"
    assert one.tokenizer.cfg.frames == 1 and two.tokenizer.cfg.frames == 5  # same weights, another token spec
    torch.manual_seed(0)
    first = one.tokenizer.build(resolution=16)
    save_tokenizer(one, first, tmp_path, ["a"])
    torch.manual_seed(1)
    second = two.tokenizer.build(resolution=16)
    init_from(two.train, {"tokenizer": second})  # strict: every tensor of stage 1, nothing else
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert first.token_spec.shape == (4, 4) and second.token_spec.shape == (3, 4, 4)


@pytest.mark.parametrize(
    "preset,kl,frames",
    [("omnitokenizer", False, 1), ("omnitokenizer-joint", False, 17), ("omnitokenizer-kl", True, 17)],
)
def test_the_paper_presets_build_the_paper_size(preset, kl, frames):
    from genlab import config

    cfg = config.load(f"imagenet256/{preset}")
    with torch.device("meta"):
        tok = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
    assert sum(p.numel() for p in tok.parameters()) == omnitok_param_count(OmniConfig(), kl=kl)["total"]
    assert tok.token_spec.shape[-2:] == (32, 32) and tok.token_spec.size("time") == (None if frames == 1 else 5)
