"""Lossless view transforms between source tensors and canonical tensors.

A *piece* says that one region of a source tensor equals one region of a
canonical tensor, element for element. Each region is described by a short
chain of view operations applied to the C-contiguous tensor:

    ["reshape", [d0, d1, ...]]           only as the first operation
    ["index", [item, ...]]               basic numpy indexing; an item is an
                                          integer or [start, stop, step] (null
                                          for a default), one per leading axis
    ["transpose", [axis, ...]]           a permutation of the axes

Every operation yields a numpy *view*, so the same chain serves both ways:
convert assigns ``view(canonical, dst) = view(source, src)`` and export assigns
``view(source, src) = view(canonical, dst)``. Slicing, stacking, splitting,
transposing and the row permutations of llama.cpp's q/k layout are all such
chains, so every transform is exactly invertible.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _core


def _format_error(message: str) -> Exception:
    return _core.FormatError(message)


def _check_ops(ops) -> list:
    if ops is None:
        return []
    if not isinstance(ops, list):
        raise _format_error(f"view operations must be a list, not {ops!r}")
    for position, op in enumerate(ops):
        if not (isinstance(op, list) and len(op) == 2 and isinstance(op[0], str) and isinstance(op[1], list)):
            raise _format_error(f"malformed view operation {op!r}")
        if op[0] == "reshape" and position != 0:
            raise _format_error("a reshape may only be the first view operation")
        if op[0] not in ("reshape", "index", "transpose"):
            raise _format_error(f"unknown view operation {op[0]!r}")
    return ops


def _index_tuple(items) -> tuple:
    out = []
    for item in items:
        if isinstance(item, bool):
            raise _format_error(f"bad index item {item!r}")
        if isinstance(item, int):
            out.append(item)
        elif isinstance(item, list) and len(item) == 3 and all(v is None or (isinstance(v, int) and not isinstance(v, bool))
                                                                for v in item):
            if item[2] == 0:
                raise _format_error("a slice step may not be zero")
            out.append(slice(*item))
        else:
            raise _format_error(f"bad index item {item!r}")
    return tuple(out)


def result_shape(shape, ops) -> tuple:
    """The shape a chain of operations gives on a tensor of ``shape`` (FormatError when invalid)."""
    shape = tuple(int(d) for d in shape)
    for kind, args in _check_ops(ops):
        if kind == "reshape":
            new = tuple(int(d) for d in args)
            if any(d < 0 for d in new) or math.prod(new) != math.prod(shape):
                raise _format_error(f"cannot reshape {shape} to {new}")
            shape = new
        elif kind == "index":
            items = _index_tuple(args)
            if len(items) > len(shape):
                raise _format_error(f"too many indices {args} for shape {shape}")
            new = []
            for axis, item in enumerate(items):
                if isinstance(item, int):
                    if not 0 <= item < shape[axis]:
                        raise _format_error(f"index {item} out of range for axis {axis} of shape {shape}")
                else:
                    new.append(len(range(*item.indices(shape[axis]))))
            shape = tuple(new) + shape[len(items):]
        else:
            axes = [int(a) for a in args]
            if sorted(axes) != list(range(len(shape))):
                raise _format_error(f"bad transpose {axes} for shape {shape}")
            shape = tuple(shape[a] for a in axes)
    return shape


def apply(array: np.ndarray, ops) -> np.ndarray:
    """The view of ``array`` (C-contiguous) that ``ops`` describe; never a copy."""
    view = array
    for kind, args in _check_ops(ops):
        if kind == "reshape":
            view = view.reshape(tuple(args))
        elif kind == "index":
            view = view[_index_tuple(args)]
        else:
            view = view.transpose(tuple(args))
    if ops and view.size and not np.shares_memory(view, array):
        raise _format_error("a view operation chain produced a copy")  # only a programming error can get here
    return view


def is_plain(ops) -> bool:
    """True when ``ops`` selects whole leading-axis entries only, so the view is C-contiguous."""
    if not ops:
        return True
    if len(ops) == 1 and ops[0][0] == "index":
        return all(isinstance(item, int) and not isinstance(item, bool) for item in ops[0][1])
    return False


def index(*items) -> list:
    """["index", items] with Python slices written as [start, stop, step]."""
    out = []
    for item in items:
        if isinstance(item, slice):
            out.append([item.start, item.stop, item.step])
        else:
            out.append(int(item))
    return ["index", out]


def transpose(*axes) -> list:
    return ["transpose", [int(a) for a in axes]]


def reshape(*dims) -> list:
    return ["reshape", [int(d) for d in dims]]
