"""The package's layers, checked: a module imports only from its own layer or below.

The layers, bottom up, are the ones mpipipe/__init__.py and docs/architecture.md
draw. An import that climbs (say nn/ importing the engine) is a cycle waiting to
happen and a learner reading bottom-up meeting a name not yet explained.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "mpipipe"

# A module's layer: its sub-package's, or its own name's for the modules at the top.
LAYERS = {
    "errors": 0,
    "schedules": 1,
    "plan": 2,
    "comm": 3,
    "nn": 4,
    "measure": 5,
    "course": 5,
    # one training run on one rank
    "config": 6, "engine": 6, "check": 6, "checkpoint": 6, "faults": 6, "train": 6,
    "cli": 7,
    "__main__": 8,   # `python -m mpipipe`: only the command line above it
    "__init__": 0,
}
TOP_MODULES_AT_MOST = 8
# The modules of one training run sit side by side in one layer and may import each other.
ONE_RUN = {"config", "engine", "check", "checkpoint", "faults", "train"}


def group(module):
    """`mpipipe.nn.layers` -> `nn`; `mpipipe.train` -> `train`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path):
    """Every mpipipe module `path` imports, function-level imports included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("mpipipe")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("mpipipe"):
                target = node.module
            else:
                continue
            if target == "mpipipe" or node.module is None:   # from . import a, b
                found += [(f"{target}.{a.name}", node.lineno) for a in node.names]
            else:
                found.append((target, node.lineno))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    unknown = sorted({group(module_name(p)) for p in SOURCES} - set(LAYERS))
    assert not unknown, f"give these a layer in tests/test_layout.py and docs/architecture.md: {unknown}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_import_climbs_up(path):
    me = group(module_name(path))
    climbs = []
    for target, line in imported_modules(path):
        there = group(target)
        if there == me or there == "__init__" or (me in ONE_RUN and there in ONE_RUN):
            continue
        if there not in LAYERS:
            climbs.append(f"line {line}: {target} is in no layer")
        elif LAYERS[there] >= LAYERS[me]:
            climbs.append(f"line {line}: {target} (layer {LAYERS[there]}) from layer {LAYERS[me]}")
    assert not climbs, f"{path.name} imports upward or sideways:\n  " + "\n  ".join(climbs)


def test_the_top_stays_small():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= TOP_MODULES_AT_MOST, f"{len(top)} modules at mpipipe/'s top: {top}"


def test_an_old_import_path_still_works_and_names_the_new_one():
    import importlib
    import sys
    import warnings

    sys.modules.pop("mpipipe.simulate", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("mpipipe.simulate")
    new = importlib.import_module("mpipipe.plan.simulate")
    assert old is new
    assert any("mpipipe.plan.simulate" in str(w.message) for w in caught), [str(w.message) for w in caught]
