"""genlab: a workbench for class-conditional image generation."""

__version__ = "0.1.0"
