#!/usr/bin/env python3
"""Checks that the C++ core is a one-way stack of layers with one error convention (docs/ARCHITECTURE.md).

    python3 tools/check_layers.py            # prints every include that points up the stack; exit 1 if any

Every quoted #include of every file under cpp/ and include/ is resolved to the layer it names and compared with
the layer of the including file. A file may include its own folder and any layer below its own, never a layer
beside or above it: codec, kernels and text sit side by side and know nothing of each other, as do cuda and
format, and bindings and capi. A public header (include/zipmoe/) belongs to the layer that implements it and may
include only other public headers, so that a native app needs nothing from cpp/.

A folder missing from LAYERS is an error too: a new folder takes its place in the stack here (and in
docs/ARCHITECTURE.md) before its first file builds. tests/ and tools/ may include anything and are not checked.

Errors travel as Status inside the core and become exceptions only at the public API and the faces, so a
`catch` is allowed only where exceptions are the language: the faces (bindings, capi) and the thread pool,
which carries a task's exception to the caller (CATCH_ALLOWED).
"""

from __future__ import annotations

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Folder of cpp/ -> level; a file may include levels strictly below its own (and its own folder).
LAYERS = {
    "common": 0,
    "codec": 1, "kernels": 1, "text": 1,
    "cuda": 2, "format": 2,
    "sched": 3,
    "cache": 4,
    "model": 5,
    "runtime": 6,
    "bindings": 7, "capi": 7,
}

# Public headers (include/...) -> the folder of cpp/ that implements them.
PUBLIC_HEADERS = {
    "zipmoe/error.h": "common",
    "zipmoe/export.h": "common",
    "zipmoe/types.h": "common",
    "zipmoe/thread_pool.h": "common",
    "zipmoe/codec.h": "codec",
    "zipmoe/container.h": "format",
    "zipmoe/cache.h": "cache",
    "zipmoe/model.h": "model",
    "zipmoe/sampler.h": "runtime",
    "zipmoe.h": "capi",
}

CATCH_ALLOWED = ("cpp/bindings/", "cpp/capi/", "cpp/common/thread_pool.cpp")

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)
SOURCE_SUFFIXES = {".h", ".cpp", ".inc", ".cu", ".cuh"}
CATCH = re.compile(r"\bcatch\s*\(")


def layer_of_file(path: pathlib.Path, root: pathlib.Path) -> str | None:
    """The layer of a file of the repository (None: not part of the core)."""
    relative = path.relative_to(root).as_posix()
    if relative.startswith("include/"):
        return PUBLIC_HEADERS.get(relative[len("include/"):], "?public")
    if relative.startswith("cpp/"):
        return relative.split("/")[1]
    return None


def layer_of_include(name: str, including: pathlib.Path, root: pathlib.Path) -> tuple[str, bool]:
    """(layer, is_public) of what `#include "name"` in `including` refers to."""
    if name in PUBLIC_HEADERS or name.startswith("zipmoe/"):
        return PUBLIC_HEADERS.get(name, "?public"), True
    sibling = including.parent / name
    if "/" not in name or sibling.exists():
        # Relative to the including file (an .inc beside its .cpp).
        return layer_of_file(sibling, root) or "?", False
    return name.split("/")[0], False


def check(root: pathlib.Path = ROOT) -> list[str]:
    """Every include of cpp/ and include/ under `root` that breaks the layering, as "file:line: why"."""
    problems = []
    files = [p for folder in ("cpp", "include") for p in sorted((root / folder).rglob("*"))
             if p.suffix in SOURCE_SUFFIXES and p.is_file()]
    for path in files:
        source = layer_of_file(path, root)
        where = path.relative_to(root).as_posix()
        if source not in LAYERS:
            problems.append(f"{where}: folder '{source}' has no place in the stack (add it to LAYERS)")
            continue
        public_file = where.startswith("include/")
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = INCLUDE.match(line)
            if not match:
                continue
            name = match.group(1)
            target, is_public = layer_of_include(name, path, root)
            if public_file and not is_public:
                problems.append(f"{where}:{number}: public header includes internal \"{name}\"")
            elif target not in LAYERS:
                problems.append(f"{where}:{number}: \"{name}\" is in no known layer")
            elif target != source and LAYERS[target] >= LAYERS[source]:
                relation = "beside" if LAYERS[target] == LAYERS[source] else "above"
                problems.append(f"{where}:{number}: {source} includes \"{name}\" ({target}, {relation} it)")
    return problems


def check_catches(root: pathlib.Path = ROOT) -> list[str]:
    """Every `catch` of cpp/ under `root` outside CATCH_ALLOWED, as "file:line: why"."""
    problems = []
    for path in sorted((root / "cpp").rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
            continue
        where = path.relative_to(root).as_posix()
        if where.startswith(CATCH_ALLOWED):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if CATCH.search(line.split("//")[0]):
                problems.append(f"{where}:{number}: catch inside the core (return a Status instead)")
    return problems


def main() -> int:
    problems = check() + check_catches()
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) with the layering or the error convention (docs/ARCHITECTURE.md)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
