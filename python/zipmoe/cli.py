"""The ``zipmoe`` command line."""

from __future__ import annotations

import argparse
import sys

from . import _core


def _cmd_sysinfo(args: argparse.Namespace) -> int:
    print(f"zipmoe {_core.__version__}")
    print(f"instruction sets: {', '.join(_core.available_isas())} (default: {_core.default_isa()})")
    features = _core.cpu_features()
    print("cpu features: " + ", ".join(k for k, v in features.items() if v))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipmoe", description="Lossless MoE model serving and compression.")
    parser.add_argument("--version", action="version", version=f"zipmoe {_core.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sysinfo", help="show the version and the CPU paths this build can use")
    p.set_defaults(func=_cmd_sysinfo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except _core.ZipMoEError as e:
        print(f"zipmoe: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zipmoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
