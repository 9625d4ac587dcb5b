"""Evaluators: FID, KID, precision/recall and IS through torch-fidelity; reconstruction metrics; references.

Built-in evaluators are registered (kind "evaluator") by the import of ``metrics`` below.
torch-fidelity itself is imported only when a metric runs, so ``import genlab.evals`` works without it.
"""

from genlab.evals import metrics  # noqa: F401  (registers "fid", "kid", "pr", "is")
from genlab.evals.base import EvalError, Features, Reference, gaussian_stats
from genlab.evals.evaluate import EvalResult, dataset_reference, evaluate, parse_metrics, resolve_reference
from genlab.evals.inception import FeatureNet, resolve

__all__ = [
    "EvalError",
    "EvalResult",
    "FeatureNet",
    "Features",
    "Reference",
    "dataset_reference",
    "evaluate",
    "gaussian_stats",
    "parse_metrics",
    "resolve",
    "resolve_reference",
]
