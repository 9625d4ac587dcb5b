"""Reconstruction metrics for tokenizers: PSNR, SSIM, LPIPS, rFID, codebook usage and perplexity.

Images are float in [-1, 1] (B, 3, H, W); PSNR and SSIM are computed per image on [0, 1] and
averaged. SSIM is Wang et al. 2004 (eq. 13) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, per channel, 'valid' windows only, as scikit-image's ``gaussian_weights=True`` setting
and most tokenizer papers use. LPIPS is torch-fidelity's ``lpips-vgg16`` and runs only when its two
weight files are already in the torch hub cache (genlab never downloads them). rFID is FID of the
reconstructions against the originals' reference statistics (``evaluate.dataset_reference``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from genlab.data import to_float, to_uint8
from genlab.evals.base import EvalError, Features, Reference, gaussian_stats
from genlab.evals.features import process_state, spans
from genlab.evals.inception import FeatureNet
from genlab.evals.metrics import frechet_distance
from genlab.evals.sources import ImageSource

LPIPS_FILES = ("weights-vgg16-lpips.pth", "vgg16-397923af.pth")  # torch-fidelity's LPIPS head; torchvision's VGG16


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (B,), computed on [0, 1] in float64; inf where equal."""
    a, b = (x.double() + 1) / 2, (y.double() + 1) / 2
    mse = (a - b).pow(2).flatten(1).mean(1)  # (B,)
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    g = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)  # (size, size)


def ssim(x: Tensor, y: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-image mean SSIM (B,) of images in [-1, 1], on [0, 1] in float64 (Wang et al. 2004, eq. 13)."""
    a, b = (x.double() + 1) / 2, (y.double() + 1) / 2
    C = a.shape[1]
    if min(a.shape[-2:]) < window:
        raise EvalError(
            f"SSIM with an {window}x{window} window needs images at least that large, got {tuple(a.shape[-2:])}"
        )
    w = _gaussian_window(window, sigma).to(a.device).expand(C, 1, window, window)  # (C, 1, k, k)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=C)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def codebook_usage(indices: Tensor, vocab_size: int) -> float:
    """Fraction of the codebook that ``indices`` use at least once."""
    return torch.bincount(indices.flatten().long(), minlength=vocab_size).gt(0).double().mean().item()


def codebook_perplexity(indices: Tensor, vocab_size: int) -> float:
    """exp(entropy) of the code histogram: ``vocab_size`` for uniform use, 1 for a collapsed codebook."""
    counts = torch.bincount(indices.flatten().long(), minlength=vocab_size).double()
    p = counts / counts.sum()
    return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())


def lpips_weights_missing() -> list[str]:
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    return [str(ckpt / f) for f in LPIPS_FILES if not (ckpt / f).is_file()]


def lpips_model():
    """torch-fidelity's LPIPS-VGG16 from the local torch hub cache, or None when its weights are absent."""
    if lpips_weights_missing():
        return None
    from torch_fidelity.sample_similarity_lpips import SampleSimilarityLPIPS

    return SampleSimilarityLPIPS("lpips-vgg16", sample_similarity_resize=None, sample_similarity_dtype="uint8")


@torch.no_grad()
def reconstruction_metrics(tokenizer: torch.nn.Module, images: Tensor, batch_size: int = 64) -> dict:
    """What a tokenizer run writes to ``recon.json``: PSNR and SSIM (this module's, as ``genlab eval --tokenizer``
    reports them; SSIM is None for images under 11 pixels a side), and for discrete tokenizers the codebook usage
    and perplexity over all of ``images`` (B, 3, H, W) in [-1, 1]. Clips (B, 3, T, H, W) (a video tokenizer's
    run) are scored per frame: PSNR and SSIM are means over every frame of every clip; ``n`` counts clips."""
    device = next(tokenizer.parameters()).device
    spec = tokenizer.token_spec
    psnrs, ssims, ids = [], [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        if spec.discrete:
            tokens = tokenizer.encode(x)
            rec = tokenizer.decode(tokens)
            ids.append(torch.cat([t.flatten() for t in tokens]) if isinstance(tokens, list) else tokens.flatten())
        else:
            rec = tokenizer.roundtrip(x)
        x, rec = x.float().cpu(), rec.float().clamp(-1, 1).cpu()
        if x.ndim == 5:  # clips -> their frames (B*T, 3, H, W)
            x, rec = x.transpose(1, 2).flatten(0, 1), rec.transpose(1, 2).flatten(0, 1)
        psnrs.append(psnr(x, rec))
        if min(x.shape[-2:]) >= 11:
            ssims.append(ssim(x, rec))
    out: dict = {"psnr": torch.cat(psnrs).mean().item(), "ssim": torch.cat(ssims).mean().item() if ssims else None}
    if ids:
        flat = torch.cat(ids).cpu()
        out["codebook_usage"] = codebook_usage(flat, spec.vocab_size)
        out["codebook_perplexity"] = codebook_perplexity(flat, spec.vocab_size)
    out["n"] = len(images)
    return out


Roundtrip = Callable[[Tensor], tuple[Tensor, Tensor | None]]  # images [-1, 1] -> (reconstructions, code ids or None)


def reconstruction_eval(
    source: ImageSource,
    roundtrip: Roundtrip,
    net: FeatureNet | None,
    ref: Reference | None,
    *,
    vocab_size: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    state=None,
) -> dict:
    """psnr, ssim, lpips (None without local weights), rfid (None without a feature net), codebook usage/perplexity."""
    state = state or process_state()
    world, rank = state.num_processes, state.process_index
    lpips = lpips_model()
    parts = []
    with tqdm(
        total=source.n, desc="reconstructions", unit="img", disable=not (progress and state.is_main_process)
    ) as bar:
        for start, stop in spans(source.n, batch_size)[rank::world]:
            x = to_float(source.batch(start, stop))  # (B, 3, H, W) in [-1, 1]
            with torch.inference_mode():
                rec, ids = roundtrip(x)
                rec = rec.float().clamp(-1, 1).cpu()
                u8 = to_uint8(rec)
                part = {"start": start, "psnr": psnr(x, rec), "ssim": ssim(x, rec)}
                if lpips is not None:
                    part["lpips"] = lpips(to_uint8(x), u8).double().flatten()
                if net is not None:
                    part["pool"] = net(u8)[0]
                if ids is not None:
                    part["ids"] = torch.bincount(ids.flatten().long().cpu(), minlength=vocab_size)
            parts.append(part)
            bar.update((stop - start) * world)
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)
    parts.sort(key=lambda p: p["start"])
    cat = lambda k: torch.cat([p[k] for p in parts])  # noqa: E731
    out: dict = {"psnr": cat("psnr").mean().item(), "ssim": cat("ssim").mean().item()}
    out["lpips"] = cat("lpips").mean().item() if lpips is not None else None
    if net is not None and ref is not None:
        mu, sigma = gaussian_stats(Features(cat("pool"), None, net.name).pool)
        out["rfid"] = frechet_distance(mu, sigma, ref.mu, ref.sigma)
    else:
        out["rfid"] = None
    if parts and "ids" in parts[0]:
        counts = torch.stack([p["ids"] for p in parts]).sum(0)
        ids = torch.repeat_interleave(torch.arange(len(counts)), counts)
        out["codebook_usage"] = codebook_usage(ids, vocab_size)
        out["codebook_perplexity"] = codebook_perplexity(ids, vocab_size)
    out["n"] = source.n
    return out
