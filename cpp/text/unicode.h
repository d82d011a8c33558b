// Unicode helpers of the tokenizer: UTF-8 decoding that never fails, code point
// classes as regular expressions see them (\p{L}, \p{N}, \s, ...), NFC, and the
// UTF-8 repair that decoding token bytes needs.
//
// Text given to the tokenizer may hold bytes that are not valid UTF-8 (a C++
// caller is free to pass any bytes). Such a byte decodes to its own unit,
// kInvalidByteBase + byte, which belongs to no category: it is never a letter,
// digit or space, so it ends up in a "other characters" piece, and byte-level
// BPE still encodes the exact byte. Nothing here throws or reads out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/unicode_tables.h"

namespace zipmoe::text {

// General categories, in the order tools/gen_unicode_tables.py writes them.
enum class UnicodeCategory : std::uint8_t {
  kCn, kLu, kLl, kLt, kLm, kLo, kMn, kMc, kMe, kNd, kNl, kNo, kPc, kPd, kPs, kPe,
  kPi, kPf, kPo, kSm, kSc, kSk, kSo, kZs, kZl, kZp, kCc, kCf, kCs, kCo,
};

// Units at or above this value stand for a byte that is not part of valid UTF-8.
constexpr std::uint32_t kInvalidByteBase = 0x110000;

constexpr std::uint8_t kCategoryMask = 0x1F;
constexpr std::uint8_t kWhiteSpaceBit = 0x20;
constexpr std::uint8_t kNfcSensitiveBit = 0x40;

// The property byte of a unit (see unicode_tables.h); 0 (Cn, nothing) for invalid-byte units.
inline std::uint8_t unicode_properties(std::uint32_t cp) {
  if (cp >= tables::kCodePointLimit) return 0;
  const std::uint32_t block = tables::kPropertyStage1[cp / tables::kBlockSize];
  return tables::kPropertyStage2[block * tables::kBlockSize + cp % tables::kBlockSize];
}

inline UnicodeCategory unicode_category(std::uint32_t cp) {
  return static_cast<UnicodeCategory>(unicode_properties(cp) & kCategoryMask);
}

// Category sets as bit masks over UnicodeCategory values.
constexpr std::uint32_t category_bit(UnicodeCategory c) { return 1u << static_cast<unsigned>(c); }
constexpr std::uint32_t kLetterMask = category_bit(UnicodeCategory::kLu) | category_bit(UnicodeCategory::kLl) |
                                      category_bit(UnicodeCategory::kLt) | category_bit(UnicodeCategory::kLm) |
                                      category_bit(UnicodeCategory::kLo);
constexpr std::uint32_t kMarkMask = category_bit(UnicodeCategory::kMn) | category_bit(UnicodeCategory::kMc) |
                                    category_bit(UnicodeCategory::kMe);
constexpr std::uint32_t kNumberMask = category_bit(UnicodeCategory::kNd) | category_bit(UnicodeCategory::kNl) |
                                      category_bit(UnicodeCategory::kNo);
constexpr std::uint32_t kPunctuationMask =
    category_bit(UnicodeCategory::kPc) | category_bit(UnicodeCategory::kPd) | category_bit(UnicodeCategory::kPs) |
    category_bit(UnicodeCategory::kPe) | category_bit(UnicodeCategory::kPi) | category_bit(UnicodeCategory::kPf) |
    category_bit(UnicodeCategory::kPo);
constexpr std::uint32_t kSymbolMask = category_bit(UnicodeCategory::kSm) | category_bit(UnicodeCategory::kSc) |
                                      category_bit(UnicodeCategory::kSk) | category_bit(UnicodeCategory::kSo);

inline bool in_categories(std::uint32_t cp, std::uint32_t mask) {
  return (mask >> (unicode_properties(cp) & kCategoryMask)) & 1u;
}
inline bool is_letter(std::uint32_t cp) { return in_categories(cp, kLetterMask); }
inline bool is_number(std::uint32_t cp) { return in_categories(cp, kNumberMask); }
inline bool is_mark(std::uint32_t cp) { return in_categories(cp, kMarkMask); }
inline bool is_punctuation(std::uint32_t cp) { return in_categories(cp, kPunctuationMask); }
inline bool is_symbol(std::uint32_t cp) { return in_categories(cp, kSymbolMask); }
// Unicode White_Space, which is what \s matches in the regular expressions of tokenizer.json files.
inline bool is_whitespace(std::uint32_t cp) { return (unicode_properties(cp) & kWhiteSpaceBit) != 0; }

std::uint8_t canonical_combining_class(std::uint32_t cp);

// Decodes `text` into units (code points, or kInvalidByteBase + byte for each
// byte that does not start a valid, shortest-form UTF-8 sequence of a scalar
// value). `offsets` (optional) receives each unit's byte offset, plus a final
// entry equal to text.size().
void decode_utf8(std::string_view text, std::vector<std::uint32_t>* units, std::vector<std::uint32_t>* offsets);

// Appends the UTF-8 encoding of a unit (an invalid-byte unit appends its byte).
void append_utf8(std::uint32_t unit, std::string* out);

// NFC of `text` (invalid bytes are kept as they are). Returns false, leaving
// *out untouched, when the text is already in NFC by the quick check (the
// common case; no allocation).
bool nfc_normalize(std::string_view text, std::string* out);

// The number of bytes at the end of `bytes` that form a proper prefix of a valid
// UTF-8 sequence (0..3): bytes that more input could still complete.
std::size_t incomplete_utf8_suffix(std::string_view bytes);

// Appends `bytes` to *out as valid UTF-8, each maximal ill-formed subsequence
// replaced by U+FFFD (the W3C/Unicode "substitution of maximal subparts"
// practice, which Python's errors="replace" and Rust's from_utf8_lossy follow).
void append_utf8_lossy(std::string_view bytes, std::string* out);

bool is_valid_utf8(std::string_view bytes);

// The Unicode version of the tables (e.g. "14.0.0").
const char* unicode_version();

}  // namespace zipmoe::text
