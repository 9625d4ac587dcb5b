"""Checks every importer runs on a file that claims to be a published checkpoint, before anything is written.

A file handed to ``genlab import`` may be partial, of another model, crafted, or hold NaN. Each helper here raises
``CheckpointError`` with one line saying what was found, so that an importer can check keys, ranks and shapes as it
reads them, compare what it built with what the checkpoint holds (``check_state``), check that the generator fits
its tokenizer (``check_tokens_fit``), and read a genlab tokenizer run it is given (``read_component``). ``converting``
is the net under an importer's mapping code: a key, index or arithmetic error there is a malformed checkpoint, said
in one line, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor

from genlab.safeio import CorruptFileError, first_non_finite, load_safetensors_checked, read_json_checked


class CheckpointError(ValueError):
    """A file that is not the checkpoint it should be; the message (one line) says what was found."""


def tensor(sd: Mapping[str, Tensor], key: str, what: str, *, ndim: int | None = None) -> Tensor:
    """``sd[key]``, a non-empty tensor of rank ``ndim`` (when given); else a CheckpointError naming it."""
    t = sd.get(key)
    if not isinstance(t, Tensor):
        raise CheckpointError(f"not a {what} checkpoint: it has no {key!r}")
    if ndim is not None and t.ndim != ndim:
        raise CheckpointError(f"not a {what} checkpoint: {key!r} has {t.ndim} dimensions {tuple(t.shape)}, not {ndim}")
    if t.numel() == 0:
        raise CheckpointError(f"not a {what} checkpoint: {key!r} is empty {tuple(t.shape)}")
    return t


def finite(sd: Mapping[str, Tensor], where: str) -> None:
    """CheckpointError naming the first floating tensor holding NaN or infinity."""
    bad = first_non_finite(sd)
    if bad is not None:
        raise CheckpointError(f"{where}: tensor {bad!r} holds NaN or infinite values")


def check_state(own: Mapping[str, Tensor], state: Mapping[str, Tensor], what: str,
                optional: Iterable[str] = ()) -> None:  # fmt: skip
    """The converted ``state`` has exactly the keys of the model's ``own`` state dict (an ``optional`` suffix may be
    missing) with its shapes; the model may be on the meta device."""
    optional = tuple(optional)
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{what}: {len(extra)} tensors fit no genlab parameter (e.g. {extra[0]!r})")
    missing = sorted(k for k in set(own) - set(state) if not (optional and k.endswith(optional)))
    if missing:
        raise CheckpointError(f"{what}: {len(missing)} genlab parameters are missing (e.g. {missing[0]!r})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{what}: {k} is {tuple(v.shape)}, genlab expects {tuple(own[k].shape)}")


def check_tokens_fit(generator_spec, tokenizer_spec, what: str) -> None:
    """The tokens a generator checkpoint was trained on (a TokenSpec) are the ones its tokenizer makes."""
    fields = ("kind", "vocab_size", "code_dim", "scales", "shape")
    differ = [f for f in fields if getattr(generator_spec, f) != getattr(tokenizer_spec, f)]
    if differ:
        said = ", ".join(f"{f} {getattr(generator_spec, f)} vs {getattr(tokenizer_spec, f)}" for f in differ)
        raise CheckpointError(f"{what} does not fit its tokenizer ({said}: the generator's vs the tokenizer's)")


def read_component(folder: Path) -> tuple[dict, dict[str, Tensor]]:
    """(config.json, model.safetensors) of a genlab component folder, each checked (one line naming the file)."""
    try:
        return read_json_checked(folder / "config.json"), load_safetensors_checked(folder / "model.safetensors")
    except CorruptFileError as e:
        raise CheckpointError(str(e)) from None


@contextmanager
def converting(what: str, path: Path | str) -> Iterator[None]:
    """Turns the errors a malformed state dict causes in mapping code into one CheckpointError naming the file."""
    try:
        yield
    except (KeyError, IndexError, ZeroDivisionError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a {what} checkpoint genlab can read ({type(e).__name__}: {e})") from None
    except (ValueError, RuntimeError) as e:
        if isinstance(e, CheckpointError):
            raise CheckpointError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}: not a {what} checkpoint genlab can read ({type(e).__name__}: {first})"
        ) from None
