#!/usr/bin/env python3
"""Instructions the exponent decoders execute per output symbol (plain decode, and with the checksum).

    python tools/count_decode_instructions.py --decoder build/dev/decode_icount --isa avx2
    python tools/count_decode_instructions.py --decoder build/arm/decode_icount --isa neon --qemu

Makes a blob of --elements N(0, 0.02) BF16 weights per codec with the decoder's `make` command, then runs its
`decode` command once per codec and mode and counts the instructions of the decode call alone:
  - natively under valgrind --tool=callgrind --toggle-collect=decode_region (x86-64; callgrind counts an AVX2
    gather as one instruction);
  - with --qemu, an AArch64 build (static, e.g. the aarch64 leg of .ci/run with -DZIPMOE_BUILD_TOOLS=ON) under
    qemu-aarch64 -d in_asm,exec,nochain: every translation block executed between the calls of the marker
    functions zipmoe_icount_begin and zipmoe_icount_end counts its instructions.
Speed under qemu means nothing; instruction counts are exact for the code that runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile


def symbol_address(binary: str, name: str) -> int:
    out = subprocess.run(["aarch64-linux-gnu-nm", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise SystemExit(f"{binary} has no symbol {name}")


def count_qemu(binary: str, args: list[str], workdir: str) -> int:
    log = os.path.join(workdir, "qemu.log")
    subprocess.run(["qemu-aarch64", "-d", "in_asm,exec,nochain", "-D", log, binary] + args, check=True,
                   stdout=subprocess.DEVNULL)
    begin, end = symbol_address(binary, "zipmoe_icount_begin"), symbol_address(binary, "zipmoe_icount_end")
    block_size: dict[int, int] = {}
    start = None
    total, counting = 0, False
    with open(log, errors="replace") as f:
        for line in f:
            if line.startswith("IN:"):
                start = None
            elif re.match(r"0x[0-9a-f]+:\s", line):
                pc = int(line.split(":", 1)[0], 16)
                if start is None:
                    start = pc
                    block_size[start] = 0
                block_size[start] += 1
            elif line.startswith("Trace"):
                start = None
                pc = int(line.split("[", 1)[1].split("/")[1], 16)
                if pc == begin:
                    counting = True
                elif pc == end:
                    break
                elif counting:
                    total += block_size[pc]
    os.remove(log)
    return total


def count_callgrind(binary: str, args: list[str], workdir: str) -> int:
    out = os.path.join(workdir, "callgrind.out")
    subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=decode_region", f"--callgrind-out-file={out}",
                    binary] + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit("no totals in the callgrind output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", required=True, help="the decode_icount binary")
    parser.add_argument("--isa", required=True)
    parser.add_argument("--qemu", action="store_true", help="run an AArch64 build under qemu-aarch64")
    parser.add_argument("--elements", type=int, default=1 << 20)
    args = parser.parse_args()
    run = ["qemu-aarch64", args.decoder] if args.qemu else [args.decoder]
    with tempfile.TemporaryDirectory() as workdir:
        print(f"| isa | codec | decode | decode + CRC-32C |  (instructions per output symbol, {args.elements:,} "
              f"BF16 weights)")
        print("|---|---|---|---|")
        for codec in ("huffman", "rans"):
            blob = os.path.join(workdir, f"{codec}.zmob")
            subprocess.run(run + ["make", blob, "--codec", codec, "--elements", str(args.elements)], check=True)
            counts = []
            for extra in ([], ["--checksummed"]):
                decode_args = ["decode", blob, "--isa", args.isa] + extra
                n = (count_qemu(args.decoder, decode_args, workdir) if args.qemu
                     else count_callgrind(args.decoder, decode_args, workdir))
                counts.append(n / args.elements)
            print(f"| {args.isa} | {codec} | {counts[0]:.2f} | {counts[1]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
