"""FlexVAR's released models (genlab.imports.flexvar) against FlexVAR's own code.

``tests/fixtures/flexvar_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
jiaosiyu1999/FlexVAR at 04462cb: ``models/flexvar.py``'s ``FlexVAR(depth=2, embed_dim=32, num_heads=2,
num_classes=10, attn_l2_norm=True, cond_drop_rate=0, patch_nums=(1, 2, 3, 4))`` on a VQ of 64 codes of dimension 8,
``init_weights`` then every weight + N(0, 0.3); inputs labels (3, 7), random teacher-forcing inputs (2, 29, 8) and
the codebook; outputs the teacher-forced logits and the token maps ``autoregressive_infer_cfg`` draws at sides 1..11
with cfg 2.0, top_k 1 (greedy), top_p 0.95, max_pn 8 (its ramp si / min(K - 1, 9) with K = 11, full guidance above
side 8).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_dit_import import genlab

from genlab.config import component_from_dict
from genlab.imports.flexvar import convert_flexvar

FIXTURE = Path(__file__).parent / "fixtures" / "flexvar_tiny.safetensors"
VQ = {"name": "flexvq", "net": {"ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "attn_levels": [],
      "mid_attn": False, "z_channels": 8, "norm_groups": 8}, "embed_dim": 8,
      "quantizer": {"name": "vq", "codebook_size": 64, "l2_norm": True}, "scales": [1, 2, 3, 4]}  # fmt: skip


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIXTURE))


def public(fx):
    return {k[4:]: v for k, v in fx.items() if k.startswith("var.")}


def build(fx):
    cfg, state, num_classes = convert_flexvar(public(fx))
    assert (cfg["depth"], cfg["num_heads"], cfg["pos_grid"], num_classes) == (2, 2, 32, 10)
    tok = component_from_dict("tokenizer", VQ, "tokenizer").build(resolution=8)
    with torch.no_grad():
        tok.quantizer.codebook.copy_(fx["in.codebook"])
    model = component_from_dict("generator", cfg, "generator").build(spec=tok.token_spec, num_classes=10,
                                                                     codes=tok.codes())  # fmt: skip
    model.load_state_dict(state)
    return model.eval()


def test_teacher_forced_logits_match_flexvar(fx):
    with torch.no_grad():
        logits = build(fx)(fx["in.labels"], fx["in.inputs"])
    assert (logits - fx["out.logits"]).abs().max() <= 1e-5 * fx["out.logits"].abs().max()


def test_flexvars_guidance_ramp_and_max_side_reproduce_its_tokens(fx):
    model, sides = build(fx), tuple(range(1, 12))
    opts = dict(cfg=3.0, top_k=1, top_p=0.95, scales=sides, ramp_steps=9, max_side=8)  # FlexVAR's cfg 2.0 = 3.0
    with torch.no_grad():
        maps = model.sample(fx["in.labels"], torch.tensor([0, 1]), model.SampleOptions(**opts)).tokens
        for s, ids in zip(sides, maps):
            assert torch.equal(ids, fx[f"out.greedy_cfg2_maxpn8.{s}"].long()), s
        own = model.sample(fx["in.labels"], torch.tensor([0, 1]), model.SampleOptions(**{**opts, "ramp_steps": 0,
                                                                                          "max_side": 0})).tokens  # fmt: skip
    assert any(not torch.equal(a, b) for a, b in zip(own, maps))  # genlab's k / (K - 1) ramp is another sampler


def test_sides_outside_the_list_are_greedy(fx):
    """With ``sampled_sides`` (2,), sides 1 and 7 decode greedily: the tokens do not depend on the seeds."""
    model, labels = build(fx), fx["in.labels"]
    base = dict(cfg=3.0, top_k=0, top_p=1.0, scales=(1, 7))

    def tokens(seeds, **kw):
        with torch.no_grad():
            return model.sample(labels, torch.tensor(seeds), model.SampleOptions(**base, **kw)).tokens

    greedy_a, greedy_b = tokens([0, 1], sampled_sides=(2,)), tokens([5, 9], sampled_sides=(2,))
    assert all(torch.equal(x, y) for x, y in zip(greedy_a, greedy_b))
    drawn_a, drawn_b = tokens([0, 1]), tokens([5, 9])
    assert not torch.equal(drawn_a[1], drawn_b[1])  # drawn from the full distribution, they differ by seed


def test_genlab_import_flexvar_and_wrong_files(fx, tmp_path):
    from genlab.pipeline import Pipeline

    vq = load_file(str(Path(__file__).parent / "fixtures" / "llamagen_vq_tiny.safetensors"))  # LlamaGen's VQ layout
    torch.save({"model": {k[3:]: v for k, v in vq.items() if k.startswith("vq.")}}, tmp_path / "FlexVAE.pth")
    torch.save({"trainer": {"var_wo_ddp": public(fx)}}, tmp_path / "flexvar.pth")
    r = genlab("import", "flexvar", tmp_path / "flexvar.pth", "--vae", tmp_path / "FlexVAE.pth", "--scales", "1,2,3,4",
               "--out", tmp_path / "run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    pipe = Pipeline.load(tmp_path / "run")
    o = pipe.sample_options({})
    assert (o.cfg, o.top_k, o.top_p, o.ramp_steps, o.max_side) == (3.5, 900, 0.95, 9, 16) and 7 not in o.sampled_sides
    with torch.no_grad():
        logits = pipe.generator(fx["in.labels"], fx["in.inputs"])
    assert (logits - fx["out.logits"]).abs().max() <= 1e-5 * fx["out.logits"].abs().max()
    small = {k[3:]: v for k, v in vq.items() if k.startswith("vq.")}
    small["quantize.embedding.weight"] = small["quantize.embedding.weight"][:32]  # 32 codes, the head predicts 64
    torch.save({"model": small}, tmp_path / "vq32.pth")
    for args in ((tmp_path / "flexvar.pth", "--vae", tmp_path / "vq32.pth", "--scales", "1,2,3,4"),
                 (tmp_path / "FlexVAE.pth", "--vae", tmp_path / "FlexVAE.pth", "--scales", "1,2,3,4"),
                 (tmp_path / "flexvar.pth", "--scales", "1,2,3,4")):  # fmt: skip
        r = genlab("import", "flexvar", *args, "--out", tmp_path / "bad")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists(), args


def test_paper_sizes_through_the_import_path():
    """FlexVAR-d16/d20/d24/d30 as models/flexvar.py builds them (width 64 d, heads d, 4096 codes of 32, 1,000
    classes), counted on the meta device through convert_flexvar; the paper's "1.0B model" is d24."""
    from genlab.generators.var import var_spec

    counts = {}
    for d in (16, 20, 24, 30):
        cfg = {"name": "flexvar", "depth": d, "pos_grid": 32}
        with torch.device("meta"):
            own = component_from_dict("generator", cfg, "generator").build(spec=var_spec(), num_classes=1000)
        sd = {public_name(k): v for k, v in own.state_dict().items()}
        _, state, _ = convert_flexvar(sd)
        counts[d] = sum(v.numel() for v in state.values())
    assert counts == PUBLIC_COUNTS, counts
    assert abs(counts[24] - 1.0e9) / 1.0e9 < 0.05


PUBLIC_COUNTS = {16: 310_625_536, 20: 601_344_656, 24: 1_033_912_384, 30: 2_010_661_636}  # models/flexvar.py, counted


def public_name(k: str) -> str:
    """genlab's name -> FlexVAR's (the VAR table read backwards)."""
    for a, b in (("head.adaLN_modulation", "head_nm.ada_lin"), ("head.linear.", "head."),
                 ("class_emb.embedding_table.weight", "class_emb.weight"), ("pos_embed", "pos_1LC"),
                 (".attn.qkv.weight", ".attn.mat_qkv.weight"), (".attn.scale_mul", ".attn.scale_mul_1H11"),
                 (".mlp.", ".ffn."), (".adaLN_modulation.", ".ada_lin.")):  # fmt: skip
        k = k.replace(a, b)
    return k
