"""The shape of the code: the top-level modules import one another without a cycle, and every list of
choices a setting can take is declared once, in params.py, and imported wherever it is checked."""

import ast
import re
from pathlib import Path

import params

ROOT = Path(__file__).resolve().parents[1]
MODULES = {p.stem: p for p in ROOT.glob("*.py") if re.fullmatch(r"[a-z_]+", p.stem)}  # notebooks have dashes
CHOICE_LISTS = {name: value for name, value in vars(params).items()
                if name.isupper() and isinstance(value, tuple) and value and all(isinstance(v, str) for v in value)
                and name not in ("SPECIAL_TOKENS",)}


def imports_of(path: Path) -> set[str]:
    """The project modules `path` imports anywhere in its text (top level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a list of nodes (first == last), or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_modules_import_one_another_without_a_cycle():
    graph = {name: imports_of(path) - {name} for name, path in MODULES.items()}
    assert {"model_defs", "tokenization", "corpus", "fileio", "pretrain_data"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_model_module_holds_the_model_only():
    """Tokenizer and file helpers live in modules of their own; model_defs needs neither the corpus
    nor the tokenizer."""
    assert imports_of(MODULES["model_defs"]) <= {"params", "fileio"}
    assert imports_of(MODULES["fileio"]) == set()


def literal_string_tuples(path: Path):
    """(line, values) of every tuple or list of two or more string literals written in `path`."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, tuple(e.value for e in node.elts)


def test_every_choice_list_has_one_definition():
    """No module spells out a choice list of params.py (or a part of one of two or more choices) again:
    it imports it, so a new choice cannot be accepted by the settings and refused by the code."""
    assert {"POSITIONS", "ATTENTIONS", "DEVICES", "DTYPES", "SCHEDULES", "POOLINGS", "PAIR_ENCODINGS"} <= set(CHOICE_LISTS)
    copies = []
    for name, path in MODULES.items():
        for line, values in literal_string_tuples(path):
            for list_name, choices in CHOICE_LISTS.items():
                if set(values) <= set(choices) and not (name == "params" and values in CHOICE_LISTS.values()):
                    copies.append(f"{path.name}:{line} {values} copies params.{list_name}")
    assert not copies, "\n".join(copies)
