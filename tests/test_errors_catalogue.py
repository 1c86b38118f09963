"""docs/errors.md and the catalogue tests stay in step: every row tested, every test listed."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_catalogue_test_is_documented_and_every_row_is_tested():
    doc = (ROOT / "docs" / "errors.md").read_text()
    documented = set(re.findall(r"`(test_errors_\w+\.py)::(\w+)`", doc))
    defined = set()
    for path in (ROOT / "tests").glob("test_errors_*.py"):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text())
        defined |= {(path.name, node.name) for node in tree.body
                    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert documented - defined == set(), "rows whose test does not exist"
    assert defined - documented == set(), "tests missing from docs/errors.md"
