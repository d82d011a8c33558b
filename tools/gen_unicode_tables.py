#!/usr/bin/env python3
"""Generates cpp/text/unicode_tables.cpp from Python's unicodedata.

    python3 tools/gen_unicode_tables.py [OUT]      (default: cpp/text/unicode_tables.cpp)

The tokenizer's pre-tokenizers classify code points the way the regular
expressions of Hugging Face tokenizer.json files do (\\p{L}, \\p{N}, \\s, ...),
and the Qwen2 family's tokenizer.json asks for NFC normalization. Both need
Unicode character data; this script extracts it from the interpreter's
unicodedata module (its Unicode version is written into the output), so the C++
core needs no ICU.

Tables written (see cpp/text/unicode_tables.h for how they are read):
- code point properties, one byte each, in a two-stage table (blocks of 128):
  bits 0-4 the general category (the order of CATEGORIES below), bit 5
  White_Space, bit 6 "NFC may change text holding this code point" (NFC quick
  check not Yes, or a non-zero canonical combining class);
- canonical combining classes, in a two-stage table;
- full canonical decompositions (Hangul syllables excluded: they are algorithmic);
- primary composites: (first, second) -> composite, composition exclusions removed.
"""

from __future__ import annotations

import pathlib
import sys
import unicodedata

# Order of the category codes (cpp/text/unicode.h, enum class UnicodeCategory).
CATEGORIES = ["Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
              "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"]

# PropList.txt White_Space (stable since Unicode 6.3; unicodedata does not expose it,
# and str.isspace() differs: it also accepts U+001C..U+001F).
WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)]

HANGUL_SYLLABLE_FIRST, HANGUL_SYLLABLE_LAST = 0xAC00, 0xD7A3
HANGUL_V_FIRST, HANGUL_V_LAST = 0x1161, 0x1175
HANGUL_T_FIRST, HANGUL_T_LAST = 0x11A8, 0x11C2
MAX_CODE_POINT = 0x10FFFF
BLOCK = 128

WHITESPACE_BIT = 0x20
NFC_SENSITIVE_BIT = 0x40


def canonical_mapping(cp: int):
    """The single-level canonical decomposition of cp, or None (compatibility mappings are ignored)."""
    text = unicodedata.decomposition(chr(cp))
    if not text or text.startswith("<"):
        return None
    return [int(part, 16) for part in text.split()]


def collect():
    properties = bytearray(MAX_CODE_POINT + 1)
    combining = bytearray(MAX_CODE_POINT + 1)
    decompositions = {}
    compositions = {}
    for cp in range(MAX_CODE_POINT + 1):
        ch = chr(cp)
        properties[cp] = CATEGORIES.index(unicodedata.category(ch))
        combining[cp] = unicodedata.combining(ch)
        if HANGUL_SYLLABLE_FIRST <= cp <= HANGUL_SYLLABLE_LAST:
            continue
        mapping = canonical_mapping(cp)
        if mapping is None:
            continue
        decompositions[cp] = [ord(c) for c in unicodedata.normalize("NFD", ch)]
        # A pair mapping composes back unless cp is excluded from composition
        # (then NFC leaves its decomposition in place).
        if len(mapping) == 2 and unicodedata.normalize("NFC", unicodedata.normalize("NFD", ch)) == ch:
            compositions[(mapping[0], mapping[1])] = cp
    for first, last in WHITE_SPACE:
        for cp in range(first, last + 1):
            properties[cp] |= WHITESPACE_BIT
    seconds = {second for (_, second) in compositions}
    for cp in range(MAX_CODE_POINT + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        changes = unicodedata.normalize("NFC", ch) != ch
        if changes or combining[cp] or cp in seconds or HANGUL_V_FIRST <= cp <= HANGUL_V_LAST \
                or HANGUL_T_FIRST <= cp <= HANGUL_T_LAST:
            properties[cp] |= NFC_SENSITIVE_BIT
    return properties, combining, decompositions, compositions


def two_stage(values: bytearray):
    """(stage1 block indexes, stage2 concatenated unique blocks)."""
    blocks, index, stage1 = [], {}, []
    for start in range(0, len(values), BLOCK):
        block = bytes(values[start:start + BLOCK])
        if block not in index:
            index[block] = len(blocks)
            blocks.append(block)
        stage1.append(index[block])
    return stage1, b"".join(blocks)


def c_array(ctype: str, name: str, values, per_line: int = 20) -> str:
    values = list(values)
    lines = [f"const {ctype} {name}[{len(values)}] = {{"]
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(str(v) for v in values[i:i + per_line]) + ",")
    lines.append("};")
    return "\n".join(lines)


def render() -> str:
    properties, combining, decompositions, compositions = collect()
    prop_stage1, prop_stage2 = two_stage(properties)
    ccc_stage1, ccc_stage2 = two_stage(combining)
    assert max(prop_stage1) < 65536 and max(ccc_stage1) < 65536

    decomposed_code_points = sorted(decompositions)
    decomposition_starts, decomposition_data = [], []
    for cp in decomposed_code_points:
        decomposition_starts.append(len(decomposition_data))
        decomposition_data.extend(decompositions[cp])
    decomposition_starts.append(len(decomposition_data))

    pairs = sorted(compositions)
    composition_keys = [(first << 21) | second for first, second in pairs]
    composition_values = [compositions[p] for p in pairs]

    out = [
        "// Generated by tools/gen_unicode_tables.py from Python's unicodedata; do not edit.",
        f"// Unicode version {unicodedata.unidata_version}.",
        '#include "text/unicode_tables.h"',
        "",
        "namespace zipmoe::text::tables {",
        "",
        f'const char kUnicodeVersion[] = "{unicodedata.unidata_version}";',
        "",
        c_array("std::uint16_t", "kPropertyStage1", prop_stage1),
        c_array("std::uint8_t", "kPropertyStage2", prop_stage2, 32),
        c_array("std::uint16_t", "kCombiningClassStage1", ccc_stage1),
        c_array("std::uint8_t", "kCombiningClassStage2", ccc_stage2, 32),
        f"const std::size_t kDecompositionCount = {len(decomposed_code_points)};",
        c_array("std::uint32_t", "kDecomposedCodePoints", decomposed_code_points, 12),
        c_array("std::uint16_t", "kDecompositionStarts", decomposition_starts),
        c_array("std::uint32_t", "kDecompositionData", decomposition_data, 12),
        f"const std::size_t kCompositionCount = {len(pairs)};",
        c_array("std::uint64_t", "kCompositionKeys", composition_keys, 8),
        c_array("std::uint32_t", "kCompositionValues", composition_values, 12),
        "",
        "}  // namespace zipmoe::text::tables",
        "",
    ]
    assert len(decomposition_data) < 65536
    return "\n".join(out)


def main() -> int:
    root = pathlib.Path(__file__).resolve().parents[1]
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else root / "cpp" / "text" / "unicode_tables.cpp"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out} (Unicode {unicodedata.unidata_version}, blocks of {BLOCK})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
