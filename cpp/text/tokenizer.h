// The tokenizer: text to token ids and back, built from the tokenizer a model
// ships with - a Hugging Face tokenizer.json (with its tokenizer_config.json),
// the tokenizer.ggml.* key/values of a GGUF file, or the "tokenizer" record of
// a .zmoe container's metadata (which carries one of the two).
//
// What it covers:
// - byte-level BPE (GPT-2, Llama 3, Qwen2, DeepSeek, GPT-4o style vocabularies):
//   text is split by the vocabulary's pre-tokenizer (text/pretokenizer.h), each
//   piece's bytes are mapped to the GPT-2 byte alphabet and merged by rank;
// - character-level BPE with byte fallback: SentencePiece BPE vocabularies
//   (Llama 2, Mistral, Mixtral; from GGUF "llama" with scores, or from a
//   tokenizer.json BPE model with merges): spaces become U+2581, a dummy
//   prefix is added as the vocabulary says, characters missing from the
//   vocabulary become <0xXX> byte tokens;
// - added tokens: non-special ones (GGUF USER_DEFINED, tokenizer.json
//   "special": false) are always matched in the text before pre-tokenization;
//   special ones (GGUF CONTROL/UNKNOWN, "special": true) only when
//   EncodeOptions::parse_special is set, so user text cannot inject control
//   tokens unless the caller asks for it (a rendered chat template does);
// - BOS/EOS: EncodeOptions::add_special_tokens adds what the vocabulary asks
//   for (GGUF add_bos_token/add_eos_token, with llama.cpp's defaults; the
//   tokenizer.json post-processor template, adjusted by tokenizer_config's
//   add_bos_token/add_eos_token);
// - NFC normalization when a tokenizer.json asks for it (the Qwen2 family).
//
// Decoding concatenates each token's bytes (byte-level tokens through the
// inverse byte map, <0xXX> tokens as their byte, U+2581 as a space, added
// tokens as written), drops the SentencePiece dummy-prefix space at the start,
// and turns the bytes into valid UTF-8 (ill-formed sequences become U+FFFD).
// StreamDecoder does the same incrementally without ever emitting part of a
// character; its pieces concatenate to decode() of the same ids.
//
// A Tokenizer is immutable once built; encode and decode are thread-safe.
// Builders return a Status (Format for malformed input, Unsupported for
// tokenizers zipmoe does not implement, naming what is missing).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/gguf_metadata.h"
#include "common/json.h"
#include "common/status.h"
#include "text/bpe.h"
#include "text/pretokenizer.h"

namespace zipmoe::text {

// The role of a token (GGUF token_type values 1-6; tokenizer.json tokens map onto them).
enum class TokenAttribute : std::uint8_t {
  kNormal,       // a vocabulary token BPE produces
  kUnknown,      // the unknown token (special)
  kControl,      // a special token: BOS, EOS, chat markers, ...
  kUserDefined,  // an added token that is not special: always matched in text
  kUnused,
  kByte,         // a <0xXX> byte-fallback token
};

struct EncodeOptions {
  // Add the vocabulary's BOS/EOS tokens around the text.
  bool add_special_tokens = true;
  // Match special tokens written in the text (e.g. "<|im_start|>") as those tokens.
  bool parse_special = false;
};

class Tokenizer {
 public:
  // From tokenizer.ggml.* key/values (of a GGUF file: model/tokenizer_files.h
  // reads one); `origin` names their source in messages.
  static Status from_gguf_metadata(const GgufMetadata& metadata, const std::string& origin,
                                   std::shared_ptr<const Tokenizer>* out);
  // From the text of a tokenizer.json, and optionally tokenizer_config.json
  // (an object, or nullptr/null) for BOS/EOS names and add_bos/add_eos.
  static Status from_hf_json(std::string_view tokenizer_json, const json::Value* tokenizer_config,
                             const std::string& origin, std::shared_ptr<const Tokenizer>* out);
  // From a container's metadata["tokenizer"] record ({"tokenizer_json": text or
  // null, "tokenizer_config": object or null, "gguf": {tokenizer.ggml.* key:
  // value} or null}, docs/FORMAT.md "Metadata"); tokenizer_json wins when both are present.
  static Status from_container_metadata(const json::Value& tokenizer_record, const std::string& origin,
                                        std::shared_ptr<const Tokenizer>* out);

  // Appends the ids of `text` to *ids. Never fails: bytes that are not valid
  // UTF-8 are encoded too (as byte tokens).
  void encode(std::string_view text, const EncodeOptions& options, std::vector<std::int32_t>* ids) const;

  // The exact bytes the ids stand for (may end inside a character). Ids outside
  // [0, vocab_size()) decode to nothing.
  void decode_bytes(const std::int32_t* ids, std::size_t count, bool skip_special_tokens, std::string* out) const;
  // decode_bytes as valid UTF-8.
  std::string decode(const std::int32_t* ids, std::size_t count, bool skip_special_tokens) const;

  std::int32_t vocab_size() const { return vocab_.size(); }
  std::int32_t bos_id() const { return bos_id_; }  // -1 when the vocabulary has none
  std::int32_t eos_id() const { return eos_id_; }
  std::int32_t pad_id() const { return pad_id_; }
  std::int32_t unk_id() const { return unk_id_; }
  // The ids add_special_tokens puts before and after the text.
  const std::vector<std::int32_t>& prefix_ids() const { return prefix_ids_; }
  const std::vector<std::int32_t>& suffix_ids() const { return suffix_ids_; }

  // The id of a token given as the vocabulary writes it (e.g. "Ġthe"), or -1.
  std::int32_t token_to_id(std::string_view token) const { return vocab_.find(token); }
  // The token as the vocabulary writes it; id must be in [0, vocab_size()).
  std::string_view id_to_token(std::int32_t id) const { return vocab_.token(id); }
  TokenAttribute attribute(std::int32_t id) const { return attributes_[id]; }
  bool is_special(std::int32_t id) const;
  // The bytes a token decodes to (before the leading-space rule).
  std::string_view token_bytes(std::int32_t id) const {
    return std::string_view(decoded_.data() + decoded_offsets_[id], decoded_offsets_[id + 1] - decoded_offsets_[id]);
  }
  // Whether decoding drops one leading space (the SentencePiece dummy prefix).
  bool strips_leading_space() const { return strip_leading_space_; }

  // Bytes of memory the tokenizer's tables hold.
  std::size_t memory_bytes() const;

  // e.g. "byte-level BPE, pre-tokenizer qwen2, 151936 tokens"
  const std::string& description() const { return description_; }

 private:
  enum class Model : std::uint8_t { kByteLevel, kCharacter };
  enum class SpacePrefix : std::uint8_t {
    kNone,
    kEverySegment,         // GGUF SentencePiece; tokenizer.json Prepend normalizer
    kFirstSegmentIfAbsent, // Metaspace prepend_scheme "first"
    kEverySegmentIfAbsent, // Metaspace prepend_scheme "always"
  };
  struct AddedToken {
    std::int32_t id;
    std::string content;
    bool special;
    bool lstrip;
    bool rstrip;
    bool single_word;
  };
  struct TrieNode {
    std::int32_t first_edge;
    std::int32_t edge_count;
    std::int32_t added;  // index into added_, or -1
  };
  struct TrieEdge {
    std::uint8_t byte;
    std::int32_t node;
  };
  struct Workspace;
  friend struct TokenizerBuilder;

  Tokenizer() = default;
  void build_added_trie();
  void finish(std::string description);
  // Longest added token at text[pos] that `parse_special` allows: its index in added_, or -1.
  std::int32_t match_added(std::string_view text, std::size_t pos, bool parse_special, std::size_t* length) const;
  // The id BPE uses for a token string: a normal token wins over an added token
  // written the same way (DeepSeek LLM adds "ø" and friends next to the
  // byte-level tokens of the same spelling); -1 when absent.
  std::int32_t model_token(std::string_view text) const;
  void encode_segment(std::string_view text, bool first_segment, Workspace* work,
                      std::vector<std::int32_t>* ids) const;
  void encode_piece(std::string_view bytes, const std::uint32_t* units, std::size_t unit_count,
                    Workspace* work, std::vector<std::int32_t>* ids) const;

  Model model_ = Model::kByteLevel;
  Vocabulary vocab_;
  std::vector<TokenAttribute> attributes_;
  std::vector<bool> mergeable_;  // tokens that character-level symbols may be
  std::unordered_map<std::string, std::int32_t> shadowed_normal_tokens_;  // see model_token()
  std::string decoded_;
  std::vector<std::uint32_t> decoded_offsets_;
  PairTable pairs_;
  PreTokenizer pre_tokenizer_;
  bool ignore_merges_ = false;
  bool nfc_ = false;
  bool replace_spaces_ = false;            // ' ' -> U+2581 (character-level)
  SpacePrefix space_prefix_ = SpacePrefix::kNone;
  bool byte_level_prefix_space_ = false;   // ByteLevel add_prefix_space
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool strip_leading_space_ = false;
  // Character-level without a pre-tokenizer: no mergeable token holds U+2581
  // after another character, so no merge crosses the start of a "▁word" and
  // BPE may run word by word (the same result, and much faster on long text).
  bool split_words_ = false;
  // Byte-level: the token of each byte's character. Character-level: the <0xXX> tokens (-1 when absent).
  std::array<std::int32_t, 256> byte_tokens_{};
  std::array<std::int32_t, 128> ascii_tokens_{};  // character-level: token of each ASCII character, or -1
  std::vector<AddedToken> added_;
  std::vector<TrieNode> trie_;
  std::vector<TrieEdge> trie_edges_;
  std::array<bool, 256> added_first_byte_{};
  std::vector<std::int32_t> prefix_ids_;
  std::vector<std::int32_t> suffix_ids_;
  std::int32_t bos_id_ = -1;
  std::int32_t eos_id_ = -1;
  std::int32_t pad_id_ = -1;
  std::int32_t unk_id_ = -1;
  std::string description_;
};

// The GGUF keys a tokenizer is built from: "tokenizer.*" and "general.architecture".
bool is_tokenizer_key(std::string_view key);

// Incremental detokenization: feed ids as they are generated, get text pieces
// that are always valid UTF-8 (bytes of a character split across tokens are
// held back until it completes). The concatenation of every piece and flush()
// equals Tokenizer::decode of the ids fed. Not thread-safe.
class StreamDecoder {
 public:
  // at_start: the first id fed begins the text (the SentencePiece dummy-prefix
  // space is dropped, as decode() does); false when continuing after a prompt.
  explicit StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special_tokens = false,
                         bool at_start = true);

  // The text that became complete with this id (possibly empty).
  std::string feed(std::int32_t id);
  std::string feed(const std::int32_t* ids, std::size_t count);
  // The rest: held-back bytes that never completed become U+FFFD. Starts over.
  std::string flush();
  // Bytes held back so far.
  std::size_t pending_bytes() const { return pending_.size(); }

 private:
  std::string take_complete();

  std::shared_ptr<const Tokenizer> tokenizer_;
  bool skip_special_tokens_;
  bool at_start_;
  bool strip_pending_;
  std::string pending_;
};

}  // namespace zipmoe::text
