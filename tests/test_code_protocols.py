"""The code protocol per token kind: ids -> codes for every discrete tokenizer, multi-scale codes for VAR/FlexVAR,
residual codes (depth d's codes and quantization) for ResGen-style generators; build_generator checks the one a
generator names in CODES."""

import pytest
import torch
from tiny import MSVQ_TOKENIZER, TINY, VQ_TOKENIZER

from genlab.config import component_from_dict
from genlab.generators.base import GeneratorError, build_generator
from genlab.tokenizers.base import MultiScaleCodes, ResidualCodes, TokenCodes


def tokenizer(spec):
    torch.manual_seed(0)
    return component_from_dict("tokenizer", dict(spec), "tokenizer").build(resolution=16).eval()


def test_each_kind_gets_its_protocol():
    rq = tokenizer({"name": "rqvae", **TINY["tokenizer"]["rqvae"]})
    assert type(tokenizer(VQ_TOKENIZER).codes()) is TokenCodes
    assert type(tokenizer(MSVQ_TOKENIZER).codes()) is MultiScaleCodes
    assert type(rq.codes()) is ResidualCodes and rq.codes().depth == 2


def test_residual_codes_are_depth_d_codes_and_quantization():
    tok = tokenizer({"name": "rqvae", **TINY["tokenizer"]["rqvae"]})
    codes = tok.codes()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = tok.quantize(x)  # the quantized latent and its (B, h, w, D) ids
        ids = tok.encode(x)
        assert torch.equal(ids, z.indices)
        total = sum(codes.depth_codes(d, ids[..., d]) for d in range(codes.depth))
        assert torch.allclose(total, codes.indices_to_codes(ids), atol=1e-6)  # the latent is the sum over depths
        # RQ-VAE eq. 2: k_1 = Q(z), k_2 = Q(z - e(k_1)) -- quantize_at reproduces the encoder's ids depth by depth
        latent = tok.quant_conv(tok.encoder(x))
        k1, e1 = codes.quantize_at(0, latent)
        k2, _ = codes.quantize_at(1, latent - e1)
        assert torch.equal(k1, ids[..., 0]) and torch.equal(k2, ids[..., 1])
        assert torch.allclose(e1, codes.depth_codes(0, k1), atol=1e-6)


def test_build_generator_checks_the_protocol_a_generator_names():
    entry = TINY["generator"]["var"]
    var = component_from_dict("generator", {"name": "var", **entry["generator"]}, "generator")
    tok = tokenizer(MSVQ_TOKENIZER)
    build_generator(var, None, spec=tok.token_spec, num_classes=3, codes=tok.codes())
    with pytest.raises(GeneratorError, match=r"VAR needs multiscale codes \(MultiScaleCodes\); .*no code protocol"):
        build_generator(var, None, spec=tok.token_spec, num_classes=3, codes=None)
    with pytest.raises(GeneratorError, match="discrete tokens' TokenCodes"):
        build_generator(var, None, spec=tok.token_spec, num_classes=3, codes=TokenCodes(tokenizer(VQ_TOKENIZER)))
