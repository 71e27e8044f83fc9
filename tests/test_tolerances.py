"""Every numeric tolerance of the suite is listed in docs/robustness.md with where its bound
comes from ("Numeric tolerances of the suite"), and the list is the suite's: a tolerance
added, changed or removed here without its row fails this test.

A tolerance is an `atol`, `rtol`, `abs`, `rel` or `decimal` argument, a `pytest.approx`,
`np.allclose` or `np.isclose` at its default tolerance, or an assert that a value is below a
float literal under 1e-2. Tolerances inside the source of a subprocess (a string) are not
seen; their rows are `UNSEEN`.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC = REPO_ROOT / "docs" / "robustness.md"
SECTION = "## Numeric tolerances of the suite"
KEYWORDS = ("atol", "rtol", "abs", "rel", "decimal")
DEFAULT_TOLERANCE = ("approx", "allclose", "isclose", "assert_allclose")
# Rows for bounds the parser cannot see (the compared script runs in a subprocess).
UNSEEN = {"test_train_step.py::test_four_devices_match_one_device",
          "test_distributed.py::test_two_processes_train_checkpoint_and_match_one_process"}


def _tolerances(path: Path) -> dict[str, set[str]]:
    """test function -> its tolerances, each as written (`rtol=1e-5`, `< 1e-05`, `approx`)."""
    found: dict[str, set[str]] = defaultdict(set)

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and function == "":
            function = node.name
        if isinstance(node, ast.Call):
            keywords = [k for k in node.keywords if k.arg in KEYWORDS]
            name = ast.unparse(node.func).split(".")[-1]
            if keywords:
                found[function].update(f"{k.arg}={ast.unparse(k.value)}" for k in keywords)
            elif name in DEFAULT_TOLERANCE:
                found[function].add(name)
        if isinstance(node, ast.Compare):
            for operator, right in zip(node.ops, node.comparators, strict=True):
                if (isinstance(operator, ast.Lt | ast.LtE) and isinstance(right, ast.Constant)
                        and isinstance(right.value, float) and 0 < right.value < 1e-2):
                    found[function].add(f"< {right.value!r}")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text()), "")
    return {name: values for name, values in found.items() if name}


def suite_tolerances() -> dict[str, set[str]]:
    """`file::function` -> tolerances, over every test module."""
    return {f"{path.name}::{function}": values
            for path in sorted((REPO_ROOT / "tests").glob("test_*.py"))
            for function, values in _tolerances(path).items()}


def documented_tolerances() -> dict[str, set[str]]:
    """`file::function` -> the tolerances its row lists (the doc's second column)."""
    text = DOC.read_text().split(SECTION, 1)[1]
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `(test_\w+\.py)::(\w+)` \| (.*?) \| ", line)
        if match:
            listed = {value.strip().strip("`") for value in match.group(3).split(";")}
            rows[f"{match.group(1)}::{match.group(2)}"] = listed
    return rows


def test_every_tolerance_of_the_suite_has_its_row_and_source():
    found, documented = suite_tolerances(), documented_tolerances()
    assert len(found) > 70  # the parser still sees the suite's tolerances
    missing = sorted(set(found) - set(documented))
    assert not missing, f"tolerances without a row in {DOC.name}: {missing}"
    stale = sorted(set(documented) - set(found) - UNSEEN)
    assert not stale, f"rows in {DOC.name} for tests without those tolerances: {stale}"
    changed = {name: (sorted(found[name]), sorted(documented[name])) for name in found
               if found[name] != documented[name]}
    assert not changed, f"the tolerances changed (in the suite, in the doc): {changed}"


def test_the_parser_sees_each_kind_of_tolerance(tmp_path):
    module = tmp_path / "test_probe.py"
    module.write_text(
        "def test_a():\n"
        "    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-9)\n"
        "    assert z == pytest.approx(0.3)\n"
        "    assert error <= 1e-6 and other < 0.5\n"
        "def helper():\n"
        "    assert not np.allclose(a, b)\n")
    assert _tolerances(module) == {"test_a": {"rtol=1e-05", "atol=1e-09", "approx", "< 1e-06"},
                                   "helper": {"allclose"}}
