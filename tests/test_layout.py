"""The layout rules of the package: no import cycle among mt's modules (imports inside functions count),
and the file names of the data and run folders spelled in mt/folders.py alone."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "mt")
FOLDER_FILES = ("manifest.json", "done.json", "data.json", "config.yaml", "metrics.jsonl", ".weights.h5",
                "spm.model", "dev.src.txt", "dev.tgt.txt", "vocab.json", "saved_model.pb", "assets.extra",
                "mt-export.json")


def modules():
    """{module name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def imports(path, known):
    """The mt modules that the module at `path` imports anywhere in its code."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        out.update(name for name in names if name in known)
    return out


def cycle(graph):
    """One import cycle of `graph` as a list of modules, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycle_among_mt_modules():
    known = modules()
    # the package itself (mt/__init__.py) runs before any of its modules: importing it is no edge
    graph = {name: imports(path, known) - {"mt"} for name, path in known.items()}
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def code_strings(path):
    """(line, text) of every string constant in the module's code, docstrings left out (prose may name
    files; code must ask a folder object)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_folder_file_names_are_spelled_in_the_folders_module_alone():
    pattern = re.compile("|".join(re.escape(name) for name in FOLDER_FILES))
    spelled = [f"{os.path.relpath(path, ROOT)}:{line}: {text!r}" for name, path in sorted(modules().items())
               if name != "mt.folders" for line, text in code_strings(path) if pattern.search(text)]
    assert not spelled, "\n".join(spelled)
