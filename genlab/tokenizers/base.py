"""The Tokenizer contract: pixels <-> tokens.

Every tokenizer is an ``nn.Module`` with a typed ``Config``, a ``token_spec`` saying what its
tokens look like, ``encode(images) -> tokens`` and ``decode(tokens, seeds=None) -> images`` (images in
[-1, 1]; ``seeds`` are the per-sample seeds a stochastic decoder draws from, passed by the pipeline), and
``loss(batch, step) -> dict`` when it can be trained. Generators read only ``token_spec``; they never import a
concrete tokenizer. A tokenizer may use ``genlab.samplers`` (a flow decoder), never a generator.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn


class TokenizerError(RuntimeError):
    """A tokenizer that cannot be built or loaded (e.g. weights missing offline)."""


Kind = Literal["continuous", "discrete", "residual", "multiscale"]
Axis = Literal["channel", "time", "height", "width", "sequence", "depth"]
AXES = ("channel", "time", "height", "width", "sequence", "depth")
# the layouts each kind may have; the first of a kind's rank is what a spec without ``axes`` means (old run folders)
LAYOUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "continuous": (("channel", "height", "width"), ("channel", "time", "height", "width"), ("sequence", "channel")),
    "discrete": (("height", "width"), ("sequence",), ("time", "height", "width")),
    "residual": (("height", "width", "depth"), ("sequence", "depth")),
    "multiscale": (("height", "width"),),
}
# the layouts of round 2 (a spec's classic form): every generator of the kind models them; others must be declared
CLASSIC = {("continuous", 3), ("discrete", 1), ("discrete", 2), ("residual", 3), ("multiscale", 2)}
_NOT_POSITIONS = ("channel", "depth")  # axes within a position (a latent's channels, a residual stack's ids)


def _default_axes(kind: str, rank: int) -> tuple[str, ...] | None:
    """The first layout of ``kind`` with ``rank`` axes (what a spec without ``axes`` means)."""
    return next((a for a in LAYOUTS.get(kind, ()) if len(a) == rank), None)


@dataclass(frozen=True)
class TokenSpec:
    """What a tokenizer's tokens look like, per sample (batch dimension excluded). ``axes`` names each dimension
    of ``shape`` (data, not a special case per family); the layouts each kind may have (``LAYOUTS``):

    - continuous: ``(channel, height, width)`` a latent grid; ``(channel, time, height, width)`` a video latent;
      ``(sequence, channel)`` a 1-D sequence of vectors (TiTok-KL, ViTok);
    - discrete: ``(height, width)`` a raster grid of ids; ``(sequence,)`` a 1-D sequence (TiTok, FlexTok);
      ``(time, height, width)`` video ids;
    - residual: ``(height, width, depth)``, ``depth`` ids per position (RQ-VAE); ``(sequence, depth)``;
    - multiscale: ``scales`` (side of each square map, coarse to fine) and ``shape = (s_K, s_K)``, the last map,
      axes ``(height, width)``; the tokens are a list of (B, s_k, s_k) id maps.

    ``axes`` may be left out: it is then the kind's first layout of ``shape``'s rank, which is what every spec of
    round 2 (and every saved ``token_spec`` without ``axes``) means; ``to_dict`` leaves it out for those, so their
    saved form is unchanged. A batch of variable-length tokens carries its lengths beside the tokens
    (``genlab.generators.base.Sampled.lengths``, the token cache's ``lengths``), never inside the spec.
    """

    kind: Kind
    shape: tuple[int, ...]
    vocab_size: int = 0  # discrete kinds: codebook size (ids are 0 .. vocab_size - 1)
    scales: tuple[int, ...] = ()  # multiscale: side of each scale's token map, coarse to fine
    variable_length: bool = False  # sequences that decode from any prefix (FlexTok-style); lengths ride with a batch
    code_dim: int = 0  # discrete kinds: channels of a token's code vector (what indices_to_codes returns)
    stochastic_decoder: bool = False  # decode() draws noise (FlexTok's rectified-flow decoder): it takes seeds
    axes: tuple[str, ...] = ()  # the name of each dimension of shape (AXES); () = the kind's classic layout

    def __post_init__(self) -> None:
        layouts = LAYOUTS.get(self.kind)
        if layouts is None:
            raise ValueError(f"unknown token kind {self.kind!r}; kinds: {', '.join(LAYOUTS)}")
        if not self.axes and (default := _default_axes(self.kind, len(self.shape))) is not None:
            object.__setattr__(self, "axes", default)
        ranks = sorted({len(a) for a in layouts})
        if len(self.shape) not in ranks or min(self.shape, default=0) < 1:
            raise ValueError(
                f"a {self.kind} TokenSpec needs a shape of rank {tuple(ranks)} with positive sides, got {self.shape}"
            )
        if tuple(self.axes) not in layouts:
            valid = "; ".join(", ".join(a) for a in layouts)
            raise ValueError(f"{self.kind} tokens have axes ({valid}), got {tuple(self.axes)} for shape {self.shape}")
        if self.kind != "continuous" and self.vocab_size < 1:
            raise ValueError(f"a {self.kind} TokenSpec needs vocab_size >= 1")
        if self.kind == "multiscale" and (not self.scales or (self.scales[-1],) * 2 != tuple(self.shape)):
            raise ValueError(f"a multiscale TokenSpec needs scales ending in its shape's side, got {self.scales}")
        if self.variable_length and "sequence" not in self.axes:
            raise ValueError("variable_length applies to 1-D sequences only (a spec with a sequence axis)")

    # -- the saved form (generator/config.json's token_spec)

    def to_dict(self) -> dict:
        """JSON-able fields; ``axes`` only where it is not the kind's classic layout (old readers' form)."""
        data = dataclasses.asdict(self)
        if self.classic:
            del data["axes"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TokenSpec:
        """The inverse of ``to_dict``; a saved spec without ``axes`` (every run before axes) gets the classic one.
        ValueError (TypeError for unknown keys) for a malformed one."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    # -- geometry

    @property
    def classic(self) -> bool:
        """True for the layouts every generator of the kind models (round 2's: grids, sequences of ids, maps)."""
        return (self.kind, len(self.shape)) in CLASSIC and self.axes == _default_axes(self.kind, len(self.shape))

    def size(self, axis: str) -> int | None:
        """The length of ``axis`` (``"time"``, ``"sequence"``, ...), None when the tokens have no such axis."""
        return self.shape[self.axes.index(axis)] if axis in self.axes else None

    @property
    def discrete(self) -> bool:
        return self.kind != "continuous"

    @property
    def channels(self) -> int:
        """Channels of a continuous latent."""
        if self.kind != "continuous":
            raise ValueError(f"{self.kind} tokens have no channels (code_dim is {self.code_dim})")
        return self.shape[self.axes.index("channel")]

    @property
    def grid(self) -> tuple[int, int] | None:
        """(h, w) of a 2-D layout (the last map's for multiscale, each frame's for video); None for a sequence."""
        h, w = self.size("height"), self.size("width")
        return None if h is None or w is None else (h, w)

    @property
    def depth(self) -> int:
        """Ids per position: ``depth`` for residual tokens, 1 otherwise."""
        return self.size("depth") or 1

    @property
    def num_positions(self) -> int:
        """Positions a sequence model sees: h*w of a grid, N of a sequence, T*h*w of video, the sum of s_k^2 over
        scales (channels and residual depth are within a position)."""
        if self.kind == "multiscale":
            return sum(s * s for s in self.scales)
        return math.prod(n for n, a in zip(self.shape, self.axes) if a not in _NOT_POSITIONS)

    def describe(self) -> str:
        """One line for people: ``discrete 16x16 grid, vocab 4096``."""
        vocab = f", vocab {self.vocab_size}" if self.discrete else ""
        if not self.classic:
            dims = " x ".join(f"{n} {a}" for n, a in zip(self.shape, self.axes))
            return f"{self.kind} {dims}{vocab}"
        if self.kind == "continuous":
            return f"continuous {self.shape[0]}x{self.shape[1]}x{self.shape[2]} latent"
        if self.kind == "multiscale":
            geo = f"scales {','.join(map(str, self.scales))}"
        elif self.grid is None:
            geo = f"{self.shape[0]}-token sequence"
        else:
            geo = f"{self.shape[0]}x{self.shape[1]} grid" + (
                f" x depth {self.depth}" if self.kind == "residual" else ""
            )
        return f"{self.kind} {geo}{vocab}"


class TokenCodes:
    """The tokenizer's code protocol as generators of discrete tokens see it: a plain object (not a submodule,
    so the tokenizer's weights are never saved with the generator). It splits per kind: every discrete tokenizer
    gives ``TokenCodes`` (ids -> code vectors), a multi-scale one ``MultiScaleCodes`` (VAR's teacher-forcing and
    next-scale inputs), a residual one ``ResidualCodes`` (codes and quantization at one depth, ResGen). A generator
    names the protocol it needs in ``CODES`` (``CODE_PROTOCOLS``) and ``build_generator`` checks it. Methods a
    tokenizer does not have raise ``TokenizerError``."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer

    @property
    def spec(self) -> TokenSpec:
        return self._tok.token_spec

    def indices_to_codes(self, tokens: Any) -> Tensor:
        """Ids -> the code vectors the decoder reads: (B, code_dim, h, w) for grids and multi-scale prefixes."""
        return self._tok.indices_to_codes(tokens)

    def decode(self, tokens: Any, seeds: Tensor | None = None) -> Tensor:
        """Ids -> images in [-1, 1] (``seeds``: per-sample seeds of a stochastic decoder)."""
        return self._tok.decode(tokens, seeds=seeds)


class MultiScaleCodes(TokenCodes):
    """Multi-scale codes (VAR, FlexVAR): per-scale code vectors, teacher-forcing inputs, next-scale inputs."""

    def scale_codes(self, k: int, ids: Tensor) -> Tensor:
        """The code vectors (B, code_dim, s_k, s_k) of scale k's ids (B, s_k, s_k)."""
        return self._tok.scale_codes(k, ids)

    def teacher_forcing_inputs(self, tokens: list[Tensor]) -> list[Tensor]:
        """From ground-truth maps, the inputs of scales 2..K: [(B, code_dim, s_k, s_k)] (VAR)."""
        return self._tok.teacher_forcing_inputs(tokens)

    def next_scale_input(self, k: int, f_hat: Tensor, codes: Tensor) -> tuple[Tensor, Tensor | None]:
        """VAR's sampler step: add scale k's codes to the running latent ``f_hat`` (B, C, H, W); returns (f_hat,
        the input of scale k+1 (B, C, s_{k+1}, s_{k+1}) or None after the last scale)."""
        return self._tok.next_scale_input(k, f_hat, codes)


class ResidualCodes(TokenCodes):
    """Residual codes (RQ-VAE's D ids per position, for ResGen-style generators): depth d's codebook alone."""

    @property
    def depth(self) -> int:
        return self.spec.depth

    def depth_codes(self, d: int, ids: Tensor) -> Tensor:
        """The code vectors (B, code_dim, h, w) of depth d's ids (B, h, w); the latent is their sum over d."""
        return self._tok.depth_codes(d, ids)

    def quantize_at(self, d: int, residual: Tensor) -> tuple[Tensor, Tensor]:
        """Depth d's quantization of a residual (B, code_dim, h, w): (ids (B, h, w), codes (B, code_dim, h, w)),
        the nearest code of depth d's codebook (RQ-VAE eq. 2: k_d = Q(r_{d-1}))."""
        return self._tok.quantize_at(d, residual)

    def codebook(self, d: int) -> Tensor:
        """Depth d's code vectors (K, code_dim) in the latent space, without gradients."""
        return self._tok.depth_codebook(d)

    def nearest(self, d: int, residual: Tensor) -> Tensor:
        """Depth d's code ids (M,) nearest to residual vectors (M, code_dim), as the quantizer chooses them."""
        return self._tok.nearest_at(d, residual)


CODE_PROTOCOLS: dict[str, type[TokenCodes]] = {
    "ids": TokenCodes, "multiscale": MultiScaleCodes, "residual": ResidualCodes,
}  # fmt: skip
_PROTOCOL_OF_KIND = {"discrete": TokenCodes, "multiscale": MultiScaleCodes, "residual": ResidualCodes}


@dataclass
class TokenBatch:
    """Tokens of a batch with their per-sample lengths, for tokenizers whose samples use different numbers of
    tokens (a prefix of a variable-length sequence: FlexTok). ``lengths`` (B,) int64, each in 1..N, counts the
    leading positions of the ``sequence`` axis a sample uses; positions past it are padding (any id, ignored by
    generators that take lengths). ``None`` means every sample uses all its tokens, which is what every tokenizer
    without lengths makes: their batches are plain tensors (or lists of maps), never a TokenBatch."""

    tokens: Any
    lengths: Tensor | None = None


def check_lengths(spec: TokenSpec, lengths: Tensor, batch: int) -> None:
    """ValueError unless ``lengths`` is (batch,) integers in 1..N of a variable-length spec's sequence axis."""
    n = spec.size("sequence")
    if not spec.variable_length or n is None:
        raise ValueError(f"per-sample lengths need variable-length sequence tokens; these are {spec.describe()}")
    if lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be ({batch},) integers, got {tuple(lengths.shape)} {lengths.dtype}")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > n):
        raise ValueError(f"lengths must be in 1..{n}, got {int(lengths.min())}..{int(lengths.max())}")


class Tokenizer(nn.Module):
    """Base class: subclasses set ``Config`` and ``token_spec`` and implement encode/decode."""

    Config: Any
    token_spec: TokenSpec
    trainable: bool = True  # False for fixed transforms (pixels) and frozen pretrained models
    LOG_KEYS: tuple[str, ...] = ()  # scalar outputs of ``loss`` logged while training, besides the shared ones

    def encode(self, images: Tensor) -> Any:
        raise NotImplementedError

    def encode_batch(self, images: Tensor) -> TokenBatch:
        """Tokens with their per-sample lengths (what the token cache and generator training store); a tokenizer
        that chooses a length per image overrides it. The default: ``encode``, every sample at full length."""
        return TokenBatch(self.encode(images))

    def decode(self, tokens: Any, seeds: Tensor | None = None) -> Tensor:
        """Tokens -> images (B, 3, H, W) in [-1, 1]. ``seeds`` (B,) int64: the per-sample seeds of a stochastic
        decoder (``token_spec.stochastic_decoder``, FlexTok's flow decoder), which draws every random number from
        them (``genlab.nn.rng``) so image i depends on seed i only; deterministic decoders ignore them, and without
        seeds a stochastic one uses seeds 0..B-1. A decoder may run a sampler from ``genlab.samplers``."""
        raise NotImplementedError

    # -- the code protocol of discrete tokenizers (see TokenCodes); continuous tokenizers have none of it

    def indices_to_codes(self, tokens: Any) -> Tensor:
        raise TokenizerError(f"{type(self).__name__} makes {self.token_spec.kind} tokens: it has no code vectors")

    def scale_codes(self, k: int, ids: Tensor) -> Tensor:
        raise TokenizerError(f"{type(self).__name__} is not a multi-scale tokenizer")

    def teacher_forcing_inputs(self, tokens: list[Tensor]) -> list[Tensor]:
        raise TokenizerError(f"{type(self).__name__} is not a multi-scale tokenizer")

    def next_scale_input(self, k: int, f_hat: Tensor, codes: Tensor) -> tuple[Tensor, Tensor | None]:
        raise TokenizerError(f"{type(self).__name__} is not a multi-scale tokenizer")

    def depth_codes(self, d: int, ids: Tensor) -> Tensor:
        raise TokenizerError(f"{type(self).__name__} is not a residual tokenizer")

    def quantize_at(self, d: int, residual: Tensor) -> tuple[Tensor, Tensor]:
        raise TokenizerError(f"{type(self).__name__} is not a residual tokenizer")

    def codes(self) -> TokenCodes:
        """The code protocol generators receive (``codes=`` of a Generator's constructor), by token kind."""
        return _PROTOCOL_OF_KIND.get(self.token_spec.kind, TokenCodes)(self)

    def roundtrip(self, images: Tensor) -> Tensor:
        """Images -> reconstructions, for previews and reconstruction metrics. Continuous tokenizers with latent
        statistics override it so that it works before the statistics are fitted."""
        return self.decode(self.encode(images))

    def training_losses(self) -> nn.Module | None:
        """Modules training needs besides the tokenizer (perceptual net, discriminator), kept out of its weights.
        A module with a ``discriminator`` gets a second optimizer in the trainer."""
        return None

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """Training losses at optimizer step ``step``: "loss" (and "discriminator_loss" with a discriminator);
        ``losses`` is what ``training_losses()`` built."""
        raise TokenizerError(f"{type(self).__name__} has nothing to train")
