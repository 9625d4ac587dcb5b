"""Evaluators: metric formulas against known answers, the offline Inception's parity with
torch-fidelity's inception-v3-compat, sharding, reference files, reconstruction metrics, the CLI.

Inception runs at a few images/s on a CPU, so the tests that need it use a handful of 16x16 images.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from genlab import registry
from genlab.cli import main
from genlab.evals import EvalError, Features, Reference, gaussian_stats
from genlab.evals.features import extract
from genlab.evals.inception import resolve
from genlab.evals.metrics import (
    FID,
    KID,
    InceptionScore,
    PrecisionRecall,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
)
from genlab.evals.recon import codebook_perplexity, codebook_usage, psnr, ssim
from genlab.evals.reference import load_reference, save_reference
from genlab.evals.sources import NpzImages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("torch_fidelity")


def random_features(n, d=64, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def test_evaluators_are_registered():
    assert registry.names("evaluator") == ["fid", "is", "kid", "pr"]


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    # two Gaussians with covariances diagonal in one rotated basis R: FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    rng = np.random.default_rng(0)
    d = 16
    R, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    fd = frechet_distance(mu1, R @ np.diag(a) @ R.T, mu2, R @ np.diag(b) @ R.T)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fd == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift():
    x = random_features(500)
    ref = Reference.from_features(Features(x, None, "test"))
    assert abs(FID()(Features(x, None, "test"), ref)["fid"]) < 1e-8
    shifted = FID()(Features(x + 0.5, None, "test"), ref)["fid"]
    assert shifted == pytest.approx(64 * 0.25, rel=1e-6)  # a pure mean shift adds |dmu|^2


def test_statistics_are_float64_and_independent_of_row_order():
    x = random_features(300, d=32)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.double().numpy(), rowvar=False), rtol=1e-10, atol=1e-12)
    mu2, sigma2 = gaussian_stats(x.flip(0))
    np.testing.assert_allclose(sigma, sigma2, rtol=1e-12, atol=1e-14)


def test_kid_is_unbiased_on_identical_distributions():
    # the unbiased MMD^2 of two draws of one distribution is 0 on average (single estimates may be negative);
    # averaged over independent draws it stays within its standard error of 0, unlike a real difference
    same = [kernel_inception_distance(random_features(50, 16, 2 * s), random_features(50, 16, 2 * s + 1), subsets=1)[0]
            for s in range(30)]  # fmt: skip
    mean, sem = np.mean(same), np.std(same) / np.sqrt(len(same))
    assert abs(mean) < 3 * sem and min(same) < 0
    other = kernel_inception_distance(random_features(50, 16, 0, shift=0.5), random_features(50, 16, 1), subsets=1)[0]
    assert other > 10 * sem
    out = KID()(
        Features(random_features(40), None, "t"),
        Reference.from_features(Features(random_features(40, seed=1), None, "t")),
    )
    assert set(out) == {"kid_mean", "kid_std"}


def test_inception_score_uniform_vs_one_hot_logits():
    uniform = torch.zeros(100, 1008)
    assert inception_score(uniform, splits=1)[0] == pytest.approx(1.0)
    one_hot = torch.zeros(100, 1008)
    one_hot[torch.arange(100), torch.arange(100) % 10] = 50.0  # confident (p = 1 - 2e-19), 10 classes equally often
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    assert InceptionScore()(Features(torch.zeros(4, 2048), None, "t"), None) == {"isc_mean": None, "isc_std": None}


def test_precision_recall_of_identical_sets_is_one():
    x = random_features(60)
    out = PrecisionRecall()(Features(x, None, "t"), Reference.from_features(Features(x, None, "t")))
    assert out == {"precision": 1.0, "recall": 1.0}


def test_offline_inception_matches_inception_v3_compat():
    from genlab.evals.inception import POOL3_TS, compat_from_torchscript

    net = resolve()
    assert net.name == POOL3_TS and not net.has_logits
    x = (torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    with torch.inference_mode():
        compat = compat_from_torchscript()(x)[0]  # torch-fidelity's own module, the TorchScript's weights loaded
        wrapped = type(net.module)(POOL3_TS, ["2048"])(x)[0]  # the torch-fidelity extractor genlab registers
    assert compat.shape == (3, 2048) and compat.abs().max() > 1
    assert (wrapped - compat).abs().max().item() < 1e-5  # measured: ~1e-6 (features are O(1))
    ours, _ = net(x)  # what genlab runs: the same, with channels-last convolutions
    assert (ours - compat).abs().max().item() < 5e-5


def test_same_features_and_fid_in_one_or_two_processes(tmp_path):
    g = np.random.default_rng(0)
    images = g.integers(0, 256, size=(7, 16, 16, 3), dtype=np.uint8)  # 4 batches of 2: uneven shards
    np.savez(tmp_path / "x.npz", arr_0=images)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "f2.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "tests", "dist_eval_features.py"), str(tmp_path / "x.npz"), str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    saved = torch.load(out, weights_only=True)
    assert saved["world"] == 2
    one = extract(NpzImages(tmp_path / "x.npz"), resolve(), batch_size=2, progress=False)  # this process alone
    pools = {1: one.pool, 2: saved["pool"]}
    assert pools[1].shape == pools[2].shape == (7, 2048)
    assert (pools[1] - pools[2]).abs().max().item() < 1e-5
    ref = Reference.from_features(Features(pools[1].flip(0)[:5] * 1.1, None, "t"))
    fid1 = FID()(Features(pools[1], None, "t"), ref)["fid"]
    fid2 = FID()(Features(pools[2], None, "t"), ref)["fid"]
    assert fid1 == pytest.approx(fid2, rel=1e-5)


def test_statistics_file_round_trip_and_adm_reference(tmp_path):
    ref = Reference.from_features(Features(random_features(20), None, "inception-v3-compat"), {"resolution": 32})
    back = load_reference(save_reference(ref, tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.mu, ref.mu)
    np.testing.assert_array_equal(back.sigma, ref.sigma)
    assert back.features.shape == (20, 64) and back.meta["resolution"] == 32 and back.feature_net == ref.feature_net
    # ADM's reference batch layout: mu, sigma (float64) and arr_0 images (N, H, W, 3)
    np.savez(tmp_path / "adm.npz", mu=ref.mu, sigma=ref.sigma, arr_0=np.zeros((5, 32, 32, 3), np.uint8))
    adm = load_reference(tmp_path / "adm.npz")
    assert adm.features is None and adm.meta["resolution"] == 32 and adm.meta["adm"]
    np.testing.assert_array_equal(adm.mu, ref.mu)
    with pytest.raises(EvalError, match="no statistics"):
        np.savez(tmp_path / "bad.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
        load_reference(tmp_path / "bad.npz")


def test_adm_reference_keeps_its_statistics_and_featurises_its_images_once(tmp_path, monkeypatch):
    from genlab.evals import resolve_reference

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    mu, sigma = np.arange(2048, dtype=np.float64), np.eye(2048)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "VIRTUAL_x.npz", mu=mu, sigma=sigma, arr_0=images)
    net = resolve()
    ref = resolve_reference(str(tmp_path / "VIRTUAL_x.npz"), net, resolution=16, need_features=True, progress=False)
    np.testing.assert_array_equal(ref.mu, mu)  # ADM's statistics, as published
    assert ref.features.shape == (4, 2048)
    assert len(list((tmp_path / "cache" / "evals" / "refs").glob("*.npz"))) == 1  # its features, cached
    monkeypatch.setattr(sys.modules["genlab.evals.evaluate"], "extract", None)  # a second use runs no network
    again = resolve_reference(str(tmp_path / "VIRTUAL_x.npz"), net, resolution=16, need_features=True, progress=False)
    np.testing.assert_array_equal(again.features, ref.features)


def test_image_folder_and_npz_sources(tmp_path):
    from PIL import Image

    from genlab.evals.sources import open_images

    arr = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(tmp_path / "imgs" / "a" / f"{i}.png")
    Image.fromarray(arr[0]).save(tmp_path / "imgs" / ".hidden.png")  # skipped
    folder = open_images(tmp_path / "imgs")
    assert (folder.n, folder.resolution) == (3, 8)
    assert torch.equal(folder.batch(0, 3), torch.from_numpy(arr).permute(0, 3, 1, 2))
    np.savez(tmp_path / "x.npz", arr_0=arr)
    assert torch.equal(open_images(tmp_path / "x.npz").batch(1, 3), folder.batch(1, 3))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "imgs" / "a" / "z.png")
    with pytest.raises(EvalError, match="9x9"):
        open_images(tmp_path / "imgs").batch(0, 4)
    np.savez(tmp_path / "bad.npz", arr_0=arr.astype(np.float32))
    with pytest.raises(EvalError, match="uint8"):
        open_images(tmp_path / "bad.npz")


def test_reconstruction_metrics_on_tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(4, dtype=torch.float64))
    # PSNR on [0, 1]: the error is half of the [-1, 1] error
    mse = ((x - noisy) / 2).double().pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(x, noisy), -10 * torch.log10(mse))
    s = ssim(x, noisy)
    assert (s < 1).all() and (s > 0).all() and torch.allclose(s, ssim(noisy, x))
    assert (ssim(x, -x) < s).all()
    ids = torch.tensor([0, 1, 1, 2, 2, 2, 2, 2])
    assert codebook_usage(ids, 8) == pytest.approx(3 / 8)
    assert codebook_perplexity(torch.arange(16), 16) == pytest.approx(16.0)
    assert codebook_perplexity(torch.zeros(10, dtype=torch.long), 16) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the command line


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_run_against_cached_stats_writes_json_and_metrics_jsonl(smoke_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    stats = tmp_path / "digits-val.npz"
    code, out, _ = run_cli(
        capsys, "eval", "ref", "--dataset", "digits", "--resolution", 16, "--split", "val", "--n", 8, "--out", stats
    )
    assert code == 0 and "computed" in out
    code, out, _ = run_cli(capsys, "eval", "ref", "--dataset", "digits", "--resolution", 16, "--split", "val", "--n", 8)
    assert code == 0 and out.startswith("cached")
    code, out, err = run_cli(
        capsys, "eval", "--run", smoke_run, "--n", 6, "--steps", 2, "--ref", stats, "--batch-size", 4, "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {
        "fid",
        "kid_mean",
        "kid_std",
        "precision",
        "recall",
        "isc_mean",
        "isc_std",
        "feature_extractor",
        "n",
    }
    assert result["n"] == 6 and result["fid"] > 0 and result["isc_mean"] is None
    assert "inception-v3-compat-pool3" in result["feature_extractor"] and "Inception Score needs" in err
    entry = json.loads((smoke_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert entry["event"] == "eval" and entry["sampling"]["steps"] == 2 and entry["sampling"]["nfe"] >= 2
    assert entry["fid"] == result["fid"]


def test_eval_tokenizer_pixels_is_lossless(capsys):
    code, out, err = run_cli(capsys, "eval", "--tokenizer", "pixels", "--dataset", "digits", "--resolution", 16,
                             "--n", 4, "--no-rfid", "--json")  # fmt: skip
    assert code == 0, err
    r = json.loads(out)
    assert r["ssim"] == pytest.approx(1.0) and r["psnr"] is None and r["n"] == 4  # PSNR of identical images: inf


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-ref", "reference /nonexistent/ref.npz does not exist"),
        ("empty-folder", "has no images"),
        ("mismatched", "mismatched resolutions"),
        ("bad-metric", "unknown metric 'fud'"),
        ("no-ref", "--images needs --ref"),
        ("two-sources", "exactly one of"),
    ],
)
def test_eval_bad_input_exits_2_with_one_line(tmp_path, capsys, case, message):
    images = tmp_path / "x.npz"
    np.savez(images, arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    stats = save_reference(Reference.from_features(Features(random_features(4, 2048), None, "inception-v3-compat"),
                                                   {"resolution": 32}), tmp_path / "s32.npz")  # fmt: skip
    argv = {
        "missing-ref": ["--images", images, "--ref", "/nonexistent/ref.npz"],
        "empty-folder": ["--images", tmp_path / "empty", "--ref", stats],
        "mismatched": ["--images", images, "--ref", stats],
        "bad-metric": ["--images", images, "--ref", stats, "--metrics", "fid,fud"],
        "no-ref": ["--images", images],
        "two-sources": ["--images", images, "--run", tmp_path],
    }[case]
    code, _, err = run_cli(capsys, "eval", *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
