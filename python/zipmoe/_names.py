"""The core's name tables, asked of the native module once (``_core.names()``) so that Python never lists them
again: element types, codecs, instruction sets, I/O modes, cache policies, expert tiers, precisions."""

from __future__ import annotations

from . import _core

_CORE = _core.names()

DTYPES: tuple[str, ...] = tuple(_CORE["dtype"])
# The element types of weights; "u8" holds raw bytes of other tensors (docs/FORMAT.md), stored but not computed with.
FLOAT_DTYPES: tuple[str, ...] = tuple(d for d in DTYPES if d != "u8")
ISAS: tuple[str, ...] = tuple(_CORE["isa"])  # every path the core has; available_isas(): those this CPU runs
IO_MODES: tuple[str, ...] = tuple(_CORE["io_mode"])
CACHE_POLICIES: tuple[str, ...] = tuple(_CORE["cache_policy"])
EXPERT_TIERS: tuple[str, ...] = tuple(_CORE["expert_tier"])
PRECISIONS: tuple[str, ...] = tuple(_CORE["precision"])
# The codecs a caller may ask for, "auto" (the smallest per plane) first. "constant" is not one: the coder picks it
# by itself for a plane of one repeated symbol, and the core refuses it as a request.
CODECS: tuple[str, ...] = ("auto",) + tuple(c for c in _CORE["codec"] if c not in ("auto", "constant"))


def check_choice(what: str, value, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``; otherwise InvalidArgumentError naming them."""
    if not isinstance(value, str) or value not in choices:
        raise _core.InvalidArgumentError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value
