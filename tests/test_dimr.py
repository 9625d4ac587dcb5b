"""DiMR and TD-LN: the released sizes against the README, the cascade, TD-LN's dependence on t, TD-LN on DiT."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from genlab import config
from genlab.generators.dimr import DIMR_SIZES, DiMR, dimr_param_count
from genlab.generators.dit import DiT, dit_param_count, latent_spec
from genlab.nn import TDNorm


@pytest.mark.parametrize("size, params, gmacs", [("XL/2R", 505e6, 160), ("G/2R", 1.06e9, 331)])
def test_released_sizes_match_the_readme(size, params, gmacs):
    # qihao067/DiMR README: DiMR-XL/2R 505M parameters, 160 GFLOPs; DiMR-G/2R 1.06B, 331 GFLOPs (multiply-adds,
    # the DiT convention; FlopCounterMode counts 2 per multiply-add)
    n = dimr_param_count(size)
    assert abs(n - params) / params < 0.005, n
    with torch.device("meta"):
        model = DiMR(DiMR.Config(**DIMR_SIZES[size]), spec=latent_spec(4, 32), num_classes=1000)
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 4, 32, 32), torch.empty(1), torch.zeros(1, dtype=torch.long))
    assert abs(counter.get_total_flops() / 2e9 - gmacs) / gmacs < 0.005


@pytest.mark.parametrize("size", ["xl-2r", "g-2r"])
def test_presets_are_the_released_sizes(size):
    cfg = config.load(f"imagenet256/dimr-{size}").generator.cfg
    name = {"xl-2r": "XL/2R", "g-2r": "G/2R"}[size]
    assert {k: getattr(cfg, k) for k in DIMR_SIZES[name]} == DIMR_SIZES[name]


def tiny():
    torch.manual_seed(0)
    cfg = DiMR.Config(dims=[16, 8], hidden_dims=[32, 16], depths=[3, 1], num_heads=2)
    return DiMR(cfg, spec=latent_spec(3, 8), num_classes=4)


def test_forward_shapes_and_the_cascade_carries_coarse_features():
    model = tiny()
    x, t, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([0, 4])
    out = model(x, t, y)
    assert out.shape == x.shape and torch.isfinite(out).all()
    coarse = model.branches[0]
    assert coarse.out_dim == 16 * (3 + 1)  # the input and the three blocks' outputs, concatenated
    # the class reaches the fine branch only through the cascade: cut it and the label stops mattering
    assert not torch.allclose(model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([2, 2])))
    fine = model.branches[1]
    fine.cascade.kernel.weight.data.zero_()
    fine.cascade.norm_out.bias.p0.data.zero_()
    fine.cascade.norm_out.bias.p1.data.zero_()
    assert torch.allclose(model(x, t, torch.tensor([1, 1])), model(x, t, torch.tensor([2, 2])))


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="one entry per branch"):
        DiMR(DiMR.Config(dims=[8], hidden_dims=[8, 8]), spec=latent_spec(3, 8), num_classes=2)
    with pytest.raises(ValueError, match="shrink"):
        DiMR(DiMR.Config(patch_sizes=[1, 2]), spec=latent_spec(3, 8), num_classes=2)


def test_td_norm_moves_with_t_through_four_numbers_per_channel():
    norm = TDNorm("layernorm", 6)
    assert sum(p.numel() for p in norm.parameters()) == 2 * 4 * 6  # gamma and beta, (p0, p1, w, b) each
    x = torch.randn(2, 5, 6)
    tau = torch.tensor([1.0, -1.0])
    plain = torch.nn.functional.layer_norm(x, (6,), eps=1e-6)
    assert torch.allclose(norm(x, tau), plain, atol=1e-6)  # p0 = p1: no dependence on t at the start
    with torch.no_grad():
        norm.weight.p0.fill_(2.0)  # gamma(tau) = s * 2 + (1 - s) * 1, s = sigmoid(tau)
    s = torch.sigmoid(tau).view(2, 1, 1)
    assert torch.allclose(norm(x, tau), plain * (2 * s + 1 - s), atol=1e-6)


def test_tdln_on_dit_replaces_adaln_and_saves_parameters():
    adaln = dit_param_count("S/2")
    cfg = DiT.Config(depth=12, hidden_size=384, num_heads=6, patch_size=2, conditioning="tdln")
    with torch.device("meta"):
        tdln = sum(p.numel() for p in DiT(cfg, spec=latent_spec(4, 32), num_classes=1000).parameters())
    D = 384
    # per block: adaLN's Linear(D, 6D) goes, two TD-LNs (16 D) come; the final adaLN Linear(D, 2D) and the timestep
    # MLP (256 D + D + D^2 + D) go, the final TD-LN (8 D) comes
    expect = adaln - 12 * (6 * D * D + 6 * D) + 12 * 16 * D - (2 * D * D + 2 * D) + 8 * D - (256 * D + D + D * D + D)
    assert tdln == expect
    torch.manual_seed(0)
    model = DiT(DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=2, conditioning="tdln"),
                spec=latent_spec(3, 8), num_classes=3)  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    out = model(x, torch.rand(2), torch.tensor([0, 1]))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # the zero output layer, as adaLN-Zero
    with pytest.raises(ValueError, match="rope"):
        DiT.Config(conditioning="tdln", rope=True).validate()
