"""Every module of the package under 400 lines and every function under 80 (issue 18): a long
module or function is a sign that two things share one place."""

from __future__ import annotations

import ast
from pathlib import Path

import kidneyseg

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
PACKAGE = Path(kidneyseg.__file__).parent


def oversized() -> list[str]:
    """Modules and functions over the limits, as `path: N lines` and `path:line name: N lines`."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE).as_posix()
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{where}: {n} lines")
        functions = [
            n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in functions:
            if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.lineno} {node.name}: {n} lines")
    return found


def test_no_module_or_function_is_oversized():
    assert oversized() == []
