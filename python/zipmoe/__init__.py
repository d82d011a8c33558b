"""zipmoe: lossless, memory-frugal serving of Mixture-of-Experts language models.

The native core lives in ``zipmoe._core``; this package is its public face.
"""

import os as _os

# Development hook: load the native module from a CMake build directory instead of
# the installed package (ZIPMOE_DEV_BUILD=build/dev with PYTHONPATH=python).
if _os.environ.get("ZIPMOE_DEV_BUILD"):
    __path__.insert(0, _os.path.abspath(_os.environ["ZIPMOE_DEV_BUILD"]))

from ._core import (  # noqa: F401  (re-exported)
    MAX_THREADS,
    BudgetError,
    BusyError,
    ChecksumError,
    FormatError,
    InvalidArgumentError,
    IoError,
    UnsupportedModelError,
    ZipMoEError,
    __version__,
    available_isas,
    cpu_features,
    default_isa,
)
from .codec import blob_info, compress, decompress  # noqa: F401
from .container import Container, ContainerWriter, TensorInfo, open_container  # noqa: F401
from .conversion import convert, export, verify_against  # noqa: F401,E402
from .model import Model, default_model_path, load  # noqa: F401,E402
from .chat_template import ChatTemplate  # noqa: F401,E402
from ._library import get_cmake_dir, get_include, get_library_dir, get_pkgconfig_dir  # noqa: F401,E402
from .tokenizer import Tokenizer  # noqa: F401,E402

__all__ = [
    "ZipMoEError",
    "FormatError",
    "ChecksumError",
    "InvalidArgumentError",
    "IoError",
    "UnsupportedModelError",
    "BudgetError",
    "BusyError",
    "MAX_THREADS",
    "compress",
    "decompress",
    "blob_info",
    "ContainerWriter",
    "open_container",
    "Container",
    "TensorInfo",
    "convert",
    "export",
    "verify_against",
    "load",
    "Model",
    "default_model_path",
    "ChatTemplate",
    "get_include",
    "get_library_dir",
    "get_cmake_dir",
    "get_pkgconfig_dir",
    "available_isas",
    "default_isa",
    "cpu_features",
    "__version__",
]
