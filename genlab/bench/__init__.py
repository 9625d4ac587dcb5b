"""Benchmarks behind ``genlab bench``: ``train`` (DiT vs diffusers' DiT), ``sample`` (every sampler or a
generator's steps on a run), ``gpt`` (the GPT vs transformers' Llama); ``genlab.evals.bench`` is ``bench eval``."""
