"""A record name is written once: in the module that declares it (schema/columns.py for columns,
schema/records.py and schema/format.py for arrays and kinds, the analysis that computes it).
Everywhere else, Python reads the constant and the dashboard reads the name from `/index` or
`/table`; a literal copy elsewhere is how the views and the routes came to disagree."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.schema import columns

ROOT = Path(__file__).resolve().parents[1]
DECLARING = ("schema", "analysis")  # folders whose modules declare record names


def guarded_names() -> set[str]:
    """Names only a record uses: every declared column, every perturbation array, and the arrays
    and prefixes records.py names (words that are also plain JSON keys, like "images", are left to
    review)."""
    names = {c.name for c in columns.BUILTIN} | {k for keys in fmt.PERTURBATION_GROUPS.values() for k in keys}
    names |= {records.TILES, records.KERNEL, records.BN_SCALE, records.EFFECTIVE_BIAS, records.IMPACT_CLEAN_PRED,
              records.IMPACT_EXACT, records.TOP_EXAMPLE_INDEX, *records.IMPACT_FLIPS, *records.DRIFT_PREV,
              records.DRIFT_FIRST, records.DEAD, *records.FOOTPRINT_ARRAYS}
    names |= {fmt.COUNTERFACTUAL_PREFIX, fmt.TOP_EXAMPLE_PREFIX, records.GRAM_PREFIX, records.FOOTPRINT_PREFIX}
    return names


def python_literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not dict-literal keys (answer fields keep their names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    keys = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys if k is not None}
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in keys | docstrings]


def test_no_record_name_is_a_literal_outside_its_declaring_python_module():
    names = guarded_names()
    found = [
        f"{path.relative_to(ROOT)}:{line} {value!r}"
        for path in sorted((ROOT / "tb_convviz").rglob("*.py"))
        if not set(DECLARING) & set(path.relative_to(ROOT / "tb_convviz").parts[:-1])
        for line, value in python_literals(path)
        if value in names
    ]
    assert not found, "record names written as literals (use the schema's constants):\n" + "\n".join(found)


def test_no_record_name_is_a_literal_in_the_dashboard():
    names = guarded_names()
    literal = re.compile(r"""(["'`])((?:(?!\1)[^\\\n])*)\1""")
    found = [
        f"{path.relative_to(ROOT)}:{n + 1} {m.group(2)!r}"
        for path in sorted((ROOT / "frontend").rglob("*.js"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines())
        if not line.lstrip().startswith(("//", "*", "/*"))
        for m in literal.finditer(line)
        if m.group(2) in names
    ]
    assert not found, "record names written in the dashboard (read them from /index or /table):\n" + "\n".join(found)
