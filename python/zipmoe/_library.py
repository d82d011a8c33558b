"""Where the native library for C and C++ applications lies: libzipmoe, its headers and its CMake and pkg-config
files (docs/EMBEDDING.md).

    cmake -S app -B build -Dzipmoe_DIR=$(python -m zipmoe --cmake-dir)     # find_package(zipmoe CONFIG)
    cc app.c $(PKG_CONFIG_PATH=$(python -m zipmoe --pkgconfig-dir) pkg-config --cflags --libs zipmoe)

An installed package carries them under zipmoe/include and zipmoe/lib. A development checkout run with
ZIPMOE_DEV_BUILD=<build dir> (PYTHONPATH=python) uses the headers of the checkout and the library and CMake package
of that build (configured with ZIPMOE_BUILD_SHARED, the default).
"""

from __future__ import annotations

import os
import pathlib
import sys

from . import _core

__all__ = ["get_include", "get_library_dir", "get_cmake_dir", "get_pkgconfig_dir", "main"]

_PACKAGE = pathlib.Path(__file__).resolve().parent


def _dev_build() -> pathlib.Path | None:
    folder = os.environ.get("ZIPMOE_DEV_BUILD")
    return pathlib.Path(folder).resolve() if folder else None


def _missing(what: str, where: pathlib.Path) -> _core.IoError:
    return _core.IoError(f"zipmoe's {what} is not in {where}: this zipmoe was built without its native library "
                         f"(ZIPMOE_BUILD_SHARED=OFF)")


def get_include() -> str:
    """The folder holding zipmoe.h (the C API) and zipmoe/*.h (the C++ API)."""
    installed = _PACKAGE / "include"
    if (installed / "zipmoe.h").is_file():
        return str(installed)
    checkout = _PACKAGE.parent.parent / "include"
    if _dev_build() and (checkout / "zipmoe.h").is_file():
        return str(checkout)
    raise _missing("include folder", installed)


def get_library_dir() -> str:
    """The folder holding the shared library libzipmoe."""
    dev = _dev_build()
    folder = dev if dev and not (_PACKAGE / "lib").is_dir() else _PACKAGE / "lib"
    if any(folder.glob("libzipmoe.*")) or any(folder.glob("zipmoe.dll")):
        return str(folder)
    raise _missing("library", folder)


def get_cmake_dir() -> str:
    """The folder of zipmoe's CMake package: find_package(zipmoe CONFIG) with -Dzipmoe_DIR set to it."""
    dev = _dev_build()
    folder = dev / "cmake" if dev and not (_PACKAGE / "lib").is_dir() else _PACKAGE / "lib" / "cmake" / "zipmoe"
    if (folder / "zipmoeConfig.cmake").is_file():
        return str(folder)
    raise _missing("CMake package", folder)


def get_pkgconfig_dir() -> str:
    """The folder holding zipmoe.pc (for PKG_CONFIG_PATH)."""
    dev = _dev_build()
    folder = dev / "pkgconfig" if dev and not (_PACKAGE / "lib").is_dir() else _PACKAGE / "lib" / "pkgconfig"
    if (folder / "zipmoe.pc").is_file():
        return str(folder)
    raise _missing("pkg-config file", folder)


_OPTIONS = {"--include-dir": get_include, "--library-dir": get_library_dir, "--cmake-dir": get_cmake_dir,
            "--pkgconfig-dir": get_pkgconfig_dir}


def main(argv: list) -> int | None:
    """`python -m zipmoe --cmake-dir` (or --include-dir, --library-dir, --pkgconfig-dir): prints the folder and
    returns 0 (1 with a message when it is missing); None for any other command line."""
    if len(argv) != 1 or argv[0] not in _OPTIONS:
        return None
    try:
        print(_OPTIONS[argv[0]]())
    except _core.ZipMoEError as error:
        print(f"zipmoe: {error}", file=sys.stderr)
        return 1
    return 0
