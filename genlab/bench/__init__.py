"""Benchmarks behind ``genlab bench NAME`` (registry kind ``benchmark``), one file each: ``train`` (DiT vs
diffusers' DiT), ``sample`` (every sampler or a generator's steps on a run), ``gpt`` (the GPT vs transformers'
Llama), ``eval`` (genlab eval vs torch-fidelity).

A benchmark is a class registered with ``@register("benchmark", NAME)``: ``help`` (one line), ``add_arguments(
parser)`` (its flags), ``run(args) -> dict`` (a JSON-able result) and optionally ``summary(result) -> str`` (what
``genlab bench NAME`` prints without ``--json``). A new benchmark is one file here (or a plugin's).
"""

from genlab.bench import eval, gpt, sample, train, zoo  # noqa: F401  (register the built-ins)
