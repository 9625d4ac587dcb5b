"""Runs on disk: the run folder (``store``) and the trained run as one object (``genlab.pipeline``)."""

from genlab.runs.store import RunError, RunFolder

__all__ = ["RunError", "RunFolder"]
