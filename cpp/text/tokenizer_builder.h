// Internal to cpp/text: the code that fills a Tokenizer from one source format
// (tokenizer_gguf.cpp, tokenizer_json.cpp) and what those builders share.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"

namespace zipmoe::text {

// GPT-2's byte-level alphabet: every byte is written as one printable code
// point (printable Latin-1 bytes as themselves, the others as U+0100 onwards).
struct ByteAlphabet {
  std::uint32_t code_point[256];
  std::string utf8[256];
  // code point -> byte, for code points below kLimit; -1 when not in the alphabet.
  static constexpr std::uint32_t kLimit = 0x144;
  std::int16_t byte_of[kLimit];
};
const ByteAlphabet& byte_alphabet();

// The byte of a "<0xHH>" token, or -1.
int byte_token_value(std::string_view token);

struct TokenizerBuilder {
  static std::shared_ptr<Tokenizer> create() { return std::shared_ptr<Tokenizer>(new Tokenizer()); }

  using Model = Tokenizer::Model;
  using SpacePrefix = Tokenizer::SpacePrefix;
  using AddedToken = Tokenizer::AddedToken;

  // Installs the vocabulary (tokens by id).
  static void set_vocabulary(Tokenizer* t, const std::vector<std::string>& tokens,
                             std::vector<TokenAttribute> attributes, std::vector<bool> mergeable) {
    t->vocab_ = Vocabulary();
    std::size_t bytes = 0;
    for (const std::string& token : tokens) bytes += token.size();
    t->vocab_.reserve(tokens.size(), bytes);
    for (const std::string& token : tokens) t->vocab_.push_back(token);
    t->vocab_.build_index();
    t->attributes_ = std::move(attributes);
    t->mergeable_ = std::move(mergeable);
    t->shadowed_normal_tokens_.clear();
    for (std::int32_t id = 0; id < t->vocab_.size(); ++id) {
      if (t->attributes_[id] != TokenAttribute::kNormal) continue;
      const std::int32_t indexed = t->vocab_.find(t->vocab_.token(id));
      if (indexed != id && t->attributes_[indexed] != TokenAttribute::kNormal) {
        t->shadowed_normal_tokens_[std::string(t->vocab_.token(id))] = id;
      }
    }
  }

  // Rank-based merges: merge i of "left right" gets priority i. Merges naming a
  // token missing from the vocabulary are skipped (and counted in *skipped).
  static void add_rank_merges(Tokenizer* t, const std::vector<std::pair<std::string, std::string>>& merges,
                              std::size_t* skipped);

  // Builds the derived tables (byte tokens, decoded bytes, added-token trie).
  static void finish(Tokenizer* t, std::string description) { t->finish(std::move(description)); }

  static Status from_gguf(const GgufMetadata& metadata, const std::string& origin,
                          std::shared_ptr<const Tokenizer>* out);
  // SentencePiece merges ranked by the tokens' scores (scores[id], NaN last).
  static void add_score_merges(Tokenizer* t, const std::vector<double>& scores, const std::vector<bool>& mergeable);
  static Status from_json(std::string_view text, const json::Value* config, const std::string& origin,
                          std::shared_ptr<const Tokenizer>* out);
  // BOS/EOS/PAD/UNK ids and add_bos/add_eos from a tokenizer_config object (or null).
  static void apply_tokenizer_config(Tokenizer* t, const json::Value* config);
};

}  // namespace zipmoe::text
