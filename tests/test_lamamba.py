"""LaMamba-Diff: the four-direction scan and merge by hand, the window attention's shift, shapes, sizes."""

import pytest
import torch

from genlab.generators.dit import latent_spec
from genlab.generators.lamamba import (
    LAMAMBA_SIZES,
    LaMambaDiff,
    WindowAttention,
    cross_merge,
    cross_scan,
    lamamba_param_count,
    scan_orders,
)

# a 2x3 map, raster positions   0 1 2
#                               3 4 5
RASTER = [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
CONTINUOUS = [[0, 1, 2, 5, 4, 3], [3, 4, 5, 2, 1, 0], [3, 0, 1, 4, 5, 2], [5, 2, 1, 4, 3, 0]]


def test_scan_orders_on_a_2x3_map_by_hand():
    assert scan_orders(2, 3, "raster").tolist() == RASTER  # rows, columns, both reversed (VMamba)
    assert scan_orders(2, 3, "continuous").tolist() == CONTINUOUS  # snakes: every step moves to a neighbour
    for order in scan_orders(6, 6, "continuous"):
        r, c = order // 6, order % 6
        assert ((r.diff().abs() + c.diff().abs()) == 1).all()


def test_cross_scan_reads_the_map_in_each_order():
    x = torch.tensor([[10.0, 11, 12], [13, 14, 15]]).view(1, 1, 6)  # (B, D, L)
    seqs = cross_scan(x, scan_orders(2, 3, "raster"))
    assert seqs.shape == (1, 4, 1, 6)
    assert seqs[0, :, 0].tolist() == [[10 + i for i in o] for o in RASTER]


def test_cross_merge_puts_each_step_back_and_sums_on_a_2x3_map_by_hand():
    # scan k's output at step s is s * 10^k; position p collects step_k(p) * 10^k from the four scans
    ys = torch.stack([torch.arange(6.0) * 10**k for k in range(4)]).view(1, 4, 1, 6)
    merged = cross_merge(ys, scan_orders(2, 3, "raster"))
    assert merged.view(-1).tolist() == [5500, 3421, 1342, 4213, 2134, 55]
    merged = cross_merge(ys, scan_orders(2, 3, "continuous"))
    # position 0: step 0 (row snake), 5 (bottom snake), 1 (column snake from bottom-left), 5 (from bottom-right)
    assert merged.view(-1)[0].item() == 0 + 50 + 100 + 5000
    x = torch.randn(2, 3, 6)
    for kind in ("raster", "continuous"):  # merging the plain scans gives each position back four times
        o = scan_orders(2, 3, kind)
        assert torch.allclose(cross_merge(cross_scan(x, o), o), 4 * x)


def test_shifted_window_attention_only_mixes_within_windows():
    torch.manual_seed(0)
    for shift in (0, 2):
        attn = WindowAttention(8, 2, window=4, shift=shift, resolution=8)
        x = torch.randn(1, 8, 8, 8)
        y0 = attn(x)
        x2 = x.clone()
        x2[0, 0, 0] += 1.0  # a token of the top-left window
        changed = (attn(x2) - y0).abs().sum(-1)[0] > 1e-6
        if shift == 0:  # unshifted: exactly the top-left 4x4 window sees it
            assert changed[:4, :4].all() and not changed[4:].any() and not changed[:, 4:].any()
        else:  # rolled by -2: (0, 0) sits in the wrapped bottom-right window with rows/cols 6, 7 only
            assert changed[0, 0] and not changed[2:6, 2:6].any()


def test_forward_shapes_and_bad_sizes():
    cfg = LaMambaDiff.Config(dim=16, depths=[1, 1, 1], num_heads=2, window_size=4)
    model = LaMambaDiff(cfg, spec=latent_spec(3, 8), num_classes=4)
    x = torch.randn(2, 3, 8, 8)
    out = model(x, torch.rand(2), torch.tensor([0, 4]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="divisible by patch_size"):
        LaMambaDiff(LaMambaDiff.Config(depths=[1, 1, 1, 1]), spec=latent_spec(3, 6), num_classes=4)
    with pytest.raises(ValueError, match="num_heads"):
        LaMambaDiff(LaMambaDiff.Config(dim=30, num_heads=4), spec=latent_spec(3, 8), num_classes=4)


def test_xl_size_is_the_release_config_with_comparable_parameters_to_dit_xl():
    assert LAMAMBA_SIZES["XL"]["dim"] == 320 and LAMAMBA_SIZES["XL"]["depths"] == [2, 2, 2, 2]
    n = lamamba_param_count("XL", out_channels=8)  # learned sigma, as the release
    assert n == 652_484_648  # counted here; "comparable or fewer parameters" than DiT-XL/2's 675M (abstract)


def test_xl_preset_builds_the_xl_size():
    from genlab import config

    cfg = config.load("imagenet256/lamamba-diff-xl")
    assert cfg.generator.name == "lamamba"
    assert {k: getattr(cfg.generator.cfg, k) for k in LAMAMBA_SIZES["XL"]} == LAMAMBA_SIZES["XL"]


def test_cpu_bf16_attention_takes_an_additive_mask_like_sdpa():
    from genlab.nn.attention import attention

    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    bias = torch.randn(2, 16, 16)
    ref = attention(q, k, v, mask=bias)  # float32: SDPA with a float mask
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask=bias.bfloat16())  # the explicit product
    assert torch.allclose(out.float(), ref, atol=0.05)
