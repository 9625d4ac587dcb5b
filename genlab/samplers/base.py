"""What every continuous sampler shares: the signature, the networks it declares, NFE counting and the time grid.

Time convention (ARCHITECTURE.md): x_t = (1 - t) x0 + t noise, t = 1 is pure noise, dx/dt = velocity,
samplers integrate from t = 1 to t = 0. ``velocity(x, t)`` takes t as a (B,) tensor.

The contract (k-diffusion/EDM style): a sampler is a pure function registered with ``@sampler(name, ...)``

    sample(main_network, noise, ts, *, randn_like=None, callback=None, **other_networks, **method_options) -> x0

- the networks it takes are declared data: ``networks`` (required; the first is the main one, passed
  positionally, whose evaluations are the run's NFE) and ``optional`` (passed by keyword when the model has them).
  The names an objective offers (``NETWORKS``): ``velocity(x, t)``, ``refiner(x, t, v)`` (a velocity offset from a
  cached velocity, FlowTurbo), ``denoiser(x, t)`` (an x0 prediction) and ``jump(x, t, s)`` (the state at time s
  from the state at time t, consistency-style models). ``integrate`` wraps each one in ``Counted``;
- ``options``: the sampler's own options, a dataclass of ``option``-style fields (FlowTurbo's ``blocks``) that a
  flow objective's ``SampleOptions`` includes, with optional hooks ``check_options(values, steps)`` and
  ``implied_steps(values) -> int | None`` (blocks set the steps);
- ``ts``: the time grid, decreasing from 1 to 0 (``schedules.timesteps``); the method never builds it;
- ``randn_like(x)``: per-sample Gaussian noise for stochastic samplers, drawn from each image's own seed (EDM2's
  ``randn_like``), so image i keeps seed i whatever the batch; the objective always passes one; deterministic
  samplers ignore it;
- ``callback(i, t, x)``: called after step i with the state at time ``t``.

NFE is counted by wrapping every network (``Counted``), never by a formula per sampler: ``integrate`` does it and
returns the evaluations per network (``SampleResult.nfe_by_network``, the main network's first, = ``nfe``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from genlab.registry import get, register
from genlab.samplers.schedules import SCHEDULES, timesteps

Velocity = Callable[[Tensor, Tensor], Tensor]  # velocity(x (B, ...), t (B,)) -> (B, ...)
Refiner = Callable[[Tensor, Tensor, Tensor], Tensor]  # refiner(x, t, v_cached) -> velocity offset (B, ...)
Jump = Callable[[Tensor, Tensor, Tensor], Tensor]  # jump(x_t, t (B,), s (B,)) -> x_s (consistency-style models)
Network = Callable[..., Tensor]
RandnLike = Callable[[Tensor], Tensor]
Callback = Callable[[int, float, Tensor], None]
Times = Sequence[float] | Tensor
NETWORKS = ("velocity", "refiner", "denoiser", "jump")  # the networks an objective may offer a sampler


def sampler(
    name: str,
    *,
    networks: tuple[str, ...] = ("velocity",),
    optional: tuple[str, ...] = (),
    options: type | None = None,
    check: Callable[[dict, int], None] | None = None,
    implied_steps: Callable[[dict], int | None] | None = None,
) -> Callable[[Callable], Callable]:
    """Register a sampler with the networks it takes (``networks`` required, the first the main one; ``optional``
    passed when the model has them), its own ``options`` dataclass (fields made with ``sampler_option``) and their
    hooks: ``check(values, steps)`` raises ValueError for values that do not fit, ``implied_steps(values)`` is the
    number of steps given values set (or None)."""
    if not networks:
        raise ValueError(f"sampler {name!r} must declare at least one network")

    def deco(fn: Callable) -> Callable:
        fn.networks, fn.optional_networks, fn.Options = tuple(networks), tuple(optional), options
        fn.check_options, fn.implied_steps = check, implied_steps
        return register("sampler", name)(fn)

    return deco


def declared_networks(fn: Callable) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) networks of a sampler; a plain registered function takes a velocity."""
    return getattr(fn, "networks", ("velocity",)), getattr(fn, "optional_networks", ())


def option_names(fn: Callable) -> tuple[str, ...]:
    """The names of a sampler's own options (none for most)."""
    opts = getattr(fn, "Options", None)
    return tuple(f.name for f in dataclasses.fields(opts)) if opts is not None else ()


def sampler_option(default: Any, help: str) -> Any:
    """A field of a sampler's ``options`` dataclass (the metadata ``SampleOptions`` and the CLI read)."""
    return field(default=default, metadata={"help": help, "aliases": (), "low": None, "high": None})


@dataclass
class SampleResult:
    x: Tensor  # the sample at t = 0
    nfe: int  # evaluations of the main network (a guided conditional + unconditional pass counts once)
    nfe_by_network: dict[str, int] = field(default_factory=dict)  # every given network's evaluations, main first


class Counted:
    """A callable that counts its calls: the NFE of whatever sampler called it."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(*args)


def t_like(x: Tensor, t: float) -> Tensor:
    """The time t as the (B,) tensor ``velocity`` expects."""
    return x.new_full((x.shape[0],), t)


def as_times(ts: Times) -> list[float]:
    return ts.tolist() if isinstance(ts, Tensor) else [float(t) for t in ts]


def integrate(
    sampler: str | Callable[..., Tensor],
    networks: Mapping[str, Network] | Velocity,
    noise: Tensor,
    *,
    steps: int,
    shift: float = 1.0,
    schedule: str = "uniform",
    randn_like: RandnLike | None = None,
    callback: Callback | None = None,
    **method_options,
) -> SampleResult:
    """Build the time grid, run ``sampler`` on the counted networks it declares, return x0 and the counts.

    ``networks``: what the model has, by name (``NETWORKS``), or one velocity callable. Networks the sampler does
    not declare are not passed (nor counted); a required one that is missing is a ValueError."""
    sample = get("sampler", sampler) if isinstance(sampler, str) else sampler
    given = {"velocity": networks} if callable(networks) else dict(networks)
    required, optional = declared_networks(sample)
    missing = [n for n in required if n not in given]
    if missing:
        name = sampler if isinstance(sampler, str) else getattr(sample, "__name__", "sampler")
        raise ValueError(f"sampler {name} needs the network(s) {', '.join(missing)}; this model has "
                         f"{', '.join(given) or 'none'}")  # fmt: skip
    counted = {n: Counted(given[n]) for n in (*required, *optional) if n in given}
    main, *others = counted
    ts = timesteps(steps, shift=shift, schedule=schedule)
    kw = {n: counted[n] for n in others}
    x = sample(counted[main], noise, ts, randn_like=randn_like, callback=callback, **kw, **method_options)
    return SampleResult(x=x, nfe=counted[main].calls, nfe_by_network={n: c.calls for n, c in counted.items()})


__all__ = [
    "NETWORKS", "SCHEDULES", "Counted", "Jump", "Network", "Refiner", "SampleResult", "Velocity", "declared_networks",
    "integrate", "option_names", "sampler", "sampler_option", "t_like", "timesteps",
]  # fmt: skip
