// Unicode character data for the tokenizer, generated into unicode_tables.cpp by
// tools/gen_unicode_tables.py (rerun it to move to another Unicode version).
//
// Property and combining-class lookups are two-stage tables over blocks of
// kBlockSize code points: value(cp) = Stage2[Stage1[cp / kBlockSize] * kBlockSize + cp % kBlockSize].
// Read them through text/unicode.h, not directly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zipmoe::text::tables {

constexpr std::uint32_t kBlockSize = 128;
constexpr std::uint32_t kCodePointLimit = 0x110000;

extern const char kUnicodeVersion[];

// Property byte: bits 0-4 the general category (UnicodeCategory), bit 5
// White_Space, bit 6 "NFC may change text holding this code point".
extern const std::uint16_t kPropertyStage1[kCodePointLimit / kBlockSize];
extern const std::uint8_t kPropertyStage2[];
extern const std::uint16_t kCombiningClassStage1[kCodePointLimit / kBlockSize];
extern const std::uint8_t kCombiningClassStage2[];

// Full canonical decompositions, sorted by code point: the decomposition of
// kDecomposedCodePoints[i] is kDecompositionData[kDecompositionStarts[i] .. kDecompositionStarts[i + 1]).
extern const std::size_t kDecompositionCount;
extern const std::uint32_t kDecomposedCodePoints[];
extern const std::uint16_t kDecompositionStarts[];
extern const std::uint32_t kDecompositionData[];

// Primary composites, sorted by key = first << 21 | second.
extern const std::size_t kCompositionCount;
extern const std::uint64_t kCompositionKeys[];
extern const std::uint32_t kCompositionValues[];

}  // namespace zipmoe::text::tables
