import pytest
import torch

from genlab.generators.dit import DIT_SIZES, DiT, dit_param_count, latent_spec

# DiT paper Table 4 (parameters, millions); patch size changes the count by < 0.1%
PAPER_PARAMS_M = {"S": 33, "B": 130, "L": 458, "XL": 675}


@pytest.mark.parametrize("size", [f"{n}/{p}" for n in DIT_SIZES for p in (2, 4, 8)])
def test_paper_parameter_counts(size):
    n = dit_param_count(size)
    paper = PAPER_PARAMS_M[size.split("/")[0]] * 1e6
    assert abs(n - paper) / paper < 0.01, f"DiT-{size}: {n} parameters vs {paper:.0f} in the paper"


def test_forward_shapes_and_zero_init():
    model = DiT(DiT.Config(depth=2, hidden_size=64, num_heads=4, patch_size=2), spec=latent_spec(4, 8), num_classes=10)
    x, t, y = torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 5, 10])  # 10 = null class
    out = model(x, t, y)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the untrained network outputs zero


def test_bad_patch_is_a_clear_error():
    with pytest.raises(ValueError, match="not divisible by the patch size 3"):
        DiT(DiT.Config(patch_size=3), spec=latent_spec(3, 16), num_classes=2)


def test_class_conditioning_changes_the_output():
    torch.manual_seed(0)
    model = DiT(DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=4), spec=latent_spec(3, 8), num_classes=3)
    for p in model.parameters():  # leave adaLN-Zero so the labels can matter
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(1, 3, 8, 8).repeat(2, 1, 1, 1), torch.full((2,), 0.5)
    out = model(x, t, torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1])


def test_cpu_bf16_attention_matches_sdpa():
    import torch.nn.functional as F

    from genlab.nn.attention import attention

    q, k, v = (torch.randn(2, 4, 64, 16) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(attention(q, k, v), ref)  # fp32: the fused kernel itself
    low = attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
    assert (low - ref).abs().max() < 0.05
