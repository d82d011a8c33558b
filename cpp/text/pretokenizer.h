// Pre-tokenization: splitting text into the pieces that BPE encodes one at a time.
//
// Tokenizers describe this step with regular expressions (tokenizer.json
// "Split" pre-tokenizers, or the pattern llama.cpp associates with a GGUF
// "tokenizer.ggml.pre" name). zipmoe does not carry a regex engine: each known
// pattern is a SplitRule, a hand-written matcher over code points that finds
// exactly the matches the regex would find (leftmost start, alternatives tried
// in order, greedy with backtracking where the pattern needs it; lookahead and
// "$" see the end of the piece being split). A pre-tokenizer is a sequence of
// rules; like a tokenizer.json Sequence of Split(behavior = Isolated) steps,
// each rule splits every piece left by the previous one into its matches and
// the gaps between them.
//
// Units are code points from decode_utf8 (invalid bytes are units of no class).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace zipmoe::text {

enum class SplitRule : std::uint8_t {
  // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kLlama3,
  // Qwen2: the Llama 3 pattern with \p{N} (one digit per piece) in place of \p{N}{1,3}.
  kQwen2,
  // GPT-4o / gpt-oss (o200k): [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|...)?
  // |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|...)?|\p{N}{1,3}
  // | ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kGpt4o,
  kNewline,                // [\r\n]
  kDeepseekLetters,        // \s?[<the DeepSeek LLM cased-letter class>]+
  kDeepseekPunctuation,    // \s?[!-/:-~！-／：-～‘-‟　-。]+
  kTrailingWhitespace,     // \s+$
  kDeepseekCjk,            // [一-龥ࠀ-一가-퟿]+
  kNumbers,                // \p{N}+ (also HF Digits(individual_digits=false))
  kNumber,                 // \p{N} (also HF Digits(individual_digits=true))
  kNumbersUpTo3,           // \p{N}{1,3}
  kLetters,                // \s?\p{L}+
  kPunctuation,            // \s?\p{P}+
  kDeepseekV3Cjk,          // [一-龥぀-ゟ゠-ヿ]+
  // DeepSeek V3: [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
  // | ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kDeepseekV3Words,
  // Metaspace(split = true): a piece starts at every U+2581.
  kMetaspaceWords,
};

const char* split_rule_name(SplitRule rule);

struct Span {
  std::uint32_t begin;
  std::uint32_t end;
};

class PreTokenizer {
 public:
  PreTokenizer() = default;
  explicit PreTokenizer(std::vector<SplitRule> rules) : rules_(std::move(rules)) {}

  bool empty() const { return rules_.empty(); }
  const std::vector<SplitRule>& rules() const { return rules_; }

  // Splits units[0, count) into consecutive non-empty pieces covering it all.
  // `scratch` is working memory (reused across calls by the caller).
  void split(const std::uint32_t* units, std::size_t count, std::vector<Span>* pieces,
             std::vector<Span>* scratch) const;

 private:
  std::vector<SplitRule> rules_;
};

// The rules of a regular expression from a tokenizer.json Split pre-tokenizer,
// recognized by its exact text (after NFC, so that copies whose ranges were
// normalized still match); Status::Unsupported naming it when it is unknown.
Status split_rules_for_pattern(std::string_view pattern, std::vector<SplitRule>* rules);

// The rules llama.cpp associates with GGUF "tokenizer.ggml.pre" names, and
// whether that vocabulary encodes a piece found whole in the vocabulary as one
// token without merging (ignore_merges). Status::Unsupported for unknown names.
Status split_rules_for_gguf_pre(std::string_view pre, std::vector<SplitRule>* rules, bool* ignore_merges);

// The names split_rules_for_gguf_pre accepts, comma-separated (for messages).
std::string supported_gguf_pre_names();

}  // namespace zipmoe::text
