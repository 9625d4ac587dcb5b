"""The discrete Gaussian diffusion of DDPM (Ho et al. 2020) with IDDPM's learned variance (Nichol & Dhariwal 2021),
as DiT trains and samples it: the schedule, its respacing, the posterior, the model's mean and variance, the VLB
terms, and the map between the DDPM step n and genlab's flow time t.

Forward process (Ho et al. eq. 4): x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps, abar_n = prod_{i <= n} (1 - beta_i),
n = 0 .. N-1, with DiT's linear betas from 1e-4 to 0.02 over N = 1000 steps (scaled by 1000 / N as IDDPM does).
Posterior (Ho et al. eq. 6-7): q(x_{n-1} | x_n, x0) = N(c1 x0 + c2 x_n, beta~_n), c1 = beta_n sqrt(abar_{n-1}) /
(1 - abar_n), c2 = (1 - abar_{n-1}) sqrt(alpha_n) / (1 - abar_n), beta~_n = beta_n (1 - abar_{n-1}) / (1 - abar_n).
Learned range (IDDPM eq. 15): log Sigma = v log beta_n + (1 - v) log beta~_n with v = (out + 1) / 2.

Flow time: x_n / (a + b) with a = sqrt(abar_n), b = sqrt(1 - abar_n) is genlab's x_t = (1 - t) x0 + t eps at
t = b / (a + b); conversely abar(t) = (1 - t)^2 / ((1 - t)^2 + t^2) and x_n = x_t / sqrt((1 - t)^2 + t^2).
``continuous_step`` inverts abar by linear interpolation of log abar between integer steps (clamped to [0, N-1]:
DDPM's noisiest step is t = 0.9937, its cleanest t = 0.0099).

Coefficients are float64 tables; like IDDPM's ``_extract_into_tensor`` each is indexed and cast to float32 before
it multiplies a tensor, so genlab computes what DiT's diffusion computes to float rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """IDDPM's "linear" schedule: betas from 1000/N * start to 1000/N * end, float64 (N,)."""
    scale = 1000 / num_steps
    return torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)


def space_timesteps(num_steps: int, count: int, spacing: str = "iddpm") -> list[int]:
    """The ``count`` original steps a respaced process keeps, increasing.

    ``iddpm``: IDDPM's ``space_timesteps(N, str(count))``: evenly spaced with both ends, round(k (N - 1) / (count - 1))
    (DiT's DDPM-250); ``leading``: k * (N // count), diffusers' DDIMScheduler default and IDDPM's "ddim{count}" when
    count divides N."""
    if not 1 <= count <= num_steps:
        raise ValueError(f"steps must be in [1, {num_steps}] for a {num_steps}-step diffusion, got {count}")
    if spacing == "leading":
        return [k * (num_steps // count) for k in range(count)]
    if spacing != "iddpm":
        raise ValueError(f"unknown spacing {spacing!r}; spacings: iddpm, leading")
    stride = 1.0 if count <= 1 else (num_steps - 1) / (count - 1)
    steps, cur = [], 0.0
    for _ in range(count):
        steps.append(round(cur))
        cur += stride
    return sorted(set(steps))


class Diffusion:
    """The tables of one (possibly respaced) diffusion; ``timesteps[k]`` is the original step of index k."""

    def __init__(self, betas: Tensor, timesteps: list[int] | None = None, num_train_steps: int | None = None):
        self.betas = betas.double()
        self.num_steps = len(betas)
        self.num_train_steps = num_train_steps or self.num_steps
        self.timesteps = list(range(self.num_steps)) if timesteps is None else list(timesteps)
        alphas = 1.0 - self.betas
        self.abar = torch.cumprod(alphas, 0)
        self.abar_prev = torch.cat([self.abar.new_ones(1), self.abar[:-1]])
        self.sqrt_abar, self.sqrt_1m_abar = self.abar.sqrt(), (1.0 - self.abar).sqrt()
        self.sqrt_recip_abar, self.sqrt_recipm1_abar = (1.0 / self.abar).sqrt(), (1.0 / self.abar - 1).sqrt()
        var = self.betas * (1.0 - self.abar_prev) / (1.0 - self.abar)
        self.posterior_log_var = torch.cat([var[1:2] if len(var) > 1 else self.betas[:1], var[1:]]).log()
        self.log_betas = self.betas.log()
        self.fixed_large_log_var = torch.cat([var[1:2] if len(var) > 1 else self.betas[:1], self.betas[1:]]).log()
        self.coef1 = self.betas * self.abar_prev.sqrt() / (1.0 - self.abar)
        self.coef2 = (1.0 - self.abar_prev) * alphas.sqrt() / (1.0 - self.abar)

    def respaced(self, steps: int, spacing: str = "iddpm") -> Diffusion:
        """IDDPM's SpacedDiffusion: the betas that jump between the kept steps, 1 - abar_k / abar_{k-1}."""
        keep = space_timesteps(self.num_steps, steps, spacing)
        abar = self.abar[keep]
        prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return Diffusion(1.0 - abar / prev, [self.timesteps[i] for i in keep], self.num_train_steps)

    # ------------------------------------------------------------------ tensors at indices k (B,) long

    @staticmethod
    def at(table: Tensor, k: Tensor, like: Tensor) -> Tensor:
        """table[k] as float32, shaped (B, 1, ..., 1) to broadcast against ``like`` (IDDPM's _extract_into_tensor)."""
        return table.to(k.device)[k].float().view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: Tensor, k: Tensor, eps: Tensor) -> Tensor:
        return self.at(self.sqrt_abar, k, x0) * x0 + self.at(self.sqrt_1m_abar, k, x0) * eps

    def q_posterior(self, x0: Tensor, x: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log variance of q(x_{k-1} | x_k, x0)."""
        mean = self.at(self.coef1, k, x) * x0 + self.at(self.coef2, k, x) * x
        return mean, self.at(self.posterior_log_var, k, x)

    def predict_x0(self, x: Tensor, k: Tensor, eps: Tensor) -> Tensor:
        return self.at(self.sqrt_recip_abar, k, x) * x - self.at(self.sqrt_recipm1_abar, k, x) * eps

    def p_mean_variance(self, out: Tensor, x: Tensor, k: Tensor, learned: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(mean, log variance, x0 prediction) of p(x_{k-1} | x_k) from the network's output (B, C or 2C, ...)."""
        C = x.shape[1]
        eps = out[:, :C]
        if learned:
            frac = (out[:, C:] + 1) / 2
            log_var = frac * self.at(self.log_betas, k, x) + (1 - frac) * self.at(self.posterior_log_var, k, x)
        else:  # IDDPM's fixed_large
            log_var = self.at(self.fixed_large_log_var, k, x).expand_as(x)
        x0 = self.predict_x0(x, k, eps)
        mean, _ = self.q_posterior(x0, x, k)
        return mean, log_var, x0

    def vlb(self, out: Tensor, x0: Tensor, x: Tensor, k: Tensor) -> Tensor:
        """The VLB term per sample (B,), in bits per dimension: KL(q || p) for k > 0 (Ho et al. eq. 5), the
        discretized-Gaussian decoder NLL at k = 0 (IDDPM's ``_vb_terms_bpd``)."""
        true_mean, true_log_var = self.q_posterior(x0, x, k)
        mean, log_var, _ = self.p_mean_variance(out, x, k, learned=True)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).flatten(1).mean(1) / math.log(2.0)
        return torch.where(k == 0, nll, kl)

    # ------------------------------------------------------------------ flow time

    def flow_time(self, k: int) -> float:
        """genlab's flow time of index k: t = b / (a + b)."""
        a, b = self.sqrt_abar[k].item(), self.sqrt_1m_abar[k].item()
        return b / (a + b)

    def continuous_step(self, t: Tensor) -> Tensor:
        """The (fractional) original step n in [0, N-1] whose abar is (1 - t)^2 / ((1 - t)^2 + t^2); t (B,)."""
        t = t.double()
        log_abar = 2 * torch.log1p(-t) - torch.log((1 - t) ** 2 + t**2)  # -inf at t = 1
        table = -self.abar.log().to(t.device)  # increasing in n
        target = (-log_abar).clamp(table[0], table[-1])
        i = torch.searchsorted(table, target).clamp(1, len(table) - 1)
        lo, hi = table[i - 1], table[i]
        return (i - 1) + (target - lo) / (hi - lo)

    def abar_at(self, n: Tensor) -> Tensor:
        """abar at fractional steps n (B,) float64: log abar interpolated linearly between integer steps."""
        log_abar = self.abar.log().to(n.device)
        i = n.floor().long().clamp(0, len(log_abar) - 2)
        w = n - i
        return torch.exp((1 - w) * log_abar[i] + w * log_abar[i + 1])


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)) (Ho et al. eq. 13)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    mid = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, mid))
