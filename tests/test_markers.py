"""The `slow` marker's lists in conftest.py name tests that exist: a renamed module or test would silently
move a slow test into the fast subset."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import SLOW_MODULES, SLOW_TESTS, pytest_collection_modifyitems

TESTS = Path(__file__).resolve().parent


def functions_of(module: str) -> set[str]:
    tree = ast.parse((TESTS / module).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("module", sorted(SLOW_MODULES))
def test_every_slow_module_exists_and_has_tests(module):
    assert (TESTS / module).is_file(), module
    assert functions_of(module), module


@pytest.mark.parametrize("entry", sorted(SLOW_TESTS))
def test_every_slow_test_exists(entry):
    module, name = entry.split("::")
    assert module not in SLOW_MODULES, f"{entry}: its whole module is slow already"
    assert (TESTS / module).is_file(), entry
    assert name in functions_of(module), entry


class Item:
    """What pytest_collection_modifyitems reads of a collected test."""

    def __init__(self, module: str, name: str, params: str = "", e2e: bool = False):
        self.path, self.originalname, self.name = TESTS / module, name, name + params
        self.marks = ["e2e"] if e2e else []

    def get_closest_marker(self, mark: str):
        return mark if mark in self.marks else None

    def add_marker(self, mark) -> None:
        self.marks.append(mark.name)


def test_the_marker_goes_to_listed_modules_tests_and_e2e_tests_only():
    slow_entry = sorted(SLOW_TESTS)[0].split("::")
    items = {
        "module": Item(sorted(SLOW_MODULES)[0], "test_anything"),
        "listed": Item(*slow_entry, params="[4bit]"),  # every parametrization
        "e2e": Item("test_elsewhere.py", "test_end_to_end", e2e=True),
        "neighbour": Item(slow_entry[0], "test_not_listed"),
        "fast": Item("test_summary.py", "test_fairness_edges"),
    }
    pytest_collection_modifyitems(None, list(items.values()))
    assert {k for k, item in items.items() if "slow" in item.marks} == {"module", "listed", "e2e"}
