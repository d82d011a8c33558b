#include "text/tokenizer.h"

#include <algorithm>
#include <map>

#include "text/tokenizer_builder.h"
#include "text/unicode.h"

namespace zipmoe::text {

namespace {

constexpr char kMetaspaceUtf8[] = "\xE2\x96\x81";  // U+2581, SentencePiece's space

std::size_t utf8_length_of_unit(std::uint32_t unit) {
  if (unit < 0x80) return 1;
  if (unit < 0x800) return 2;
  if (unit < 0x10000) return 3;
  if (unit < kInvalidByteBase) return 4;
  return 1;
}

// The unit ending at text[pos - 1] and its byte length (an invalid byte is its own unit).
std::uint32_t unit_before(std::string_view text, std::size_t pos, std::size_t* length) {
  std::size_t start = pos - 1;
  while (start > 0 && pos - start < 4 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  std::vector<std::uint32_t> units;
  decode_utf8(text.substr(start, pos - start), &units, nullptr);
  if (units.size() == 1 && units[0] < kInvalidByteBase) {
    *length = pos - start;
    return units[0];
  }
  *length = 1;
  return kInvalidByteBase + static_cast<unsigned char>(text[pos - 1]);
}

std::uint32_t unit_at(std::string_view text, std::size_t pos, std::size_t* length) {
  std::vector<std::uint32_t> units;
  decode_utf8(text.substr(pos, std::min<std::size_t>(4, text.size() - pos)), &units, nullptr);
  *length = utf8_length_of_unit(units[0]);
  return units[0];
}

bool is_word_unit(std::uint32_t unit) { return unit == '_' || is_letter(unit) || is_number(unit); }

}  // namespace

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet kAlphabet = [] {
    ByteAlphabet a{};
    for (std::uint32_t i = 0; i < ByteAlphabet::kLimit; ++i) a.byte_of[i] = -1;
    std::uint32_t next = 256;
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      a.code_point[b] = printable ? b : next++;
      append_utf8(a.code_point[b], &a.utf8[b]);
      a.byte_of[a.code_point[b]] = static_cast<std::int16_t>(b);
    }
    return a;
  }();
  return kAlphabet;
}

int byte_token_value(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = token[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

void TokenizerBuilder::add_rank_merges(Tokenizer* t, const std::vector<std::pair<std::string, std::string>>& merges,
                                       std::size_t* skipped) {
  *skipped = 0;
  t->pairs_.reserve(merges.size());
  std::string joined;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const auto& [left_text, right_text] = merges[i];
    const std::int32_t left = t->model_token(left_text);
    const std::int32_t right = t->model_token(right_text);
    joined.assign(left_text).append(right_text);
    const std::int32_t merged = t->model_token(joined);
    if (left < 0 || right < 0 || merged < 0 || left_text.empty() || right_text.empty()) {
      ++*skipped;
      continue;
    }
    t->pairs_.insert(left, right, static_cast<std::uint32_t>(i), merged);
  }
}

void Tokenizer::finish(std::string description) {
  description_ = std::move(description);
  const ByteAlphabet& alphabet = byte_alphabet();
  byte_tokens_.fill(-1);
  ascii_tokens_.fill(-1);
  if (model_ == Model::kByteLevel) {
    for (int b = 0; b < 256; ++b) byte_tokens_[b] = model_token(alphabet.utf8[b]);
  } else {
    for (std::int32_t id = 0; id < vocab_size(); ++id) {
      if (attributes_[id] != TokenAttribute::kByte) continue;
      const int value = byte_token_value(vocab_.token(id));
      if (value >= 0 && byte_tokens_[value] < 0) byte_tokens_[value] = id;
    }
    for (int c = 0; c < 128; ++c) {
      const char ch = static_cast<char>(c);
      const std::int32_t id = model_token(std::string_view(&ch, 1));
      if (id >= 0 && mergeable_[id]) ascii_tokens_[c] = id;
    }
  }

  split_words_ = false;
  if (model_ == Model::kCharacter && replace_spaces_ && pre_tokenizer_.empty() && !ignore_merges_) {
    split_words_ = true;
    for (std::int32_t id = 0; id < vocab_size() && split_words_; ++id) {
      if (!mergeable_[id]) continue;
      const std::string_view token = vocab_.token(id);
      for (std::size_t at = token.find(kMetaspaceUtf8, 1); at != std::string_view::npos;
           at = token.find(kMetaspaceUtf8, at + 3)) {
        if (at < 3 || token.substr(at - 3, 3) != std::string_view(kMetaspaceUtf8, 3)) {
          split_words_ = false;
          break;
        }
      }
    }
  }

  // The bytes each token decodes to.
  decoded_.clear();
  decoded_offsets_.assign(1, 0);
  decoded_offsets_.reserve(vocab_size() + 1);
  std::vector<std::uint32_t> units;
  for (std::int32_t id = 0; id < vocab_size(); ++id) {
    const std::string_view token = vocab_.token(id);
    const TokenAttribute attribute = attributes_[id];
    const bool added = attribute == TokenAttribute::kControl || attribute == TokenAttribute::kUserDefined ||
                       attribute == TokenAttribute::kUnknown;
    if (added) {
      decoded_.append(token);
    } else if (model_ == Model::kByteLevel) {
      decode_utf8(token, &units, nullptr);
      const std::size_t mark = decoded_.size();
      bool mapped = true;
      for (std::uint32_t unit : units) {
        if (unit >= ByteAlphabet::kLimit || alphabet.byte_of[unit] < 0) {
          mapped = false;
          break;
        }
        decoded_.push_back(static_cast<char>(alphabet.byte_of[unit]));
      }
      // Like Hugging Face's ByteLevel decoder: a token outside the alphabet is kept as written.
      if (!mapped) {
        decoded_.resize(mark);
        decoded_.append(token);
      }
    } else if (attribute == TokenAttribute::kByte && byte_token_value(token) >= 0) {
      decoded_.push_back(static_cast<char>(byte_token_value(token)));
    } else if (replace_spaces_) {
      std::size_t pos = 0;
      while (pos < token.size()) {
        const std::size_t found = token.find(kMetaspaceUtf8, pos);
        if (found == std::string_view::npos) {
          decoded_.append(token.substr(pos));
          break;
        }
        decoded_.append(token.substr(pos, found - pos));
        decoded_.push_back(' ');
        pos = found + 3;
      }
    } else {
      decoded_.append(token);
    }
    decoded_offsets_.push_back(static_cast<std::uint32_t>(decoded_.size()));
  }
  build_added_trie();
}

void Tokenizer::build_added_trie() {
  // Build with ordered child maps, then flatten into sorted edge lists.
  struct BuildNode {
    std::map<std::uint8_t, std::int32_t> children;
    std::int32_t added = -1;
  };
  std::vector<BuildNode> nodes(1);
  for (std::size_t i = 0; i < added_.size(); ++i) {
    const std::string& content = added_[i].content;
    if (content.empty()) continue;
    std::int32_t node = 0;
    for (char c : content) {
      const auto byte = static_cast<std::uint8_t>(c);
      auto it = nodes[node].children.find(byte);
      if (it == nodes[node].children.end()) {
        nodes.emplace_back();
        const auto child = static_cast<std::int32_t>(nodes.size() - 1);
        nodes[node].children.emplace(byte, child);
        node = child;
      } else {
        node = it->second;
      }
    }
    if (nodes[node].added < 0) nodes[node].added = static_cast<std::int32_t>(i);
  }
  trie_.clear();
  trie_edges_.clear();
  added_first_byte_.fill(false);
  for (const BuildNode& node : nodes) {
    trie_.push_back(TrieNode{static_cast<std::int32_t>(trie_edges_.size()),
                             static_cast<std::int32_t>(node.children.size()), node.added});
    for (const auto& [byte, child] : node.children) trie_edges_.push_back(TrieEdge{byte, child});
  }
  for (const auto& [byte, child] : nodes[0].children) added_first_byte_[byte] = true;
}

std::int32_t Tokenizer::match_added(std::string_view text, std::size_t pos, bool parse_special,
                                    std::size_t* length) const {
  std::int32_t best = -1;
  std::int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto byte = static_cast<std::uint8_t>(text[i]);
    const TrieNode& n = trie_[node];
    std::int32_t next = -1;
    for (std::int32_t e = n.first_edge; e < n.first_edge + n.edge_count; ++e) {
      if (trie_edges_[e].byte == byte) {
        next = trie_edges_[e].node;
        break;
      }
    }
    if (next < 0) break;
    node = next;
    const std::int32_t added = trie_[node].added;
    if (added >= 0 && (parse_special || !added_[added].special)) {
      best = added;
      *length = i + 1 - pos;
    }
  }
  return best;
}

std::size_t Tokenizer::memory_bytes() const {
  std::size_t bytes = vocab_.memory_bytes() + pairs_.memory_bytes() + decoded_.capacity() +
                      decoded_offsets_.capacity() * sizeof(std::uint32_t) + attributes_.capacity() +
                      mergeable_.capacity() / 8 + trie_.capacity() * sizeof(TrieNode) +
                      trie_edges_.capacity() * sizeof(TrieEdge);
  for (const AddedToken& token : added_) bytes += sizeof(AddedToken) + token.content.capacity();
  return bytes;
}

std::int32_t Tokenizer::model_token(std::string_view text) const {
  const std::int32_t id = vocab_.find(text);
  if (id < 0 || attributes_[id] == TokenAttribute::kNormal || shadowed_normal_tokens_.empty()) return id;
  auto it = shadowed_normal_tokens_.find(std::string(text));
  return it == shadowed_normal_tokens_.end() ? id : it->second;
}

bool Tokenizer::is_special(std::int32_t id) const {
  const TokenAttribute a = attributes_[id];
  return a == TokenAttribute::kControl || a == TokenAttribute::kUnknown;
}

struct Tokenizer::Workspace {
  std::string normalized;
  std::string prepared;
  std::string mapped;
  std::vector<std::uint32_t> units;
  std::vector<std::uint32_t> offsets;
  std::vector<Span> pieces;
  std::vector<Span> scratch;
  std::vector<std::int32_t> symbols;
  BpeMerger merger;
};

void Tokenizer::encode(std::string_view text, const EncodeOptions& options, std::vector<std::int32_t>* ids) const {
  Workspace work;
  if (options.add_special_tokens) ids->insert(ids->end(), prefix_ids_.begin(), prefix_ids_.end());
  std::size_t segment_start = 0;
  std::size_t pos = 0;
  while (!added_.empty() && pos < text.size()) {
    if (!added_first_byte_[static_cast<std::uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    std::size_t length = 0;
    const std::int32_t index = match_added(text, pos, options.parse_special, &length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = added_[index];
    std::size_t begin = pos;
    std::size_t end = pos + length;
    if (token.single_word) {
      std::size_t unit_length;
      const bool word_before = begin > 0 && is_word_unit(unit_before(text, begin, &unit_length));
      const bool word_after = end < text.size() && is_word_unit(unit_at(text, end, &unit_length));
      if (word_before || word_after) {
        ++pos;
        continue;
      }
    }
    if (token.lstrip) {
      while (begin > segment_start) {
        std::size_t unit_length;
        if (!is_whitespace(unit_before(text, begin, &unit_length))) break;
        begin -= unit_length;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        std::size_t unit_length;
        if (!is_whitespace(unit_at(text, end, &unit_length))) break;
        end += unit_length;
      }
    }
    if (begin > segment_start) {
      encode_segment(text.substr(segment_start, begin - segment_start), segment_start == 0, &work, ids);
    }
    ids->push_back(token.id);
    pos = segment_start = end;
  }
  if (segment_start < text.size()) encode_segment(text.substr(segment_start), segment_start == 0, &work, ids);
  if (options.add_special_tokens) ids->insert(ids->end(), suffix_ids_.begin(), suffix_ids_.end());
}

void Tokenizer::encode_segment(std::string_view text, bool first_segment, Workspace* work,
                               std::vector<std::int32_t>* ids) const {
  std::string_view s = text;
  if (nfc_ && nfc_normalize(s, &work->normalized)) s = work->normalized;
  if (model_ == Model::kCharacter && (replace_spaces_ || space_prefix_ != SpacePrefix::kNone)) {
    std::string& prepared = work->prepared;
    prepared.clear();
    prepared.reserve(s.size() + s.size() / 2 + 3);
    const bool starts_with_space =
        (replace_spaces_ && !s.empty() && s[0] == ' ') || s.substr(0, 3) == std::string_view(kMetaspaceUtf8, 3);
    bool prefix = false;
    switch (space_prefix_) {
      case SpacePrefix::kNone:
        break;
      case SpacePrefix::kEverySegment:
        prefix = !s.empty();
        break;
      case SpacePrefix::kFirstSegmentIfAbsent:
        prefix = first_segment && !starts_with_space;
        break;
      case SpacePrefix::kEverySegmentIfAbsent:
        prefix = !starts_with_space;
        break;
    }
    if (prefix) prepared.append(kMetaspaceUtf8, 3);
    for (char c : s) {
      if (replace_spaces_ && c == ' ') {
        prepared.append(kMetaspaceUtf8, 3);
      } else {
        prepared.push_back(c);
      }
    }
    s = prepared;
  } else if (model_ == Model::kByteLevel && byte_level_prefix_space_ && !s.empty() && s[0] != ' ') {
    work->prepared.assign(1, ' ');
    work->prepared.append(s);
    s = work->prepared;
  }
  if (s.empty()) return;
  decode_utf8(s, &work->units, &work->offsets);
  if (split_words_) {
    const std::vector<std::uint32_t>& units = work->units;
    std::size_t begin = 0;
    for (std::size_t k = 1; k <= units.size(); ++k) {
      if (k < units.size() && !(units[k] == 0x2581 && units[k - 1] != 0x2581)) continue;
      const std::uint32_t from = work->offsets[begin];
      encode_piece(s.substr(from, work->offsets[k] - from), units.data() + begin, k - begin, work, ids);
      begin = k;
    }
    return;
  }
  if (pre_tokenizer_.empty()) {
    encode_piece(s, work->units.data(), work->units.size(), work, ids);
    return;
  }
  pre_tokenizer_.split(work->units.data(), work->units.size(), &work->pieces, &work->scratch);
  for (const Span& piece : work->pieces) {
    const std::uint32_t begin = work->offsets[piece.begin];
    const std::uint32_t end = work->offsets[piece.end];
    encode_piece(s.substr(begin, end - begin), work->units.data() + piece.begin, piece.end - piece.begin, work, ids);
  }
}

void Tokenizer::encode_piece(std::string_view bytes, const std::uint32_t* units, std::size_t unit_count,
                             Workspace* work, std::vector<std::int32_t>* ids) const {
  std::vector<std::int32_t>& symbols = work->symbols;
  symbols.clear();
  if (model_ == Model::kByteLevel) {
    if (ignore_merges_) {
      const ByteAlphabet& alphabet = byte_alphabet();
      work->mapped.clear();
      for (char c : bytes) work->mapped.append(alphabet.utf8[static_cast<std::uint8_t>(c)]);
      const std::int32_t whole = model_token(work->mapped);
      if (whole >= 0) {
        ids->push_back(whole);
        return;
      }
    }
    for (char c : bytes) {
      const std::int32_t token = byte_tokens_[static_cast<std::uint8_t>(c)];
      if (token >= 0) symbols.push_back(token);
    }
    work->merger.merge(pairs_, symbols.data(), symbols.size(), ids);
    return;
  }

  if (ignore_merges_) {
    const std::int32_t whole = model_token(bytes);
    if (whole >= 0 && mergeable_[whole]) {
      ids->push_back(whole);
      return;
    }
  }
  auto push_unknown = [&]() {
    if (unk_id_ < 0) return;  // nothing to stand for it: the character is dropped
    if (fuse_unk_ && !symbols.empty() && symbols.back() == unk_id_) return;
    symbols.push_back(unk_id_);
  };
  std::size_t at = 0;
  for (std::size_t i = 0; i < unit_count; ++i) {
    const std::uint32_t unit = units[i];
    const std::size_t length = utf8_length_of_unit(unit);
    const std::string_view character = bytes.substr(at, length);
    at += length;
    std::int32_t token = -1;
    if (unit < 0x80) {
      token = ascii_tokens_[unit];
    } else if (unit < kInvalidByteBase) {
      token = model_token(character);
      if (token >= 0 && !mergeable_[token]) token = -1;
    }
    if (token >= 0) {
      symbols.push_back(token);
      continue;
    }
    bool all_bytes = byte_fallback_;
    for (std::size_t k = 0; all_bytes && k < character.size(); ++k) {
      all_bytes = byte_tokens_[static_cast<std::uint8_t>(character[k])] >= 0;
    }
    if (all_bytes) {
      for (char c : character) symbols.push_back(byte_tokens_[static_cast<std::uint8_t>(c)]);
    } else {
      push_unknown();
    }
  }
  work->merger.merge(pairs_, symbols.data(), symbols.size(), ids);
}

void Tokenizer::decode_bytes(const std::int32_t* ids, std::size_t count, bool skip_special_tokens,
                             std::string* out) const {
  bool strip = strip_leading_space_;
  for (std::size_t i = 0; i < count; ++i) {
    const std::int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special_tokens && is_special(id)) continue;
    std::string_view bytes = token_bytes(id);
    if (strip && !bytes.empty()) {
      strip = false;
      if (bytes[0] == ' ') bytes.remove_prefix(1);
    }
    out->append(bytes.data(), bytes.size());
  }
}

std::string Tokenizer::decode(const std::int32_t* ids, std::size_t count, bool skip_special_tokens) const {
  std::string bytes;
  decode_bytes(ids, count, skip_special_tokens, &bytes);
  if (is_valid_utf8(bytes)) return bytes;
  std::string text;
  append_utf8_lossy(bytes, &text);
  return text;
}

bool is_tokenizer_key(std::string_view key) {
  return key.substr(0, 10) == "tokenizer." || key == "general.architecture";
}

Status Tokenizer::from_gguf_metadata(const GgufMetadata& metadata, const std::string& origin,
                                     std::shared_ptr<const Tokenizer>* out) {
  return TokenizerBuilder::from_gguf(metadata, origin, out);
}

Status Tokenizer::from_hf_json(std::string_view tokenizer_json, const json::Value* tokenizer_config,
                               const std::string& origin, std::shared_ptr<const Tokenizer>* out) {
  return TokenizerBuilder::from_json(tokenizer_json, tokenizer_config, origin, out);
}

StreamDecoder::StreamDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special_tokens, bool at_start)
    : tokenizer_(std::move(tokenizer)),
      skip_special_tokens_(skip_special_tokens),
      at_start_(at_start),
      strip_pending_(at_start && tokenizer_->strips_leading_space()) {}

std::string StreamDecoder::feed(std::int32_t id) { return feed(&id, 1); }

std::string StreamDecoder::feed(const std::int32_t* ids, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const std::int32_t id = ids[i];
    if (id < 0 || id >= tokenizer_->vocab_size()) continue;
    if (skip_special_tokens_ && tokenizer_->is_special(id)) continue;
    std::string_view bytes = tokenizer_->token_bytes(id);
    if (strip_pending_ && !bytes.empty()) {
      strip_pending_ = false;
      if (bytes[0] == ' ') bytes.remove_prefix(1);
    }
    pending_.append(bytes.data(), bytes.size());
  }
  return take_complete();
}

std::string StreamDecoder::take_complete() {
  const std::size_t held = incomplete_utf8_suffix(pending_);
  const std::size_t ready = pending_.size() - held;
  std::string text;
  if (ready == 0) return text;
  const std::string_view complete(pending_.data(), ready);
  if (is_valid_utf8(complete)) {
    text.assign(complete);
  } else {
    append_utf8_lossy(complete, &text);
  }
  pending_.erase(0, ready);
  return text;
}

std::string StreamDecoder::flush() {
  std::string text;
  append_utf8_lossy(pending_, &text);
  pending_.clear();
  strip_pending_ = at_start_ && tokenizer_->strips_leading_space();
  return text;
}

}  // namespace zipmoe::text
