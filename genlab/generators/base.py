"""The Generator contract: one protocol for flow, diffusion, masked and autoregressive models of tokens.

A generator is an ``nn.Module`` built as ``cls(cfg, spec=TokenSpec, num_classes=int, codes=TokenCodes | None)``:

- ``spec`` says what the tokens look like (``genlab.tokenizers.base.TokenSpec``); nothing else about the
  tokenizer is passed, and a generator never imports a concrete tokenizer;
- ``codes`` is the tokenizer's code protocol, by token kind (``TokenCodes``: ids -> code vectors;
  ``MultiScaleCodes``: VAR's teacher-forcing and next-scale inputs; ``ResidualCodes``: codes and quantization at
  depth d); a generator that needs one names it in ``CODES`` and ``build_generator`` checks it (a one-line
  GeneratorError); it is not a submodule (its weights stay the
  tokenizer's);
- label ``num_classes`` is the null class of classifier-free guidance.

It implements

- ``loss(tokens, labels, seeds) -> dict`` with key ``"loss"`` (a scalar); every random draw comes from the
  per-sample ``seeds`` (``genlab.nn.rng``), so sample i's loss does not depend on the batch it is in. A batch of
  variable-length tokens (``TokenSpec.variable_length``) may carry per-sample ``lengths`` (B,) int64 (the leading
  positions of the sequence axis each sample uses, ``tokenizers.base.TokenBatch``); it is then passed as
  ``loss(tokens, labels, seeds, lengths=lengths)``, which only a generator with ``TAKES_LENGTHS = True`` accepts
  (generator training refuses lengths for the others, in one line);
- ``sample(labels, seeds, options) -> Sampled``: tokens that ``Tokenizer.decode`` reads (with ``Sampled.lengths``
  when the samples use different numbers of tokens; the pipeline then calls ``decode(tokens, seeds=, lengths=)``),
  and the network evaluations per image (``nfe``, ``nfe_by_network``). ``options`` is an instance of the class's ``SampleOptions`` dataclass; its fields
  (declared with ``option(...)``) are what the CLI (``genlab sample --steps … --top-k …``), the demo and
  ``genlab bench sample`` offer for a run of this generator, and what a run config's ``sample:`` section holds.

Continuous backbones (``f(x, t, y)``, e.g. DiT) register with ``ROLE = "backbone"``: an objective
(``genlab.generators.objectives``) wraps them and is the Generator. Self-contained generators (MaskGIT, GPT,
VAR) register with ``ROLE = "generator"`` and own their loss and decoding.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

from genlab import registry
from genlab.tokenizers.base import CODE_PROTOCOLS, TokenCodes, TokenSpec

__all__ = [
    "Generator", "GeneratorError", "SampleOptions", "Sampled", "TokenCodes", "TokenSpec", "build_generator", "check_codes",
    "option",
]  # fmt: skip


class GeneratorError(ValueError):
    """A generator that does not fit the tokens or options it was given; the message says what to change."""


def option(default: Any, help: str, *, aliases: tuple[str, ...] = (), low: float | None = None,
           high: float | None = None) -> Any:  # fmt: skip
    """A sampling option: a dataclass field with its help text and, for numbers, its valid range [low, high]
    (checked by ``SampleOptions.validate``, which also refuses NaN and infinity). ``aliases`` are extra CLI
    flag names (``--guidance-interval`` for ``cfg_interval``)."""
    meta = {"help": help, "aliases": aliases, "low": low, "high": high}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class SampleOptions:
    """Base of every generator's sampling options. Subclasses add fields with ``option(...)``; ``validate``
    checks every declared range and every number for finiteness, then calls ``check`` for cross-field rules."""

    def validate(self) -> None:
        import math

        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            items = value if isinstance(value, (tuple, list)) else (value,)
            for v in items:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                if not math.isfinite(v):
                    raise ValueError(f"{f.name} must be a finite number, got {v}")
                lo, hi = meta.get("low"), meta.get("high")
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                    raise ValueError(f"{f.name} must be in {rng}, got {v}")
        self.check()

    def check(self) -> None:
        """Cross-field rules of a subclass (raise ValueError with what to change)."""

    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def merge(cls, defaults: SampleOptions, given: dict[str, Any]) -> SampleOptions:
        """``defaults`` (a run's ``sample:`` section) with the ``given`` values (typed already) replacing theirs,
        validated. Subclasses adjust dependent fields here (FlowTurbo's blocks set the steps)."""
        unknown = sorted(set(given) - set(cls.fields()))
        if unknown:
            raise ValueError(f"unknown sampling option {', '.join(unknown)}; options here: {', '.join(cls.fields())}")
        out = dataclasses.replace(defaults, **given)
        out.validate()
        return out


@dataclass
class Sampled:
    """What ``Generator.sample`` returns: one small result type, whatever the family.

    One NFE account: ``nfe`` is the main network's evaluations per image (a guided conditional + unconditional
    pass counts once); ``nfe_by_network`` every network's, by name, the main one first (a flow model under
    FlowTurbo: ``{"velocity": 7, "refiner": 5}``); a family with one network may leave it empty, which means
    ``{"model": nfe}`` (``networks_nfe``)."""

    tokens: Any  # what the tokenizer decodes: (B, C, h, w) latents, (B, h, w) / (B, N) ids, or a list of maps
    nfe: int  # evaluations per image of the main network
    nfe_by_network: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> evaluations, main first
    lengths: Tensor | None = None  # (B,) int64 tokens used per sample (variable-length 1-D tokens); None = all

    def networks_nfe(self) -> dict[str, int]:
        """``nfe_by_network``, or ``{"model": nfe}`` for a family that counts one network."""
        return dict(self.nfe_by_network) or {"model": self.nfe}


class Generator(nn.Module):
    """Base class of self-contained generators (``ROLE = "generator"``) and of objectives."""

    Config: ClassVar[type]
    SampleOptions: ClassVar[type[SampleOptions]]
    ROLE: ClassVar[Literal["backbone", "generator"]] = "generator"
    TOKEN_KINDS: ClassVar[tuple[str, ...]] = ()  # the TokenSpec kinds it models
    TOKEN_AXES: ClassVar[tuple[tuple[str, ...], ...]] = ()  # layouts beyond its kinds' classic ones (video, ...)
    CODES: ClassVar[str | None] = None  # the code protocol it needs (CODE_PROTOCOLS: ids, multiscale, residual)
    TAKES_LENGTHS: ClassVar[bool] = False  # loss() accepts lengths= (per-sample lengths of variable-length tokens)
    num_classes: int

    LOG_KEYS: ClassVar[tuple[str, ...]] = ()  # scalar outputs of ``loss`` logged beside "loss" while training

    def loss(self, tokens: Any, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def sample(self, labels: Tensor, seeds: Tensor, options: SampleOptions) -> Sampled:
        raise NotImplementedError

    def check_options(self, options: SampleOptions) -> None:
        """ValueError for options this model cannot sample with (MaskGIT: more steps than tokens), checked before
        any work starts; ``SampleOptions.validate`` has checked the options on their own."""

    def weights_module(self) -> nn.Module:
        """The module whose (EMA) weights a run exports as ``generator/model.safetensors``: the generator itself,
        or an objective's backbone."""
        return self

    @classmethod
    def check_spec(cls, spec: TokenSpec) -> None:
        check_spec(cls, spec)


def check_spec(cls: type, spec: TokenSpec) -> None:
    """GeneratorError unless ``spec.kind`` is one of ``cls.TOKEN_KINDS`` and its axes are a classic layout of the
    kind (``TokenSpec.classic``: grids, id sequences, maps) or one the class lists in ``TOKEN_AXES``."""
    if spec.kind not in cls.TOKEN_KINDS:
        raise GeneratorError(
            f"{cls.__name__} models {' or '.join(cls.TOKEN_KINDS)} tokens; this tokenizer makes {spec.kind} "
            "tokens (choose another tokenizer or generator)"
        )
    if not spec.classic and tuple(spec.axes) not in getattr(cls, "TOKEN_AXES", ()):
        raise GeneratorError(
            f"{cls.__name__} does not model {spec.kind} tokens with axes ({', '.join(spec.axes)}); this tokenizer "
            f"makes {spec.describe()} (choose another tokenizer or generator)"
        )


def check_codes(cls: type, codes: TokenCodes | None) -> None:
    """GeneratorError unless ``codes`` gives the protocol ``cls.CODES`` names (none needed when it is None)."""
    need = getattr(cls, "CODES", None)
    if need is None:
        return
    proto = CODE_PROTOCOLS[need]
    if not isinstance(codes, proto):
        have = f"{codes.spec.kind} tokens' {type(codes).__name__}" if codes is not None else "no code protocol"
        raise GeneratorError(
            f"{cls.__name__} needs {need} codes ({proto.__name__}); this tokenizer gives {have} "
            "(choose another tokenizer or generator)"
        )


def build_generator(
    generator: Any, objective: Any, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None
) -> Generator:
    """The Generator of a run config's ``generator`` (and ``objective``) sections (``config.Component``s):
    a backbone wrapped by its objective, or a self-contained generator. ValueError (GeneratorError) when the
    tokens or sizes do not fit.

    An objective class may declare ``backbone_overrides(objective_cfg, spec) -> dict`` of backbone config fields it
    needs (CTM: ``{"time_inputs": 2}``); they replace the generator section's values when the backbone is built."""
    cls = registry.get("generator", generator.name)
    check_spec(cls, spec)
    check_codes(cls, codes)
    if cls.ROLE == "backbone":
        objective_cls = registry.get("objective", objective.name)
        cfg = with_backbone_overrides(generator.cfg, objective_cls, objective.cfg, spec)
        return objective_cls(objective.cfg, cls(cfg, spec=spec, num_classes=num_classes))
    return cls(generator.cfg, spec=spec, num_classes=num_classes, codes=codes)


def with_backbone_overrides(backbone_cfg: Any, objective_cls: type, objective_cfg: Any, spec: TokenSpec) -> Any:
    """The backbone config with the fields its objective requests: an objective class may declare
    ``backbone_overrides(cls, objective_cfg, spec) -> dict`` (DDPM: ``{"learn_sigma": True}`` for 2 C output
    channels). The run config keeps the user's backbone section; the overrides are applied at every build.
    GeneratorError when the backbone has no such field."""
    hook = getattr(objective_cls, "backbone_overrides", None)
    fields = hook(objective_cfg, spec) if hook is not None else {}
    if not fields:
        return backbone_cfg
    known = {f.name for f in dataclasses.fields(backbone_cfg)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise GeneratorError(
            f"objective {objective_cls.__name__} needs backbone field(s) {', '.join(unknown)}, which this backbone "
            "does not have; choose another backbone or objective"
        )
    return dataclasses.replace(backbone_cfg, **fields)
