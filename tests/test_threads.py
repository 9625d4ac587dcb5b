"""genlab.threads: OpenMP waits passively unless the user chose, and the entry point applies it before torch loads."""

import ast
import subprocess
import sys
from pathlib import Path

from genlab import threads

CLI = Path(__file__).resolve().parents[1] / "genlab" / "cli" / "__init__.py"


def test_sets_a_short_spin_count_when_unset():
    env = {"OMP_NUM_THREADS": "3"}
    assert threads.configure(env) == {"GOMP_SPINCOUNT": "1000"}
    assert env == {"OMP_NUM_THREADS": "3", "GOMP_SPINCOUNT": "1000"}  # the thread count is the user's


def test_a_user_setting_wins():
    for choice in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(choice)
        assert threads.configure(env) == {} and env == choice


def test_main_configures_threads_before_anything_else():
    tree = ast.parse(CLI.read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    first_call = next(n for n in main.body if isinstance(n, ast.Expr))
    assert ast.unparse(first_call) == "threads.configure()"
    before = main.body[: main.body.index(first_call)]
    assert all(isinstance(n, ast.ImportFrom) and n.module == "genlab" for n in before)
    top = [n.module if isinstance(n, ast.ImportFrom) else a.name for n in tree.body
           if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names]  # fmt: skip
    assert "torch" not in top and all(m == "genlab.cli.errors" for m in top if m.startswith("genlab")), top
    code = "import sys, genlab.cli; print('torch' in sys.modules)"  # the commands import torch once main runs
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
