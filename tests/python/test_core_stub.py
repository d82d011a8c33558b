"""The type stubs of the native module (python/zipmoe/_core.pyi) name what the module has, no more and no less."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import zipmoe
from zipmoe import _core

STUB = pathlib.Path(zipmoe.__file__).with_name("_core.pyi")


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text(encoding="utf-8"))


def _defined(body) -> dict:
    """{name: node} of the functions, classes and annotated names a stub body defines."""
    out = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def _public(names) -> set:
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def _native_parameters(function) -> list:
    """Parameter names from pybind11's signature line ("f(a: int, b: str = 'x') -> None"), self left out."""
    first = (function.__doc__ or "").strip().splitlines()[0]
    inside = first[first.index("(") + 1:first.rindex(") ->")]
    names, depth, start = [], 0, 0
    for i, char in enumerate(inside + ","):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            part = inside[start:i].strip()
            if part:
                names.append(part.split(":")[0].strip())
            start = i + 1
    return [n for n in names if n != "self"]


def _stub_parameters(node: ast.FunctionDef) -> list:
    args = node.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"]


def _check_parameters(where: str, native, node: ast.FunctionDef) -> None:
    native_names = _native_parameters(native)
    stub_names = _stub_parameters(node)
    assert len(native_names) == len(stub_names), (where, native_names, stub_names)
    for native_name, stub_name in zip(native_names, stub_names):
        # pybind11 calls unnamed arguments arg0, arg1...: the stub names them, positional-only
        assert re.fullmatch(r"arg\d+", native_name) or native_name == stub_name, (where, native_names, stub_names)


def _member(cls, member):
    value = vars(cls)[member]
    return value.__func__ if isinstance(value, staticmethod) else value


def _is_property(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def test_the_stub_and_the_module_name_the_same_things():
    stub = _defined(_stub().body)
    assert _public(stub) == _public(dir(_core))


@pytest.mark.parametrize("name", sorted(n for n in _public(dir(_core)) if isinstance(getattr(_core, n), type)))
def test_each_class_has_the_stubs_members_and_bases(name):
    cls = getattr(_core, name)
    node = _defined(_stub().body)[name]
    assert isinstance(node, ast.ClassDef)
    if issubclass(cls, BaseException):
        assert [ast.unparse(b) for b in node.bases] == [b.__name__ for b in cls.__bases__]
        return
    members = _defined(node.body)
    assert _public(members) == _public(vars(cls)), name
    for member, member_node in members.items():
        native = _member(cls, member)
        if callable(native) and isinstance(member_node, ast.FunctionDef) and not _is_property(member_node):
            _check_parameters(f"{name}.{member}", native, member_node)


def test_each_function_takes_the_stubs_parameters():
    stub = _defined(_stub().body)
    for name in _public(dir(_core)):
        native = getattr(_core, name)
        if callable(native) and not isinstance(native, type):
            assert isinstance(stub[name], ast.FunctionDef), name
            _check_parameters(name, native, stub[name])


def test_the_package_is_marked_typed():
    assert STUB.with_name("py.typed").is_file()
