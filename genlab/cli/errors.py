"""What the commands treat as bad input: printed as one line ``genlab CMD: error: ...``, exit status 2."""

from __future__ import annotations

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    from genlab.config import ConfigError
    from genlab.data.base import DataError
    from genlab.demo import DemoError
    from genlab.evals.base import EvalError
    from genlab.pipeline import RunError
    from genlab.registry import RegistryError
    from genlab.safeio import CorruptFileError
    from genlab.tokenizers.base import TokenizerError
    from genlab.train.trainer import TrainError

    return (
        CorruptFileError,
        UsageError,
        ConfigError,
        DataError,
        DemoError,
        EvalError,
        RunError,
        RegistryError,
        TokenizerError,
        TrainError,
    )
