"""The quantizer library: contracts for every registered quantizer, then each one's own properties."""

import itertools
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlab import registry
from genlab.config import from_dict

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "vq": {"codebook_size": 32},
    "fsq": {"levels": [5, 4, 3]},
    "lfq": {"bits": 4, "entropy_group_bits": 4},
    "rvq": {"depth": 3, "vq": {"codebook_size": 16, "ema_decay": 0.9, "dead_code_threshold": 0.5}},
    "msvq": {"scales": [1, 2, 4], "vq": {"codebook_size": 16}},
}


def build(name, dim=4, **over):
    cls = registry.get("quantizer", name)
    return cls(from_dict(cls.Config, {**TINY[name], **over}), dim=dim)


def test_every_quantizer_has_a_tiny_config():
    assert sorted(TINY) == registry.names("quantizer")


@pytest.mark.parametrize("name", sorted(TINY))
def test_contract_shapes_stats_and_decoding(name):
    torch.manual_seed(0)
    q = build(name)
    z = torch.randn(2, 4, 4, 4)
    out = q(z)
    assert out.codes.shape == z.shape and out.codes.dtype == torch.float32
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert 0 < out.stats["usage"] <= 1 and 1 <= out.stats["perplexity"] <= q.codebook_size
    q.eval()
    with torch.no_grad():
        out = q(z)
        codes = q.indices_to_codes(out.indices)
    assert torch.allclose(codes, out.codes, atol=1e-5), "indices_to_codes must give the quantised latent"
    if isinstance(out.indices, list):
        assert [tuple(i.shape) for i in out.indices] == [(2, s, s) for s in q.scales]
    else:
        assert out.indices.shape[:3] == (2, 4, 4) and out.indices.max() < q.codebook_size


@pytest.mark.parametrize("name", ["vq", "lfq", "rvq", "msvq"])
def test_straight_through_gradient_is_the_identity(name):
    dim = 4  # lfq with bits == dim has no projections
    q = build(name, dim=dim)
    z = torch.randn(2, dim, 4, 4, requires_grad=True)
    g = torch.randn_like(z)
    (q(z).codes * g).sum().backward()
    assert torch.allclose(z.grad, g)


def test_fsq_gradient_is_that_of_the_bound():
    q = build("fsq", dim=3)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    q(z).codes.sum().backward()
    x = z.detach().permute(0, 2, 3, 1).reshape(-1, 3).requires_grad_()
    (q.bound(x) / (q.levels // 2)).sum().backward()
    assert torch.allclose(z.grad.permute(0, 2, 3, 1).reshape(-1, 3), x.grad)


# ----------------------------------------------------------------------------- VQ


@pytest.mark.parametrize("l2", [False, True])
def test_vq_nearest_code_matches_brute_force_and_codes_map_to_themselves(l2):
    torch.manual_seed(1)
    vq = build("vq", dim=6, l2_norm=l2, codebook_size=50)
    x = vq.project_in(torch.randn(300, 6))
    brute = torch.cdist(x, vq.embeddings()).argmin(1)
    assert torch.equal(vq.lookup(x, chunk=1000), brute)  # chunked: 20 rows at a time
    assert torch.equal(vq.lookup(vq.embeddings()), torch.arange(50))
    codes = vq.embeddings().T.reshape(1, 6, 5, 10)  # each code as an input vector
    vq.eval()
    out = vq(codes)
    assert torch.equal(out.indices.reshape(-1), torch.arange(50))
    assert torch.allclose(out.codes, codes, atol=1e-6)


def test_vq_factorised_lookup_projects_and_normalises():
    vq = build("vq", dim=16, code_dim=4, l2_norm=True)
    assert vq.lookup_dim == 4 and vq.embeddings().norm(dim=1).allclose(torch.ones(32))
    vq.eval()
    out = vq(torch.randn(2, 16, 3, 3))
    assert out.codes.shape == (2, 16, 3, 3)
    assert torch.allclose(vq.indices_to_codes(out.indices), out.codes, atol=1e-6)


def test_vq_losses_are_commitment_and_codebook_terms():
    vq = build("vq", dim=4, beta=0.25)
    z = torch.randn(2, 4, 3, 3)
    out = vq(z)
    e = vq.indices_to_codes(out.indices).detach()
    mse = F.mse_loss(z, e)
    assert torch.allclose(out.terms["commit"], mse) and torch.allclose(out.terms["codebook"], mse)
    assert torch.allclose(out.loss, 1.25 * mse)


def test_ema_update_equals_a_hand_computed_step():
    vq = build("vq", dim=2, codebook_size=3, ema_decay=0.5, ema_eps=0.0)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        vq.embed_sum.copy_(vq.codebook)
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [9.0, 1.0]])  # two rows to code 0, one to code 1, none to code 2
    vq.train()
    vq(x.T.reshape(1, 2, 1, 3))
    # N = 0.5*1 + 0.5*[2, 1, 0] = [1.5, 1, 0.5]; m = 0.5*e + 0.5*[[0, 2], [9, 1], [0, 0]]
    size = torch.tensor([1.5, 1.0, 0.5])
    m = torch.tensor([[0.0, 1.0], [9.5, 0.5], [0.0, 5.0]])
    assert torch.allclose(vq.cluster_size, size)
    assert torch.allclose(vq.codebook, m / size[:, None])
    # the code with two assigned vectors moved toward their mean (0, 1)
    assert vq.codebook[0].tolist() == pytest.approx([0.0, 2 / 3])


def test_no_update_in_eval_or_without_gradients():
    vq = build("vq", dim=2, ema_decay=0.9, dead_code_threshold=1.0)
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    z = torch.randn(1, 2, 4, 4)
    with torch.no_grad():
        vq(z)
    vq.eval()
    vq(z)
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_dead_codes_are_reseeded_from_the_batch(ema):
    torch.manual_seed(0)
    threshold = 0.95 if ema else 0.6  # unused counts decay from 1 by ema_decay (EMA) or usage_decay
    vq = build("vq", dim=3, codebook_size=8, ema_decay=ema, dead_code_threshold=threshold, usage_decay=0.5)
    with torch.no_grad():
        vq.codebook.fill_(100.0)
        vq.codebook[0] = 0.0  # every input goes to code 0; codes 1..7 are far away and never used
        if ema:
            vq.embed_sum.copy_(vq.codebook)
    x = torch.randn(1, 3, 4, 4)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 3)
    vq.train()
    vq(x)
    revived = vq.codebook[1:]
    assert all(any(torch.allclose(r, row) for row in rows) for r in revived), "dead codes come from the batch"
    assert (vq.cluster_size >= threshold).all()
    out = vq(x)
    assert out.stats["usage"] > 1 / 8, "revived codes get used"


def test_bf16_autocast_does_not_change_assignments():
    torch.manual_seed(0)
    z = torch.randn(4, 8, 6, 6)
    for name in ("vq", "rvq", "fsq", "lfq"):
        q = build(name, dim=8).eval()
        ref = q(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = q(z)
        assert out.codes.dtype == torch.float32
        assert torch.equal(out.indices, ref.indices), name


# ----------------------------------------------------------------------------- FSQ and LFQ


def test_fsq_levels_codebook_and_round_trip():
    q = build("fsq", dim=3, levels=[8, 5, 3])
    assert q.codebook_size == 120
    idx = torch.arange(120)
    rows = q.indices_to_rows(idx)
    assert torch.equal(q.codes_to_indices(rows), idx)  # a bijection between indices and codes
    x = torch.randn(20000, 3) * 3
    codes = q.quantize_rows(x)
    for d, L in enumerate([8, 5, 3]):
        assert codes[:, d].unique().numel() == L  # exactly L values per dimension, in [-1, 1]
        assert codes[:, d].abs().max() <= 1
    assert torch.equal(q.codes_to_indices(codes).unique(), idx)  # every code is reachable


def test_lfq_round_trip_and_codebook_size():
    q = build("lfq", dim=5, bits=5)
    assert q.codebook_size == 32
    idx = torch.arange(32).reshape(1, 4, 8)
    codes = q.indices_to_codes(idx)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(q.eval()(codes).indices, idx)


def brute_force_entropies(x, tau):
    codes = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=x.shape[1])))
    logits = -(torch.cdist(x, codes) ** 2) / tau
    p = logits.softmax(-1)
    per_sample = -(p * p.log()).sum(-1).mean()
    mean = p.mean(0)
    return per_sample, -(mean * mean.log()).sum()


def test_lfq_entropy_terms_match_brute_force():
    torch.manual_seed(0)
    x = torch.randn(64, 3) * 0.3
    q = build("lfq", dim=3, bits=3, entropy_group_bits=3, temperature=0.5)
    ps, cb = q.entropy_terms(x)
    bps, bcb = brute_force_entropies(x, 0.5)
    assert torch.allclose(ps, bps, atol=1e-5) and torch.allclose(cb, bcb, atol=1e-5)
    # the per-sample term factorises over bits exactly; the codebook term is bounded by the per-bit sum
    q1 = build("lfq", dim=3, bits=3, entropy_group_bits=1, temperature=0.5)
    ps1, cb1 = q1.entropy_terms(x)
    assert torch.allclose(ps1, bps, atol=1e-5) and cb1 >= bcb - 1e-5
    # a balanced, confident batch has ~0 per-sample entropy and log(8) codebook entropy
    corners = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=3)))
    ps, cb = q.entropy_terms(corners * 3)
    assert ps < 1e-3 and math.isclose(cb.item(), math.log(8), rel_tol=1e-3)


# ----------------------------------------------------------------------------- RVQ and multi-scale


def train_briefly(q, data, steps=30):
    q.train()
    for _ in range(steps):
        q(data)
    return q.eval()


def test_rvq_error_decreases_with_depth_and_codes_are_cumulative():
    torch.manual_seed(0)
    q = build("rvq", dim=4, depth=4, shared_codebook=False, vq={"codebook_size": 16, "ema_decay": 0.8})
    z = torch.randn(8, 4, 4, 4)
    train_briefly(q, z)
    out = q(z)
    errors = [F.mse_loss(q.indices_to_codes(out.indices, depth=d), z).item() for d in range(5)]
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]
    assert out.indices.shape == (8, 4, 4, 4)
    total = sum(q.vq_at(d).indices_to_codes(out.indices[..., d]) for d in range(4))
    assert torch.allclose(total, out.codes, atol=1e-5)


def test_rvq_shared_codebook_is_one_module():
    assert len(build("rvq", shared_codebook=True).vqs) == 1 and len(build("rvq", shared_codebook=False).vqs) == 3


def test_msvq_scales_sum_to_the_latent_and_more_scales_reconstruct_better():
    torch.manual_seed(0)
    q = build("msvq", dim=4, scales=[1, 2, 3, 4, 6, 8], vq={"codebook_size": 64, "ema_decay": 0.8})
    f = F.interpolate(torch.randn(8, 4, 3, 3), size=(8, 8), mode="bilinear") + 0.1 * torch.randn(8, 4, 8, 8)
    train_briefly(q, f, steps=40)
    with torch.no_grad():
        out = q(f)
        parts = [q.scale_contribution(k, q.vq.indices_to_codes(i), (8, 8)) for k, i in enumerate(out.indices)]
        assert torch.allclose(sum(parts), out.codes, atol=1e-5)  # summing every scale gives the quantised latent
        errors = [F.mse_loss(q.indices_to_codes(out.indices[:k]), f).item() for k in range(1, 7)]
    assert errors[-1] < errors[0] and errors[-1] == min(errors), errors
    inputs = q.teacher_forcing_inputs(out.indices)
    assert [tuple(x.shape) for x in inputs] == [(8, 4, s, s) for s in (2, 3, 4, 6, 8)]


def test_msvq_phi_sharing_follows_var():
    q = build("msvq", dim=4, scales=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16], phi_count=4)
    used = [int((q.ticks - k / 9).abs().argmin()) for k in range(10)]
    assert used == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]  # VAR's PhiPartiallyShared with numpy's float64 ticks
    for K, n in itertools.product((1, 2, 3, 4, 6), (2, 3, 5, 16)):  # ties break as VAR's numpy code does
        ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)
        q = build("msvq", dim=4, scales=list(range(1, n + 1)), phi_count=K)
        ours = [int((q.ticks - k / (n - 1)).abs().argmin()) for k in range(n)]
        assert ours == [int(np.argmin(np.abs(ticks - k / (n - 1)))) for k in range(n)], (K, n)
    assert len(build("msvq", phi_count=0).phis) == 3 and build("msvq", phi_ratio=0.0).phis is None


# ----------------------------------------------------------------------------- one process vs two


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun missing",
)
def test_statistics_identical_in_one_and_two_processes(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "tests" / "dist_quantizers.py")
    for n in (1, 2):
        run = subprocess.run(
            [torchrun, "--standalone", "--nproc_per_node", str(n), script, str(tmp_path / f"p{n}.pt")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
    one, two = torch.load(tmp_path / "p1.pt"), torch.load(tmp_path / "p2.pt")
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-5), k
    assert one["restarts"] > 0, "the run must exercise dead-code re-seeding"
