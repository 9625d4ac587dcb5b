"""The import direction of ARCHITECTURE.md/STYLE.md, checked on the source."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "genlab"

# layer -> the genlab layers it may import
ALLOWED = {
    "registry": set(),
    "config": {"registry"},
    "nn": {"registry", "config", "nn"},
    "data": {"registry", "config", "nn", "data"},  # nn: per-sample seeds (reflow's pair datasets)
    # samplers: a flow decoder (FlexTok); runs.limits (imports config only): a model's size checked before it is built
    "tokenizers": {"registry", "config", "nn", "samplers", "tokenizers", "runs.limits"},
    "samplers": {"registry", "config", "samplers"},
    "generators": {"registry", "config", "nn", "samplers", "generators", "tokenizers.base"},
    "evals": {"registry", "config", "nn", "data", "evals"},
    "train": {"registry", "config", "nn", "data", "tokenizers.base", "train", "runs.store", "threads"},
    "runs": {"registry", "config", "runs", "tokenizers.base", "tokenizers.saved"},  # saved: the tokenizer fingerprint
    "grids": {"data"},
    "pipeline": {"registry", "config", "nn", "data", "tokenizers", "generators", "samplers", "train", "runs", "grids",
                 "pipeline"},
    "tasks": {"registry", "config", "nn", "data", "tokenizers", "generators", "evals", "train", "runs", "grids",
              "pipeline", "tasks"},
    "imports": {"registry", "config", "nn", "tokenizers", "generators", "runs", "imports"},  # other codebases' files
    "threads": set(),
    "demo": {"registry", "config", "data", "tokenizers", "samplers", "runs", "pipeline", "demo"},
    "bench": {"registry", "config", "nn", "data", "tokenizers", "generators", "samplers", "train", "pipeline", "tasks", "evals",
              "bench"},
}  # fmt: skip
# tasks sit above the pipeline (they build and load Pipelines); the pipeline finds a task by name in the registry
assert "tasks" not in ALLOWED["pipeline"] and "pipeline" in ALLOWED["tasks"]
# the command line sits on top: it may import every layer; genlab/__init__.py imports none
ALLOWED["cli"] = set(ALLOWED) | {"cli", "inputs", "safeio", "threads"}
ALLOWED["__main__"] = {"cli"}
ALLOWED[""] = set()  # genlab/__init__.py
# genlab.safeio (reading untrusted files: safetensors, JSON) sits below everything, beside the registry
ALLOWED["safeio"] = set()
ALLOWED["inputs"] = set()  # genlab.inputs: ranges of the command line's arguments (used by cli)
for _allowed in ALLOWED.values():
    _allowed.add("safeio")


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    return parts[0] if parts else ""


def genlab_imports(path: Path):
    """Every genlab module ``path`` imports: ``import genlab.x``, ``from genlab.x import y`` and ``from genlab
    import x`` (as ``genlab.x``), at module level or inside functions."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "genlab")
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: a relative import; genlab imports absolutely (from genlab.x import y)")
        elif isinstance(node, ast.ImportFrom) and node.module == "genlab":
            yield from (f"genlab.{a.name}" for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "genlab":
            yield node.module


def test_import_direction():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        layer = layer_of(".".join(rel.parts))
        if layer == "__init__":
            layer = ""
        assert layer in ALLOWED, f"genlab/{layer} is a new layer: add it to ALLOWED with the layers it may import"
        allowed = ALLOWED[layer]
        for mod in genlab_imports(path):
            target = layer_of(mod)
            full = ".".join(mod.split(".")[1:3])
            if target and target not in allowed and full not in allowed:
                bad.append(f"{rel} imports {mod}")
    assert not bad, bad


def test_the_check_sees_every_import_form(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import genlab.tasks\nfrom genlab import pipeline, registry\n"
                   "def f():\n    from genlab.cli import main\n")  # fmt: skip
    assert list(genlab_imports(src)) == ["genlab.tasks", "genlab.pipeline", "genlab.registry", "genlab.cli"]
    assert layer_of("genlab.pipeline") == "pipeline" and "tasks" not in ALLOWED["pipeline"]


def test_nothing_in_genlab_imports_apps():
    bad = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{path.relative_to(PKG.parent)} imports {n}" for n in names if n.split(".")[0] == "apps"]
    assert not bad, bad


def test_no_top_level_tokenizers_package():
    assert not (PKG.parent / "tokenizers").exists()
