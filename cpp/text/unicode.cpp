#include "text/unicode.h"

#include <algorithm>

namespace zipmoe::text {

namespace {

// Hangul syllables are composed and decomposed arithmetically (Unicode 3.12).
constexpr std::uint32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161,
                        kHangulTBase = 0x11A7;
constexpr std::uint32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr std::uint32_t kHangulNCount = kHangulVCount * kHangulTCount;
constexpr std::uint32_t kHangulSCount = kHangulLCount * kHangulNCount;

enum class SequenceKind { kComplete, kTruncated, kInvalid };

// Classifies the UTF-8 sequence starting at p[0] (n >= 1 bytes available).
// kComplete: *length is its length. kTruncated: the n bytes are a proper prefix
// of a valid sequence (*length == n). kInvalid: *length is the length of the
// maximal subpart to replace (at least 1).
SequenceKind classify_sequence(const unsigned char* p, std::size_t n, std::size_t* length) {
  const unsigned char lead = p[0];
  if (lead < 0x80) {
    *length = 1;
    return SequenceKind::kComplete;
  }
  std::size_t need;
  unsigned char second_low = 0x80, second_high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) second_low = 0xA0;
    if (lead == 0xED) second_high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) second_low = 0x90;
    if (lead == 0xF4) second_high = 0x8F;  // nothing above U+10FFFF
  } else {
    *length = 1;
    return SequenceKind::kInvalid;
  }
  for (std::size_t i = 1; i < need; ++i) {
    if (i >= n) {
      *length = n;
      return SequenceKind::kTruncated;
    }
    const unsigned char low = i == 1 ? second_low : 0x80;
    const unsigned char high = i == 1 ? second_high : 0xBF;
    if (p[i] < low || p[i] > high) {
      *length = i;
      return SequenceKind::kInvalid;
    }
  }
  *length = need;
  return SequenceKind::kComplete;
}

std::uint32_t sequence_value(const unsigned char* p, std::size_t length) {
  switch (length) {
    case 1:
      return p[0];
    case 2:
      return (std::uint32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    case 3:
      return (std::uint32_t(p[0] & 0x0F) << 12) | (std::uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    default:
      return (std::uint32_t(p[0] & 0x07) << 18) | (std::uint32_t(p[1] & 0x3F) << 12) |
             (std::uint32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
  }
}

// Appends the full canonical decomposition of one unit.
void decompose_unit(std::uint32_t cp, std::vector<std::uint32_t>* out) {
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    const std::uint32_t index = cp - kHangulSBase;
    out->push_back(kHangulLBase + index / kHangulNCount);
    out->push_back(kHangulVBase + (index % kHangulNCount) / kHangulTCount);
    if (index % kHangulTCount != 0) out->push_back(kHangulTBase + index % kHangulTCount);
    return;
  }
  const std::uint32_t* begin = tables::kDecomposedCodePoints;
  const std::uint32_t* end = begin + tables::kDecompositionCount;
  const std::uint32_t* it = std::lower_bound(begin, end, cp);
  if (it == end || *it != cp) {
    out->push_back(cp);
    return;
  }
  const std::size_t i = static_cast<std::size_t>(it - begin);
  for (std::uint32_t k = tables::kDecompositionStarts[i]; k < tables::kDecompositionStarts[i + 1]; ++k) {
    out->push_back(tables::kDecompositionData[k]);
  }
}

// The primary composite of (first, second), or 0.
std::uint32_t compose_pair(std::uint32_t first, std::uint32_t second) {
  if (first >= kHangulLBase && first < kHangulLBase + kHangulLCount && second >= kHangulVBase &&
      second < kHangulVBase + kHangulVCount) {
    return kHangulSBase + ((first - kHangulLBase) * kHangulVCount + (second - kHangulVBase)) * kHangulTCount;
  }
  if (first >= kHangulSBase && first < kHangulSBase + kHangulSCount && (first - kHangulSBase) % kHangulTCount == 0 &&
      second > kHangulTBase && second < kHangulTBase + kHangulTCount) {
    return first + (second - kHangulTBase);
  }
  if (first >= kInvalidByteBase || second >= kInvalidByteBase) return 0;
  const std::uint64_t key = (std::uint64_t(first) << 21) | second;
  const std::uint64_t* begin = tables::kCompositionKeys;
  const std::uint64_t* end = begin + tables::kCompositionCount;
  const std::uint64_t* it = std::lower_bound(begin, end, key);
  if (it == end || *it != key) return 0;
  return tables::kCompositionValues[it - begin];
}

}  // namespace

std::uint8_t canonical_combining_class(std::uint32_t cp) {
  if (cp >= tables::kCodePointLimit) return 0;
  const std::uint32_t block = tables::kCombiningClassStage1[cp / tables::kBlockSize];
  return tables::kCombiningClassStage2[block * tables::kBlockSize + cp % tables::kBlockSize];
}

void decode_utf8(std::string_view text, std::vector<std::uint32_t>* units, std::vector<std::uint32_t>* offsets) {
  units->clear();
  if (offsets) offsets->clear();
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  units->reserve(n);
  if (offsets) offsets->reserve(n + 1);
  std::size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      units->push_back(p[i]);
      if (offsets) offsets->push_back(static_cast<std::uint32_t>(i));
      ++i;
      continue;
    }
    std::size_t length;
    if (classify_sequence(p + i, n - i, &length) == SequenceKind::kComplete) {
      units->push_back(sequence_value(p + i, length));
      if (offsets) offsets->push_back(static_cast<std::uint32_t>(i));
      i += length;
    } else {
      units->push_back(kInvalidByteBase + p[i]);
      if (offsets) offsets->push_back(static_cast<std::uint32_t>(i));
      ++i;
    }
  }
  if (offsets) offsets->push_back(static_cast<std::uint32_t>(n));
}

void append_utf8(std::uint32_t unit, std::string* out) {
  if (unit < 0x80) {
    out->push_back(static_cast<char>(unit));
  } else if (unit < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (unit >> 6)));
    out->push_back(static_cast<char>(0x80 | (unit & 0x3F)));
  } else if (unit < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (unit >> 12)));
    out->push_back(static_cast<char>(0x80 | ((unit >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (unit & 0x3F)));
  } else if (unit < kInvalidByteBase) {
    out->push_back(static_cast<char>(0xF0 | (unit >> 18)));
    out->push_back(static_cast<char>(0x80 | ((unit >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((unit >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (unit & 0x3F)));
  } else {
    out->push_back(static_cast<char>(unit - kInvalidByteBase));
  }
}

bool nfc_normalize(std::string_view text, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  bool sensitive = false;
  for (std::size_t i = 0; i < n && !sensitive;) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    std::size_t length;
    if (classify_sequence(p + i, n - i, &length) == SequenceKind::kComplete) {
      sensitive = (unicode_properties(sequence_value(p + i, length)) & kNfcSensitiveBit) != 0;
      i += length;
    } else {
      ++i;
    }
  }
  if (!sensitive) return false;

  std::vector<std::uint32_t> units;
  decode_utf8(text, &units, nullptr);
  std::vector<std::uint32_t> decomposed;
  decomposed.reserve(units.size() + 8);
  for (std::uint32_t unit : units) decompose_unit(unit, &decomposed);
  // Canonical ordering: a stable sort of each run of non-starters by combining class.
  for (std::size_t i = 1; i < decomposed.size(); ++i) {
    const std::uint8_t ccc = canonical_combining_class(decomposed[i]);
    if (ccc == 0) continue;
    std::size_t j = i;
    while (j > 0) {
      const std::uint8_t before = canonical_combining_class(decomposed[j - 1]);
      if (before == 0 || before <= ccc) break;
      std::swap(decomposed[j - 1], decomposed[j]);
      --j;
    }
  }
  // Canonical composition.
  std::vector<std::uint32_t> composed;
  composed.reserve(decomposed.size());
  std::size_t starter = SIZE_MAX;
  std::uint8_t last_ccc = 0;
  for (std::uint32_t unit : decomposed) {
    const std::uint8_t ccc = canonical_combining_class(unit);
    if (starter != SIZE_MAX) {
      const bool adjacent = composed.size() - 1 == starter;
      const bool blocked = !adjacent && (last_ccc == 0 || last_ccc >= ccc);
      if (!blocked) {
        const std::uint32_t composite = compose_pair(composed[starter], unit);
        if (composite != 0) {
          composed[starter] = composite;
          continue;
        }
      }
    }
    if (ccc == 0) starter = composed.size();
    last_ccc = ccc;
    composed.push_back(unit);
  }
  out->clear();
  out->reserve(text.size() + 8);
  for (std::uint32_t unit : composed) append_utf8(unit, out);
  return true;
}

std::size_t incomplete_utf8_suffix(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  // A proper prefix is at most 3 bytes long: try each possible start.
  for (std::size_t back = std::min<std::size_t>(3, n); back >= 1; --back) {
    std::size_t length;
    if (classify_sequence(p + n - back, back, &length) == SequenceKind::kTruncated) return back;
  }
  return 0;
}

void append_utf8_lossy(std::string_view bytes, std::string* out) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  out->reserve(out->size() + n);
  std::size_t i = 0;
  while (i < n) {
    std::size_t run = i;
    while (run < n && p[run] < 0x80) ++run;
    if (run > i) {
      out->append(bytes.data() + i, run - i);
      i = run;
      if (i >= n) break;
    }
    std::size_t length;
    const SequenceKind kind = classify_sequence(p + i, n - i, &length);
    if (kind == SequenceKind::kComplete) {
      out->append(bytes.data() + i, length);
    } else {
      out->append(kReplacement, 3);
    }
    i += length;
  }
}

bool is_valid_utf8(std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    std::size_t length;
    if (classify_sequence(p + i, n - i, &length) != SequenceKind::kComplete) return false;
    i += length;
  }
  return true;
}

const char* unicode_version() { return tables::kUnicodeVersion; }

}  // namespace zipmoe::text
