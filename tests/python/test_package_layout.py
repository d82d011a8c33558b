"""The package's shape: ``zipmoe.convert`` is the function and ``zipmoe.conversion`` its package, and modules use
each other's public names only."""

import ast
import importlib
import pathlib

import zipmoe

PACKAGE = pathlib.Path(zipmoe.__file__).parent


def test_convert_is_the_function_and_conversion_the_package():
    assert callable(zipmoe.convert) and zipmoe.convert.__module__ == "zipmoe.conversion.converter"
    registry = importlib.import_module("zipmoe.conversion.registry")
    assert "qwen2_moe" in registry.SUPPORTED_ARCHITECTURES
    assert importlib.import_module("zipmoe.conversion").convert is zipmoe.convert


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("zipmoe")):
                for alias in node.names:
                    # private modules (_core, _threads, _dtypes, _checks, ...) are shared on purpose; their members
                    # are public
                    private = alias.name.startswith("_") and not alias.name.endswith("__")
                    module = alias.name == "_core" or (PACKAGE / f"{alias.name}.py").is_file()
                    if private and not module:
                        offenders.append(f"{path.relative_to(PACKAGE)}: from {'.' * node.level}{node.module or ''} "
                                         f"import {alias.name}")
            if isinstance(node, ast.Attribute) and node.attr in ("_native", "_require_open") \
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: uses another object's .{node.attr}")
    assert offenders == []
