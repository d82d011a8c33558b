// Tokenizers from GGUF key/values (tokenizer.ggml.*), read from a GGUF file or
// from the "gguf" part of a container's tokenizer metadata, following
// llama.cpp's reading of those keys.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "text/tokenizer_builder.h"
#include "text/unicode.h"

namespace zipmoe::text {

namespace {

// More tokens than any vocabulary has; bounds what a corrupt count may allocate.
constexpr std::size_t kMaxTokens = 1 << 24;

class KeyReader {
 public:
  KeyReader(const GgufMetadata& metadata, const std::string& origin) : metadata_(metadata), origin_(origin) {}

  Status error(const std::string& key, const std::string& what) const {
    return Status::Format(origin_ + ": " + key + " " + what);
  }

  Status string(const std::string& key, std::string* out, bool* present) const {
    const GgufValue* v = metadata_.find(key);
    *present = v != nullptr;
    if (!v) return Status::Ok();
    if (v->type != GgufType::kString) return error(key, std::string("must be a string (is ") + gguf_type_name(v->type) + ")");
    *out = v->text;
    return Status::Ok();
  }

  Status integer(const std::string& key, std::int64_t* out, bool* present) const {
    const GgufValue* v = metadata_.find(key);
    *present = v != nullptr;
    if (!v) return Status::Ok();
    if (!v->is_integer()) return error(key, std::string("must be an integer (is ") + gguf_type_name(v->type) + ")");
    *out = v->integer;
    return Status::Ok();
  }

  Status boolean(const std::string& key, bool* out, bool* present) const {
    const GgufValue* v = metadata_.find(key);
    *present = v != nullptr;
    if (!v) return Status::Ok();
    if (!v->is_integer() || v->integer < 0 || v->integer > 1) return error(key, "must be a bool");
    *out = v->integer != 0;
    return Status::Ok();
  }

  Status strings(const std::string& key, const std::vector<std::string>** out) const {
    const GgufValue* v = metadata_.find(key);
    *out = nullptr;
    if (!v) return Status::Ok();
    if (v->type != GgufType::kArray || (v->item_type != GgufType::kString && v->array_count > 0)) {
      return error(key, "must be an array of strings");
    }
    *out = &v->strings;
    return Status::Ok();
  }

  // Integer items; *present false when the key is absent.
  Status integers(const std::string& key, std::vector<std::int64_t>* out, bool* present) const {
    const GgufValue* v = metadata_.find(key);
    *present = v != nullptr;
    if (!v) return Status::Ok();
    if (v->type != GgufType::kArray || !v->numbers.empty() || v->integers.size() != v->array_count) {
      return error(key, "must be an array of integers");
    }
    *out = v->integers;
    return Status::Ok();
  }

  Status numbers(const std::string& key, std::vector<double>* out, bool* present) const {
    const GgufValue* v = metadata_.find(key);
    *present = v != nullptr;
    if (!v) return Status::Ok();
    if (v->type != GgufType::kArray) return error(key, "must be an array of numbers");
    if (v->numbers.size() == v->array_count) {
      *out = v->numbers;
    } else if (v->integers.size() == v->array_count) {
      out->assign(v->integers.begin(), v->integers.end());
    } else {
      return error(key, "must be an array of numbers");
    }
    return Status::Ok();
  }

 private:
  const GgufMetadata& metadata_;
  const std::string& origin_;
};

TokenAttribute attribute_of_type(std::int64_t type) {
  switch (type) {
    case 2: return TokenAttribute::kUnknown;
    case 3: return TokenAttribute::kControl;
    case 4: return TokenAttribute::kUserDefined;
    case 5: return TokenAttribute::kUnused;
    case 6: return TokenAttribute::kByte;
    default: return TokenAttribute::kNormal;  // 1, and 0 ("undefined") as llama.cpp reads it
  }
}

int base64_digit(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool base64_decode(std::string_view text, std::string* out) {
  out->clear();
  std::uint32_t accumulator = 0;
  int bits = 0;
  std::size_t i = 0;
  for (; i < text.size() && text[i] != '='; ++i) {
    const int digit = base64_digit(text[i]);
    if (digit < 0) return false;
    accumulator = (accumulator << 6) | static_cast<std::uint32_t>(digit);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((accumulator >> bits) & 0xFF));
    }
  }
  for (; i < text.size(); ++i) {
    if (text[i] != '=') return false;
  }
  return true;
}

double float_from_bits(std::int64_t bits) {
  if (bits >= 0 && bits <= 0xFFFFFFFFll) {
    const auto pattern = static_cast<std::uint32_t>(bits);
    float f;
    std::memcpy(&f, &pattern, 4);
    return f;
  }
  const auto pattern = static_cast<std::uint64_t>(bits);
  double d;
  std::memcpy(&d, &pattern, 8);
  return d;
}

// One JSON-encoded GGUF value of the container metadata (python/zipmoe/convert/gguf_format.py):
// strings, {"base64": ...} for strings that are not UTF-8, numbers, {"bits": n} for non-finite floats.
Status scalar_from_json(const json::Value& v, GgufValue* out, const std::string& what) {
  if (v.is_string()) {
    out->type = GgufType::kString;
    out->text = v.as_string();
  } else if (v.is_bool()) {
    out->type = GgufType::kBool;
    out->integer = v.as_bool() ? 1 : 0;
  } else if (v.is_integer()) {
    out->type = GgufType::kInt64;
    out->integer = v.as_int();
  } else if (v.is_number()) {
    out->type = GgufType::kFloat64;
    out->number = v.as_number();
  } else if (v.is_object() && v.find("base64") && v.find("base64")->is_string()) {
    out->type = GgufType::kString;
    if (!base64_decode(v.find("base64")->as_string(), &out->text)) {
      return Status::Format(what + ": invalid base64");
    }
  } else if (v.is_object() && v.find("bits") && v.find("bits")->is_integer()) {
    out->type = GgufType::kFloat64;
    out->number = float_from_bits(v.find("bits")->as_int());
  } else {
    return Status::Format(what + ": unexpected JSON " + json::type_name(v.type()));
  }
  return Status::Ok();
}

Status value_from_json(const json::Value& v, GgufValue* out, const std::string& what) {
  if (!v.is_array()) return scalar_from_json(v, out, what);
  out->type = GgufType::kArray;
  const auto& items = v.items();
  out->array_count = items.size();
  if (items.empty()) {
    out->item_type = GgufType::kString;
    return Status::Ok();
  }
  bool any_float = false;
  bool any_string = false;
  std::vector<GgufValue> scalars(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (items[i].is_array()) return Status::Format(what + ": nested arrays are not tokenizer data");
    ZIPMOE_RETURN_IF_ERROR(scalar_from_json(items[i], &scalars[i], what));
    any_string |= scalars[i].type == GgufType::kString;
    any_float |= scalars[i].type == GgufType::kFloat64;
  }
  if (any_string) {
    out->item_type = GgufType::kString;
    out->strings.reserve(items.size());
    for (GgufValue& s : scalars) {
      if (s.type != GgufType::kString) return Status::Format(what + ": array mixes strings and other values");
      out->strings.push_back(std::move(s.text));
    }
  } else if (any_float) {
    out->item_type = GgufType::kFloat64;
    for (const GgufValue& s : scalars) {
      out->numbers.push_back(s.type == GgufType::kFloat64 ? s.number : static_cast<double>(s.integer));
    }
  } else {
    out->item_type = GgufType::kInt64;
    for (const GgufValue& s : scalars) out->integers.push_back(s.integer);
  }
  return Status::Ok();
}

// The tokens, their attributes and (for SentencePiece) scores.
struct GgufVocabulary {
  bool sentencepiece = false;
  const std::vector<std::string>* tokens = nullptr;
  std::vector<TokenAttribute> attributes;
  std::vector<bool> mergeable;  // tokens that BPE merges may produce
  std::vector<double> scores;
};

Status read_gguf_vocabulary(const KeyReader& keys, const std::string& origin, GgufVocabulary* out) {
  bool present = false;
  std::string model_name;
  ZIPMOE_RETURN_IF_ERROR(keys.string("tokenizer.ggml.model", &model_name, &present));
  if (!present) return Status::Unsupported(origin + ": no tokenizer (tokenizer.ggml.model is missing)");
  if (model_name != "gpt2" && model_name != "llama") {
    return Status::Unsupported(origin + ": tokenizer.ggml.model \"" + model_name +
                               "\" is not supported (zipmoe reads \"gpt2\" byte-level BPE and \"llama\" "
                               "SentencePiece BPE vocabularies)");
  }
  out->sentencepiece = model_name == "llama";
  ZIPMOE_RETURN_IF_ERROR(keys.strings("tokenizer.ggml.tokens", &out->tokens));
  if (!out->tokens || out->tokens->empty()) return keys.error("tokenizer.ggml.tokens", "is missing or empty");
  const std::size_t n = out->tokens->size();
  if (n > kMaxTokens) return keys.error("tokenizer.ggml.tokens", "holds " + std::to_string(n) + " tokens (too many)");
  std::vector<std::int64_t> types;
  ZIPMOE_RETURN_IF_ERROR(keys.integers("tokenizer.ggml.token_type", &types, &present));
  if (present && types.size() != n) {
    return keys.error("tokenizer.ggml.token_type",
                      "has " + std::to_string(types.size()) + " entries for " + std::to_string(n) + " tokens");
  }
  ZIPMOE_RETURN_IF_ERROR(keys.numbers("tokenizer.ggml.scores", &out->scores, &present));
  if (present && out->scores.size() != n) {
    return keys.error("tokenizer.ggml.scores",
                      "has " + std::to_string(out->scores.size()) + " entries for " + std::to_string(n) + " tokens");
  }
  if (out->sentencepiece && out->scores.empty()) {
    return keys.error("tokenizer.ggml.scores", "is missing (a llama vocabulary needs it)");
  }
  out->attributes.assign(n, TokenAttribute::kNormal);
  for (std::size_t i = 0; i < types.size(); ++i) out->attributes[i] = attribute_of_type(types[i]);
  out->mergeable.assign(n, false);
  for (std::size_t i = 0; i < n; ++i) {
    const TokenAttribute a = out->attributes[i];
    out->mergeable[i] =
        a == TokenAttribute::kNormal || a == TokenAttribute::kUserDefined || a == TokenAttribute::kUnused;
  }
  return Status::Ok();
}

// BOS, EOS, padding and unknown token ids, in that order (-1 when absent).
Status read_special_ids(const KeyReader& keys, std::size_t n, std::array<std::int32_t, 4>* ids) {
  const char* const names[4] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id"};
  ids->fill(-1);
  for (int k = 0; k < 4; ++k) {
    std::int64_t id = -1;
    bool present = false;
    ZIPMOE_RETURN_IF_ERROR(keys.integer(names[k], &id, &present));
    if (!present) continue;
    if (id < 0 || id >= static_cast<std::int64_t>(n)) {
      return keys.error(names[k], "= " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n) +
                                      " tokens");
    }
    (*ids)[k] = static_cast<std::int32_t>(id);
  }
  return Status::Ok();
}

// A gpt2 vocabulary's merges, "left right" each.
Status read_gguf_merges(const KeyReader& keys, std::vector<std::pair<std::string, std::string>>* pairs) {
  const std::vector<std::string>* merges = nullptr;
  ZIPMOE_RETURN_IF_ERROR(keys.strings("tokenizer.ggml.merges", &merges));
  if (!merges) return keys.error("tokenizer.ggml.merges", "is missing (a gpt2 vocabulary needs it)");
  pairs->reserve(merges->size());
  for (const std::string& merge : *merges) {
    const std::size_t space = merge.find(' ', 1);
    if (space == std::string::npos) {
      return keys.error("tokenizer.ggml.merges", "entry \"" + merge.substr(0, 64) + "\" is not \"left right\"");
    }
    pairs->emplace_back(merge.substr(0, space), merge.substr(space + 1));
  }
  return Status::Ok();
}

}  // namespace

// SentencePiece merges the pair whose joined text is a token, best score first:
// the mergeable tokens ranked by score (equal scores share a rank).
void TokenizerBuilder::add_score_merges(Tokenizer* t, const std::vector<double>& scores,
                                        const std::vector<bool>& mergeable) {
  const std::size_t n = mergeable.size();
  std::vector<std::int32_t> order;
  for (std::size_t i = 0; i < n; ++i) {
    if (mergeable[i]) order.push_back(static_cast<std::int32_t>(i));
  }
  auto score_of = [&](std::int32_t id) {
    const double s = scores[id];
    return std::isnan(s) ? -INFINITY : s;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int32_t a, std::int32_t b) { return score_of(a) > score_of(b); });
  std::vector<std::uint32_t> rank(n, 0);
  std::uint32_t current = 0;
  for (std::size_t k = 0; k < order.size(); ++k) {
    if (k > 0 && score_of(order[k]) != score_of(order[k - 1])) ++current;
    rank[order[k]] = current;
  }
  t->pairs_.reserve(order.size() * 2);
  for (std::int32_t id : order) {
    const std::string_view text = t->vocab_.token(id);
    for (std::size_t split = 1; split < text.size(); ++split) {
      if ((static_cast<unsigned char>(text[split]) & 0xC0) == 0x80) continue;  // inside a character
      const std::int32_t left = t->model_token(text.substr(0, split));
      if (left < 0 || !mergeable[left]) continue;
      const std::int32_t right = t->model_token(text.substr(split));
      if (right < 0 || !mergeable[right]) continue;
      t->pairs_.insert(left, right, rank[id], id);
    }
  }
}

Status TokenizerBuilder::from_gguf(const GgufMetadata& metadata, const std::string& origin,
                                   std::shared_ptr<const Tokenizer>* out) {
  const KeyReader keys(metadata, origin);
  GgufVocabulary vocabulary;
  ZIPMOE_RETURN_IF_ERROR(read_gguf_vocabulary(keys, origin, &vocabulary));
  const std::vector<std::string>& tokens = *vocabulary.tokens;
  const std::vector<TokenAttribute>& attributes = vocabulary.attributes;
  const std::size_t n = tokens.size();
  std::shared_ptr<Tokenizer> t = create();
  set_vocabulary(t.get(), tokens, attributes, vocabulary.mergeable);
  t->model_ = vocabulary.sentencepiece ? Model::kCharacter : Model::kByteLevel;

  std::array<std::int32_t, 4> ids;
  ZIPMOE_RETURN_IF_ERROR(read_special_ids(keys, n, &ids));
  t->bos_id_ = ids[0];
  t->eos_id_ = ids[1];
  t->pad_id_ = ids[2];
  t->unk_id_ = ids[3];
  if (t->unk_id_ < 0) {
    const auto unknown = std::find(attributes.begin(), attributes.end(), TokenAttribute::kUnknown);
    if (unknown != attributes.end()) t->unk_id_ = static_cast<std::int32_t>(unknown - attributes.begin());
  }

  bool present = false;
  std::string description;
  bool add_bos = vocabulary.sentencepiece;
  if (vocabulary.sentencepiece) {
    bool add_space_prefix = true;
    ZIPMOE_RETURN_IF_ERROR(keys.boolean("tokenizer.ggml.add_space_prefix", &add_space_prefix, &present));
    t->replace_spaces_ = true;
    t->space_prefix_ = add_space_prefix ? SpacePrefix::kEverySegment : SpacePrefix::kNone;
    t->strip_leading_space_ = add_space_prefix;
    t->byte_fallback_ = true;
    add_score_merges(t.get(), vocabulary.scores, vocabulary.mergeable);
    description = "SentencePiece BPE";
  } else {
    std::string pre = "default";
    ZIPMOE_RETURN_IF_ERROR(keys.string("tokenizer.ggml.pre", &pre, &present));
    std::vector<SplitRule> rules;
    ZIPMOE_RETURN_IF_ERROR(split_rules_for_gguf_pre(pre, &rules, &t->ignore_merges_).with_context(origin));
    t->pre_tokenizer_ = PreTokenizer(std::move(rules));
    add_bos = t->ignore_merges_;  // llama.cpp: the Llama 3 family adds BOS by default
    std::vector<std::pair<std::string, std::string>> pairs;
    ZIPMOE_RETURN_IF_ERROR(read_gguf_merges(keys, &pairs));
    std::size_t skipped = 0;
    add_rank_merges(t.get(), pairs, &skipped);
    description = "byte-level BPE, pre-tokenizer " + pre;
  }

  bool add_eos = false;
  ZIPMOE_RETURN_IF_ERROR(keys.boolean("tokenizer.ggml.add_bos_token", &add_bos, &present));
  ZIPMOE_RETURN_IF_ERROR(keys.boolean("tokenizer.ggml.add_eos_token", &add_eos, &present));
  if (add_bos && t->bos_id_ >= 0) t->prefix_ids_.push_back(t->bos_id_);
  if (add_eos && t->eos_id_ >= 0) t->suffix_ids_.push_back(t->eos_id_);
  // Control, unknown and user-defined tokens are matched in text as added tokens.
  for (std::size_t i = 0; i < n; ++i) {
    const TokenAttribute a = attributes[i];
    if (a != TokenAttribute::kControl && a != TokenAttribute::kUserDefined && a != TokenAttribute::kUnknown) continue;
    if (tokens[i].empty()) continue;
    t->added_.push_back(AddedToken{static_cast<std::int32_t>(i), tokens[i], a != TokenAttribute::kUserDefined, false,
                                   false, false});
  }
  finish(t.get(), description + ", " + std::to_string(n) + " tokens (GGUF)");
  *out = std::move(t);
  return Status::Ok();
}

Status Tokenizer::from_container_metadata(const json::Value& record, const std::string& origin,
                                          std::shared_ptr<const Tokenizer>* out) {
  if (!record.is_object()) return Status::Format(origin + ": metadata \"tokenizer\" is not an object");
  const json::Value* tokenizer_json = record.find("tokenizer_json");
  const json::Value* config = record.find("tokenizer_config");
  const json::Value* gguf = record.find("gguf");
  if (config && !config->is_null() && !config->is_object()) {
    return Status::Format(origin + ": metadata tokenizer.tokenizer_config is not an object");
  }
  if (tokenizer_json && tokenizer_json->is_string()) {
    return from_hf_json(tokenizer_json->as_string(), config && config->is_object() ? config : nullptr,
                        origin + " (tokenizer_json)", out);
  }
  if (tokenizer_json && !tokenizer_json->is_null()) {
    return Status::Format(origin + ": metadata tokenizer.tokenizer_json is neither text nor null");
  }
  if (gguf && gguf->is_object()) {
    GgufMetadata metadata;
    for (const auto& [key, value] : gguf->members()) {
      GgufValue converted;
      ZIPMOE_RETURN_IF_ERROR(value_from_json(value, &converted, origin + ": metadata tokenizer.gguf[" + key + "]"));
      metadata.values.emplace(key, std::move(converted));
    }
    return from_gguf_metadata(metadata, origin + " (tokenizer.gguf)", out);
  }
  if (gguf && !gguf->is_null()) return Status::Format(origin + ": metadata tokenizer.gguf is not an object");
  return Status::Unsupported(origin + ": the metadata holds no tokenizer (tokenizer_json and gguf are both null)");
}

}  // namespace zipmoe::text
