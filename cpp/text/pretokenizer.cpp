#include "text/pretokenizer.h"

#include <algorithm>
#include <array>
#include <utility>

#include "text/unicode.h"

namespace zipmoe::text {

namespace {

struct CodeRange {
  std::uint32_t first;
  std::uint32_t last;
};

// A character class given as ranges, in the order its regex writes them (that
// order rebuilds the pattern text); lookups use a sorted copy.
class RangeClass {
 public:
  RangeClass(std::initializer_list<CodeRange> ranges) : written_(ranges), sorted_(ranges) {
    std::sort(sorted_.begin(), sorted_.end(), [](CodeRange a, CodeRange b) { return a.first < b.first; });
    for (CodeRange r : sorted_) {
      for (std::uint32_t c = r.first; c <= r.last && c < 128; ++c) ascii_[c] = true;
    }
  }
  bool contains(std::uint32_t c) const {
    if (c < 128) return ascii_[c];
    auto it = std::upper_bound(sorted_.begin(), sorted_.end(), c,
                               [](std::uint32_t v, CodeRange r) { return v < r.first; });
    return it != sorted_.begin() && c <= (it - 1)->last;
  }
  // "[a-bcd-e]" as the regex writes it.
  std::string bracket() const {
    std::string out = "[";
    for (CodeRange r : written_) {
      append_utf8(r.first, &out);
      if (r.last != r.first) {
        out.push_back('-');
        append_utf8(r.last, &out);
      }
    }
    out.push_back(']');
    return out;
  }

 private:
  std::vector<CodeRange> written_;
  std::vector<CodeRange> sorted_;
  std::array<bool, 128> ascii_{};
};

// The cased-letter class of the DeepSeek LLM tokenizer. Three Greek Extended
// range ends (U+1F7D, U+1FD3, U+1FDB) and the singletons U+1FBE, U+2126,
// U+212A have canonical singleton decompositions; copies of the pattern that
// went through NFC carry their look-alikes, which is why patterns are compared
// after NFC.
const RangeClass& deepseek_letters() {
  static const RangeClass kClass{
      {0x41, 0x5A},       {0x61, 0x7A},       {0xB5, 0xB5},       {0xC0, 0xD6},       {0xD8, 0xF6},
      {0xF8, 0x1BA},      {0x1BC, 0x1BF},     {0x1C4, 0x293},     {0x295, 0x2AF},     {0x370, 0x373},
      {0x376, 0x376},     {0x377, 0x377},     {0x37B, 0x37D},     {0x37F, 0x37F},     {0x386, 0x386},
      {0x388, 0x38A},     {0x38C, 0x38C},     {0x38E, 0x3A1},     {0x3A3, 0x3F5},     {0x3F7, 0x481},
      {0x48A, 0x52F},     {0x531, 0x556},     {0x10A0, 0x10C5},   {0x13A0, 0x13F5},   {0x13F8, 0x13FD},
      {0x1C90, 0x1CBA},   {0x1CBD, 0x1CBF},   {0x1D00, 0x1D2B},   {0x1D6B, 0x1D77},   {0x1D79, 0x1D9A},
      {0x1E00, 0x1F15},   {0x1F18, 0x1F1D},   {0x1F20, 0x1F45},   {0x1F48, 0x1F4D},   {0x1F50, 0x1F57},
      {0x1F59, 0x1F59},   {0x1F5B, 0x1F5B},   {0x1F5D, 0x1F5D},   {0x1F5F, 0x1F7D},   {0x1F80, 0x1FB4},
      {0x1FB6, 0x1FBC},   {0x1FBE, 0x1FBE},   {0x1FC2, 0x1FC4},   {0x1FC6, 0x1FCC},   {0x1FD0, 0x1FD3},
      {0x1FD6, 0x1FDB},   {0x1FE0, 0x1FEC},   {0x1FF2, 0x1FF4},   {0x1FF6, 0x1FFC},   {0x2102, 0x2102},
      {0x2107, 0x2107},   {0x210A, 0x2113},   {0x2115, 0x2115},   {0x2119, 0x211D},   {0x2124, 0x2124},
      {0x2126, 0x2126},   {0x2128, 0x2128},   {0x212A, 0x212D},   {0x212F, 0x2134},   {0x2139, 0x2139},
      {0x213C, 0x213F},   {0x2145, 0x2149},   {0x214E, 0x214E},   {0x2183, 0x2183},   {0x2184, 0x2184},
      {0x2C00, 0x2C7B},   {0x2C7E, 0x2CE4},   {0x2CEB, 0x2CEE},   {0x2CF2, 0x2CF2},   {0x2CF3, 0x2CF3},
      {0xA640, 0xA66D},   {0xA680, 0xA69B},   {0xA722, 0xA76F},   {0xA771, 0xA787},   {0xA78B, 0xA78E},
      {0xAB70, 0xABBF},   {0xFB00, 0xFB06},   {0xFB13, 0xFB17},   {0xFF21, 0xFF3A},   {0xFF41, 0xFF5A},
      {0x10400, 0x1044F}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
      {0x118A0, 0x118DF}, {0x1E900, 0x1E943},
  };
  return kClass;
}

const RangeClass& deepseek_punctuation() {
  static const RangeClass kClass{{0x21, 0x2F},     {0x3A, 0x7E},     {0xFF01, 0xFF0F},
                                 {0xFF1A, 0xFF5E}, {0x2018, 0x201F}, {0x3000, 0x3002}};
  return kClass;
}

const RangeClass& deepseek_cjk() {
  static const RangeClass kClass{{0x4E00, 0x9FA5}, {0x800, 0x4E00}, {0xAC00, 0xD7FF}};
  return kClass;
}

const RangeClass& deepseek_v3_cjk() {
  static const RangeClass kClass{{0x4E00, 0x9FA5}, {0x3040, 0x309F}, {0x30A0, 0x30FF}};
  return kClass;
}

inline bool is_cr_lf(std::uint32_t c) { return c == '\r' || c == '\n'; }

inline std::uint32_t ascii_lower(std::uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length (2 or 3) of a contraction 's 't 're 've 'm 'll 'd at i, or 0.
// Case-insensitive forms fold ASCII only.
std::size_t contraction_length(const std::uint32_t* u, std::size_t i, std::size_t end, bool ignore_case) {
  if (i + 1 >= end || u[i] != '\'') return 0;
  auto fold = [ignore_case](std::uint32_t c) { return ignore_case ? ascii_lower(c) : c; };
  const std::uint32_t a = fold(u[i + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= end) return 0;
  const std::uint32_t b = fold(u[i + 2]);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

template <typename Pred>
inline std::size_t run_end(const std::uint32_t* u, std::size_t i, std::size_t end, Pred pred) {
  while (i < end && pred(u[i])) ++i;
  return i;
}

inline bool is_other(std::uint32_t c) {  // [^\s\p{L}\p{N}]
  const std::uint8_t p = unicode_properties(c);
  return !(p & kWhiteSpaceBit) && !(((kLetterMask | kNumberMask) >> (p & kCategoryMask)) & 1u);
}

// \s+(?!\S)|\s+ at i (u[i] is white space): the run, less its last unit when a
// non-space follows the run and the run has more than one unit.
inline std::size_t whitespace_tail(const std::uint32_t* u, std::size_t i, std::size_t end) {
  const std::size_t r = run_end(u, i, end, is_whitespace);
  return (r == end || r - i < 2) ? r : r - 1;
}

// \s*[\r\n]+ at i (u[i] is white space): up to and including the last CR/LF of
// the white-space run, or i when the run holds none.
inline std::size_t whitespace_through_last_newline(const std::uint32_t* u, std::size_t i, std::size_t end,
                                                   std::size_t* run) {
  *run = run_end(u, i, end, is_whitespace);
  for (std::size_t k = *run; k > i; --k) {
    if (is_cr_lf(u[k - 1])) return k;
  }
  return i;
}

// Each match_* returns the end of the match anchored at i (i < end), or i.

std::size_t match_gpt2(const std::uint32_t* u, std::size_t i, std::size_t end) {
  if (std::size_t n = contraction_length(u, i, end, false)) return i + n;
  const std::uint32_t c = u[i];
  const std::size_t j = i + (c == ' ' ? 1 : 0);
  if (j < end) {
    const std::uint32_t d = u[j];
    if (is_letter(d)) return run_end(u, j, end, is_letter);
    if (is_number(d)) return run_end(u, j, end, is_number);
    if (is_other(d)) return run_end(u, j, end, is_other);
  }
  if (is_whitespace(c)) return whitespace_tail(u, i, end);
  return i;
}

std::size_t match_llama3(const std::uint32_t* u, std::size_t i, std::size_t end, std::size_t max_digits) {
  if (std::size_t n = contraction_length(u, i, end, true)) return i + n;
  const std::uint32_t c = u[i];
  const bool letter = is_letter(c);
  const bool number = is_number(c);
  if (letter) return run_end(u, i, end, is_letter);
  if (!number && !is_cr_lf(c) && i + 1 < end && is_letter(u[i + 1])) return run_end(u, i + 1, end, is_letter);
  if (number) {
    std::size_t r = i;
    while (r < end && r - i < max_digits && is_number(u[r])) ++r;
    return r;
  }
  const std::size_t j = i + (c == ' ' ? 1 : 0);
  if (j < end && is_other(u[j])) {
    std::size_t r = run_end(u, j, end, is_other);
    return run_end(u, r, end, is_cr_lf);
  }
  if (is_whitespace(c)) {
    std::size_t run;
    const std::size_t through_newline = whitespace_through_last_newline(u, i, end, &run);
    if (through_newline > i) return through_newline;
    return (run == end || run - i < 2) ? run : run - 1;
  }
  return i;
}

inline bool is_gpt4o_upper(std::uint32_t c) {  // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
  constexpr std::uint32_t kMask = category_bit(UnicodeCategory::kLu) | category_bit(UnicodeCategory::kLt) |
                                  category_bit(UnicodeCategory::kLm) | category_bit(UnicodeCategory::kLo) | kMarkMask;
  return in_categories(c, kMask);
}
inline bool is_gpt4o_lower(std::uint32_t c) {  // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
  constexpr std::uint32_t kMask = category_bit(UnicodeCategory::kLl) | category_bit(UnicodeCategory::kLm) |
                                  category_bit(UnicodeCategory::kLo) | kMarkMask;
  return in_categories(c, kMask);
}
inline bool is_gpt4o_prefix(std::uint32_t c) {  // [^\r\n\p{L}\p{N}]
  return !is_cr_lf(c) && !in_categories(c, kLetterMask | kNumberMask);
}

// [upper]*[lower]+ at j, with the backtracking of the greedy star; j when no match.
std::size_t gpt4o_upper_star_lower_plus(const std::uint32_t* u, std::size_t j, std::size_t end) {
  const std::size_t k = run_end(u, j, end, is_gpt4o_upper);
  if (k < end && is_gpt4o_lower(u[k])) return run_end(u, k, end, is_gpt4o_lower);
  // Give back upper units until one of them also counts as lower; the lower run
  // starting there ends right after it (the next unit was already found not lower).
  for (std::size_t back = k; back > j; --back) {
    if (is_gpt4o_lower(u[back - 1])) return back;
  }
  return j;
}

// [upper]+[lower]* at j; j when no match.
std::size_t gpt4o_upper_plus_lower_star(const std::uint32_t* u, std::size_t j, std::size_t end) {
  if (j >= end || !is_gpt4o_upper(u[j])) return j;
  const std::size_t k = run_end(u, j, end, is_gpt4o_upper);
  return run_end(u, k, end, is_gpt4o_lower);
}

std::size_t match_gpt4o(const std::uint32_t* u, std::size_t i, std::size_t end) {
  const std::uint32_t c = u[i];
  const bool prefix = is_gpt4o_prefix(c);
  auto with_contraction = [&](std::size_t r) { return r + contraction_length(u, r, end, true); };
  for (auto word : {gpt4o_upper_star_lower_plus, gpt4o_upper_plus_lower_star}) {
    if (prefix && i + 1 < end) {
      const std::size_t r = word(u, i + 1, end);
      if (r > i + 1) return with_contraction(r);
    }
    const std::size_t r = word(u, i, end);
    if (r > i) return with_contraction(r);
  }
  if (is_number(c)) {
    std::size_t r = i;
    while (r < end && r - i < 3 && is_number(u[r])) ++r;
    return r;
  }
  const std::size_t j = i + (c == ' ' ? 1 : 0);
  if (j < end && is_other(u[j])) {
    std::size_t r = run_end(u, j, end, is_other);
    return run_end(u, r, end, [](std::uint32_t x) { return is_cr_lf(x) || x == '/'; });
  }
  if (is_whitespace(c)) {
    std::size_t run;
    const std::size_t through_newline = whitespace_through_last_newline(u, i, end, &run);
    if (through_newline > i) return through_newline;
    return (run == end || run - i < 2) ? run : run - 1;
  }
  return i;
}

inline bool is_ascii_letter(std::uint32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
inline bool is_ascii_punctuation(std::uint32_t c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}
inline bool is_letter_or_mark(std::uint32_t c) { return in_categories(c, kLetterMask | kMarkMask); }
inline bool is_punctuation_or_symbol(std::uint32_t c) { return in_categories(c, kPunctuationMask | kSymbolMask); }

std::size_t match_deepseek_v3_words(const std::uint32_t* u, std::size_t i, std::size_t end) {
  const std::uint32_t c = u[i];
  if (is_ascii_punctuation(c) && i + 1 < end && is_ascii_letter(u[i + 1])) {
    return run_end(u, i + 1, end, is_ascii_letter);
  }
  // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
  const bool prefix = !is_cr_lf(c) && !in_categories(c, kLetterMask | kPunctuationMask | kSymbolMask);
  if (prefix && i + 1 < end && is_letter_or_mark(u[i + 1])) return run_end(u, i + 1, end, is_letter_or_mark);
  if (is_letter_or_mark(c)) return run_end(u, i, end, is_letter_or_mark);
  // ' ?[\p{P}\p{S}]+[\r\n]*'
  const std::size_t j = i + (c == ' ' ? 1 : 0);
  if (j < end && is_punctuation_or_symbol(u[j])) {
    std::size_t r = run_end(u, j, end, is_punctuation_or_symbol);
    return run_end(u, r, end, is_cr_lf);
  }
  if (is_whitespace(c)) {
    std::size_t run;
    const std::size_t through_newline = whitespace_through_last_newline(u, i, end, &run);
    if (through_newline > i) return through_newline;
    return (run == end || run - i < 2) ? run : run - 1;
  }
  return i;
}

// Leftmost match of `\s?[class]+` in [pos, end).
template <typename InClass>
Span find_optional_space_run(const std::uint32_t* u, std::size_t pos, std::size_t end, InClass in_class) {
  std::size_t k = pos;
  while (k < end && !in_class(u[k])) ++k;
  if (k == end) return {static_cast<std::uint32_t>(end), static_cast<std::uint32_t>(end)};
  const std::size_t start = (k > pos && is_whitespace(u[k - 1])) ? k - 1 : k;
  return {static_cast<std::uint32_t>(start), static_cast<std::uint32_t>(run_end(u, k, end, in_class))};
}

// Leftmost match of `[class]{1,limit}` in [pos, end).
template <typename InClass>
Span find_run(const std::uint32_t* u, std::size_t pos, std::size_t end, InClass in_class,
              std::size_t limit = SIZE_MAX) {
  std::size_t k = pos;
  while (k < end && !in_class(u[k])) ++k;
  std::size_t r = k;
  while (r < end && r - k < limit && in_class(u[r])) ++r;
  return {static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(r)};
}

// Leftmost match of an anchored matcher in [pos, end).
template <typename Match>
Span find_anchored(const std::uint32_t* u, std::size_t pos, std::size_t end, Match match) {
  for (std::size_t k = pos; k < end; ++k) {
    const std::size_t r = match(u, k, end);
    if (r > k) return {static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(r)};
  }
  return {static_cast<std::uint32_t>(end), static_cast<std::uint32_t>(end)};
}

// The leftmost match of `rule` in [pos, end); begin == end when there is none.
Span find_match(SplitRule rule, const std::uint32_t* u, std::size_t pos, std::size_t end) {
  switch (rule) {
    case SplitRule::kGpt2:
      return find_anchored(u, pos, end, match_gpt2);
    case SplitRule::kLlama3:
      return find_anchored(u, pos, end, [](const std::uint32_t* s, std::size_t i, std::size_t e) {
        return match_llama3(s, i, e, 3);
      });
    case SplitRule::kQwen2:
      return find_anchored(u, pos, end, [](const std::uint32_t* s, std::size_t i, std::size_t e) {
        return match_llama3(s, i, e, 1);
      });
    case SplitRule::kGpt4o:
      return find_anchored(u, pos, end, match_gpt4o);
    case SplitRule::kNewline:
      return find_run(u, pos, end, is_cr_lf, 1);
    case SplitRule::kDeepseekLetters:
      return find_optional_space_run(u, pos, end, [](std::uint32_t c) { return deepseek_letters().contains(c); });
    case SplitRule::kDeepseekPunctuation:
      return find_optional_space_run(u, pos, end,
                                     [](std::uint32_t c) { return deepseek_punctuation().contains(c); });
    case SplitRule::kTrailingWhitespace: {
      std::size_t s = end;
      while (s > pos && is_whitespace(u[s - 1])) --s;
      if (s == end) return {static_cast<std::uint32_t>(end), static_cast<std::uint32_t>(end)};
      return {static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(end)};
    }
    case SplitRule::kDeepseekCjk:
      return find_run(u, pos, end, [](std::uint32_t c) { return deepseek_cjk().contains(c); });
    case SplitRule::kNumbers:
      return find_run(u, pos, end, is_number);
    case SplitRule::kNumber:
      return find_run(u, pos, end, is_number, 1);
    case SplitRule::kNumbersUpTo3:
      return find_run(u, pos, end, is_number, 3);
    case SplitRule::kLetters:
      return find_optional_space_run(u, pos, end, is_letter);
    case SplitRule::kPunctuation:
      return find_optional_space_run(u, pos, end, is_punctuation);
    case SplitRule::kDeepseekV3Cjk:
      return find_run(u, pos, end, [](std::uint32_t c) { return deepseek_v3_cjk().contains(c); });
    case SplitRule::kDeepseekV3Words:
      return find_anchored(u, pos, end, match_deepseek_v3_words);
    case SplitRule::kMetaspaceWords:
      break;  // split() handles it
  }
  return {static_cast<std::uint32_t>(end), static_cast<std::uint32_t>(end)};
}

constexpr std::uint32_t kMetaspace = 0x2581;

void apply_rule(SplitRule rule, const std::uint32_t* u, Span piece, std::vector<Span>* out) {
  if (rule == SplitRule::kMetaspaceWords) {
    // MergedWithNext: every U+2581 after the first unit starts a new piece.
    std::uint32_t start = piece.begin;
    for (std::uint32_t k = piece.begin + 1; k < piece.end; ++k) {
      if (u[k] == kMetaspace) {
        out->push_back({start, k});
        start = k;
      }
    }
    out->push_back({start, piece.end});
    return;
  }
  std::size_t pos = piece.begin;
  while (pos < piece.end) {
    const Span match = find_match(rule, u, pos, piece.end);
    if (match.begin > pos) out->push_back({static_cast<std::uint32_t>(pos), match.begin});
    if (match.begin >= piece.end) break;
    out->push_back(match);
    pos = match.end;
  }
}

struct KnownPattern {
  std::string text;
  std::vector<SplitRule> rules;
};

const std::vector<KnownPattern>& known_patterns() {
  static const std::vector<KnownPattern> kPatterns = [] {
    const std::string contractions = "'s|'t|'re|'ve|'m|'ll|'d";
    const std::string contractions_ci = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
    const std::string contractions_classes = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
    const std::string llama3_tail =
        "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const std::string qwen2_tail =
        "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const std::string gpt4o =
        "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" + contractions_ci +
        "?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" +
        contractions_ci + "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    std::vector<KnownPattern> patterns = {
        {contractions + "| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", {SplitRule::kGpt2}},
        {contractions_ci + llama3_tail, {SplitRule::kLlama3}},
        {contractions_classes + llama3_tail, {SplitRule::kLlama3}},
        {contractions_ci + qwen2_tail, {SplitRule::kQwen2}},
        {contractions_classes + qwen2_tail, {SplitRule::kQwen2}},
        {gpt4o, {SplitRule::kGpt4o}},
        {"[\\r\\n]", {SplitRule::kNewline}},
        {"\\s?" + deepseek_letters().bracket() + "+", {SplitRule::kDeepseekLetters}},
        {"\\s?" + deepseek_punctuation().bracket() + "+", {SplitRule::kDeepseekPunctuation}},
        {"\\s+$", {SplitRule::kTrailingWhitespace}},
        {deepseek_cjk().bracket() + "+", {SplitRule::kDeepseekCjk}},
        {"\\p{N}+", {SplitRule::kNumbers}},
        {"\\p{N}", {SplitRule::kNumber}},
        {"\\p{N}{1,3}", {SplitRule::kNumbersUpTo3}},
        {"\\s?\\p{L}+", {SplitRule::kLetters}},
        {"\\s?\\p{P}+", {SplitRule::kPunctuation}},
        {deepseek_v3_cjk().bracket() + "+", {SplitRule::kDeepseekV3Cjk}},
        {"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
         "?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
         {SplitRule::kDeepseekV3Words}},
    };
    for (KnownPattern& p : patterns) {
      std::string normalized;
      if (nfc_normalize(p.text, &normalized)) p.text = std::move(normalized);
    }
    return patterns;
  }();
  return kPatterns;
}

// Writes raw CR and LF as the escapes \r and \n: a pattern may carry either.
std::string escape_newlines(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 8);
  for (char c : pattern) {
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

struct GgufPreEntry {
  const char* name;
  std::vector<SplitRule> rules;
  bool ignore_merges;
};

const std::vector<GgufPreEntry>& gguf_pre_table() {
  static const std::vector<GgufPreEntry> kTable = {
      {"gpt-2", {SplitRule::kGpt2}, false},
      {"gpt2", {SplitRule::kGpt2}, false},
      // Older conversions without a pre name; the GPT-2 split is the family default.
      {"default", {SplitRule::kGpt2}, false},
      {"olmo", {SplitRule::kGpt2}, false},
      {"mpt", {SplitRule::kGpt2}, false},
      {"phi-2", {SplitRule::kGpt2}, false},
      {"llama-bpe", {SplitRule::kLlama3}, true},
      {"llama3", {SplitRule::kLlama3}, true},
      {"llama-v3", {SplitRule::kLlama3}, true},
      {"dbrx", {SplitRule::kLlama3}, false},
      {"smaug-bpe", {SplitRule::kLlama3}, false},
      {"qwen2", {SplitRule::kQwen2}, false},
      {"deepseek-r1-qwen", {SplitRule::kQwen2}, false},
      {"deepseek-llm",
       {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation,
        SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers},
       false},
      {"deepseek-coder",
       {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk,
        SplitRule::kNumber},
       false},
      {"deepseek-v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, false},
      {"refact", {SplitRule::kNumber, SplitRule::kGpt2}, false},
      {"starcoder", {SplitRule::kNumber, SplitRule::kGpt2}, false},
      {"smollm", {SplitRule::kNumber, SplitRule::kGpt2}, false},
      {"gpt-4o", {SplitRule::kGpt4o}, false},
  };
  return kTable;
}

}  // namespace

const char* split_rule_name(SplitRule rule) {
  switch (rule) {
    case SplitRule::kGpt2: return "gpt2";
    case SplitRule::kLlama3: return "llama3";
    case SplitRule::kQwen2: return "qwen2";
    case SplitRule::kGpt4o: return "gpt4o";
    case SplitRule::kNewline: return "newline";
    case SplitRule::kDeepseekLetters: return "deepseek_letters";
    case SplitRule::kDeepseekPunctuation: return "deepseek_punctuation";
    case SplitRule::kTrailingWhitespace: return "trailing_whitespace";
    case SplitRule::kDeepseekCjk: return "deepseek_cjk";
    case SplitRule::kNumbers: return "numbers";
    case SplitRule::kNumber: return "number";
    case SplitRule::kNumbersUpTo3: return "numbers_up_to_3";
    case SplitRule::kLetters: return "letters";
    case SplitRule::kPunctuation: return "punctuation";
    case SplitRule::kDeepseekV3Cjk: return "deepseek_v3_cjk";
    case SplitRule::kDeepseekV3Words: return "deepseek_v3_words";
    case SplitRule::kMetaspaceWords: return "metaspace_words";
  }
  return "?";
}

void PreTokenizer::split(const std::uint32_t* units, std::size_t count, std::vector<Span>* pieces,
                         std::vector<Span>* scratch) const {
  pieces->clear();
  if (count == 0) return;
  pieces->push_back({0, static_cast<std::uint32_t>(count)});
  for (SplitRule rule : rules_) {
    scratch->clear();
    for (const Span& piece : *pieces) apply_rule(rule, units, piece, scratch);
    std::swap(*pieces, *scratch);
  }
}

Status split_rules_for_pattern(std::string_view pattern, std::vector<SplitRule>* rules) {
  std::string text = escape_newlines(pattern);
  std::string normalized;
  if (nfc_normalize(text, &normalized)) text = std::move(normalized);
  for (const KnownPattern& known : known_patterns()) {
    if (known.text == text) {
      *rules = known.rules;
      return Status::Ok();
    }
  }
  std::string shown(pattern.substr(0, 200));
  if (pattern.size() > 200) shown += "...";
  return Status::Unsupported("unsupported pre-tokenizer split pattern \"" + shown +
                             "\" (zipmoe recognizes the GPT-2, Llama 3, Qwen2, GPT-4o and DeepSeek patterns)");
}

Status split_rules_for_gguf_pre(std::string_view pre, std::vector<SplitRule>* rules, bool* ignore_merges) {
  for (const GgufPreEntry& entry : gguf_pre_table()) {
    if (pre == entry.name) {
      *rules = entry.rules;
      *ignore_merges = entry.ignore_merges;
      return Status::Ok();
    }
  }
  return Status::Unsupported("unsupported GGUF pre-tokenizer tokenizer.ggml.pre = \"" + std::string(pre) +
                             "\" (supported: " + supported_gguf_pre_names() + ")");
}

std::string supported_gguf_pre_names() {
  std::string out;
  for (const GgufPreEntry& entry : gguf_pre_table()) {
    if (!out.empty()) out += ", ";
    out += entry.name;
  }
  return out;
}

}  // namespace zipmoe::text
