// Tokenizers from Hugging Face tokenizer.json (+ tokenizer_config.json).
//
// Supported: model BPE (byte-level or with byte_fallback); normalizers NFC,
// Prepend("▁"), Replace(" " -> "▁") and Sequences of them; pre-tokenizers
// ByteLevel, Split(Regex, Isolated) with a recognized pattern, Digits,
// Metaspace and Sequences of them; post-processors TemplateProcessing,
// ByteLevel, Bert/RobertaProcessing and Sequences of them. Anything else is
// Status::Unsupported naming it.
#include <algorithm>

#include "text/tokenizer_builder.h"
#include "text/unicode.h"

namespace zipmoe::text {

namespace {

constexpr std::int64_t kMaxTokenId = 1 << 24;
constexpr char kMetaspace[] = "\xE2\x96\x81";

std::string type_of(const json::Value& node) {
  const json::Value* type = node.find("type");
  return type && type->is_string() ? type->as_string() : std::string();
}

bool bool_member(const json::Value& node, const char* key, bool fallback) {
  const json::Value* v = node.find(key);
  return v && v->is_bool() ? v->as_bool() : fallback;
}

struct TextSettings {
  bool byte_level = false;
  bool byte_level_prefix_space = false;
  bool nfc = false;
  bool replace_spaces = false;
  TokenizerBuilder::SpacePrefix space_prefix = TokenizerBuilder::SpacePrefix::kNone;
  std::vector<SplitRule> rules;
};

Status read_normalizer(const json::Value& node, TextSettings* settings, const std::string& origin) {
  if (node.is_null()) return Status::Ok();
  const std::string type = type_of(node);
  if (type == "Sequence") {
    const json::Value* items = node.find("normalizers");
    if (!items || !items->is_array()) return Status::Format(origin + ": normalizer Sequence without a list");
    for (const json::Value& item : items->items()) ZIPMOE_RETURN_IF_ERROR(read_normalizer(item, settings, origin));
    return Status::Ok();
  }
  if (type == "NFC") {
    settings->nfc = true;
    return Status::Ok();
  }
  if (type == "Prepend") {
    const json::Value* prepend = node.find("prepend");
    if (prepend && prepend->is_string() && prepend->as_string() == kMetaspace) {
      settings->space_prefix = TokenizerBuilder::SpacePrefix::kEverySegment;
      return Status::Ok();
    }
  }
  if (type == "Replace") {
    const json::Value* pattern = node.find("pattern");
    const json::Value* content = node.find("content");
    const json::Value* literal = pattern && pattern->is_object() ? pattern->find("String") : nullptr;
    if (literal && literal->is_string() && literal->as_string() == " " && content && content->is_string() &&
        content->as_string() == kMetaspace) {
      settings->replace_spaces = true;
      return Status::Ok();
    }
  }
  return Status::Unsupported(origin + ": unsupported normalizer " + (type.empty() ? json::serialize(node) : type) +
                             " (zipmoe supports NFC, Prepend(\"\u2581\"), Replace(\" \", \"\u2581\"))");
}

Status read_pre_tokenizer(const json::Value& node, TextSettings* settings, const std::string& origin) {
  if (node.is_null()) return Status::Ok();
  const std::string type = type_of(node);
  if (type == "Sequence") {
    const json::Value* items = node.find("pretokenizers");
    if (!items || !items->is_array()) return Status::Format(origin + ": pre-tokenizer Sequence without a list");
    for (const json::Value& item : items->items()) ZIPMOE_RETURN_IF_ERROR(read_pre_tokenizer(item, settings, origin));
    return Status::Ok();
  }
  if (type == "ByteLevel") {
    settings->byte_level = true;
    settings->byte_level_prefix_space = bool_member(node, "add_prefix_space", false);
    if (bool_member(node, "use_regex", true)) settings->rules.push_back(SplitRule::kGpt2);
    return Status::Ok();
  }
  if (type == "Split") {
    const json::Value* pattern = node.find("pattern");
    const json::Value* regex = pattern && pattern->is_object() ? pattern->find("Regex") : nullptr;
    const json::Value* behavior = node.find("behavior");
    const std::string behavior_name = behavior && behavior->is_string() ? behavior->as_string() : "";
    if (!regex || !regex->is_string()) {
      return Status::Unsupported(origin + ": unsupported Split pre-tokenizer pattern " +
                                 (pattern ? json::serialize(*pattern).substr(0, 200) : "(none)") +
                                 " (zipmoe supports known Regex patterns)");
    }
    if (behavior_name != "Isolated" || bool_member(node, "invert", false)) {
      return Status::Unsupported(origin + ": unsupported Split pre-tokenizer behavior \"" + behavior_name +
                                 "\"" + (bool_member(node, "invert", false) ? " with invert" : "") +
                                 " (zipmoe supports Isolated)");
    }
    std::vector<SplitRule> rules;
    ZIPMOE_RETURN_IF_ERROR(split_rules_for_pattern(regex->as_string(), &rules).with_context(origin));
    settings->rules.insert(settings->rules.end(), rules.begin(), rules.end());
    return Status::Ok();
  }
  if (type == "Digits") {
    settings->rules.push_back(bool_member(node, "individual_digits", false) ? SplitRule::kNumber
                                                                            : SplitRule::kNumbers);
    return Status::Ok();
  }
  if (type == "Metaspace") {
    const json::Value* replacement = node.find("replacement");
    if (replacement && (!replacement->is_string() || replacement->as_string() != kMetaspace)) {
      return Status::Unsupported(origin + ": Metaspace with a replacement other than U+2581");
    }
    settings->replace_spaces = true;
    std::string scheme = "always";
    const json::Value* prepend = node.find("prepend_scheme");
    if (prepend && prepend->is_string()) {
      scheme = prepend->as_string();
    } else if (!bool_member(node, "add_prefix_space", true)) {
      scheme = "never";
    }
    if (scheme == "always") {
      settings->space_prefix = TokenizerBuilder::SpacePrefix::kEverySegmentIfAbsent;
    } else if (scheme == "first") {
      settings->space_prefix = TokenizerBuilder::SpacePrefix::kFirstSegmentIfAbsent;
    } else if (scheme == "never") {
      settings->space_prefix = TokenizerBuilder::SpacePrefix::kNone;
    } else {
      return Status::Unsupported(origin + ": Metaspace prepend_scheme \"" + scheme + "\"");
    }
    if (bool_member(node, "split", true)) settings->rules.push_back(SplitRule::kMetaspaceWords);
    return Status::Ok();
  }
  return Status::Unsupported(origin + ": unsupported pre-tokenizer " + (type.empty() ? json::serialize(node) : type) +
                             " (zipmoe supports ByteLevel, Split, Digits, Metaspace and Sequences of them)");
}

// Whether the decoder drops the leading space of decoded text (SentencePiece's dummy prefix).
bool decoder_strips_leading_space(const json::Value& node) {
  const std::string type = type_of(node);
  if (type == "Sequence") {
    const json::Value* items = node.find("decoders");
    if (!items || !items->is_array()) return false;
    for (const json::Value& item : items->items()) {
      if (decoder_strips_leading_space(item)) return true;
    }
    return false;
  }
  if (type == "Strip") {
    const json::Value* content = node.find("content");
    const json::Value* start = node.find("start");
    return content && content->is_string() && content->as_string() == " " && start && start->as_int() >= 1;
  }
  if (type == "Metaspace") {
    const json::Value* prepend = node.find("prepend_scheme");
    if (prepend && prepend->is_string()) return prepend->as_string() != "never";
    return bool_member(node, "add_prefix_space", true);
  }
  return false;
}

// The ids a post-processor puts before and after a single sequence.
Status read_post_processor(const json::Value& node, std::vector<std::int32_t>* prefix,
                           std::vector<std::int32_t>* suffix, std::int32_t vocab_size, const std::string& origin) {
  if (node.is_null()) return Status::Ok();
  const std::string type = type_of(node);
  auto valid = [&](std::int64_t id) { return id >= 0 && id < vocab_size; };
  if (type == "Sequence") {
    const json::Value* items = node.find("processors");
    if (!items || !items->is_array()) return Status::Format(origin + ": post-processor Sequence without a list");
    for (const json::Value& item : items->items()) {
      ZIPMOE_RETURN_IF_ERROR(read_post_processor(item, prefix, suffix, vocab_size, origin));
    }
    return Status::Ok();
  }
  if (type == "TemplateProcessing") {
    const json::Value* single = node.find("single");
    const json::Value* specials = node.find("special_tokens");
    if (!single || !single->is_array()) return Status::Format(origin + ": TemplateProcessing without \"single\"");
    bool after_sequence = false;
    for (const json::Value& item : single->items()) {
      if (item.find("Sequence")) {
        after_sequence = true;
        continue;
      }
      const json::Value* special = item.find("SpecialToken");
      const json::Value* name = special ? special->find("id") : nullptr;
      if (!name || !name->is_string()) return Status::Format(origin + ": malformed TemplateProcessing item");
      const json::Value* entry = specials && specials->is_object() ? specials->find(name->as_string()) : nullptr;
      const json::Value* ids = entry ? entry->find("ids") : nullptr;
      if (!ids || !ids->is_array()) {
        return Status::Format(origin + ": TemplateProcessing special token \"" + name->as_string() + "\" has no ids");
      }
      for (const json::Value& id : ids->items()) {
        if (!id.is_integer() || !valid(id.as_int())) {
          return Status::Format(origin + ": TemplateProcessing special token \"" + name->as_string() +
                                "\" has an id outside the vocabulary");
        }
        (after_sequence ? suffix : prefix)->push_back(static_cast<std::int32_t>(id.as_int()));
      }
    }
    return Status::Ok();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    const json::Value* cls = node.find("cls");
    const json::Value* sep = node.find("sep");
    auto id_of = [&](const json::Value* pair, std::vector<std::int32_t>* where) -> Status {
      if (!pair || !pair->is_array() || pair->items().size() != 2 || !pair->items()[1].is_integer() ||
          !valid(pair->items()[1].as_int())) {
        return Status::Format(origin + ": malformed " + type);
      }
      where->push_back(static_cast<std::int32_t>(pair->items()[1].as_int()));
      return Status::Ok();
    };
    ZIPMOE_RETURN_IF_ERROR(id_of(cls, prefix));
    return id_of(sep, suffix);
  }
  // ByteLevel (offsets only) and anything else add no tokens.
  return Status::Ok();
}

// The token named by a tokenizer_config entry ("<s>" or {"content": "<s>", ...}).
const std::string* config_token(const json::Value* config, const char* key) {
  if (!config) return nullptr;
  const json::Value* v = config->find(key);
  if (!v) return nullptr;
  if (v->is_string()) return &v->as_string();
  if (v->is_object()) {
    const json::Value* content = v->find("content");
    if (content && content->is_string()) return &content->as_string();
  }
  return nullptr;
}

// The model must be a BPE that zipmoe implements as Hugging Face tokenizers does.
Status check_bpe_model(const json::Value& model, const std::string& origin) {
  std::string model_type = type_of(model);
  if (model_type.empty() && model.find("merges")) model_type = "BPE";
  if (model_type != "BPE") {
    return Status::Unsupported(origin + ": tokenizer.json model type \"" + model_type +
                               "\" is not supported (zipmoe implements BPE)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json::Value* v = model.find(key);
    if (v && v->is_string() && !v->as_string().empty()) {
      return Status::Unsupported(origin + ": BPE with a " + key + " is not supported");
    }
  }
  const json::Value* dropout = model.find("dropout");
  if (dropout && dropout->is_number() && dropout->as_number() > 0.0) {
    return Status::Unsupported(origin + ": BPE dropout is not supported (it makes encoding random)");
  }
  return Status::Ok();
}

// The vocabulary by id: the model's vocab, then the added tokens (which may reuse model ids).
struct JsonVocabulary {
  std::vector<std::string> tokens;
  std::vector<TokenAttribute> attributes;
  std::vector<bool> mergeable;
  std::vector<TokenizerBuilder::AddedToken> added;
  std::string unk_token;
  bool byte_fallback = false;
};

// The highest id of the model's vocab and the added tokens, each checked (-1 when empty).
Status highest_token_id(const json::Value& vocab, const json::Value* added_list, const std::string& origin,
                        std::int64_t* max_id) {
  *max_id = -1;
  for (const auto& [token, id] : vocab.members()) {
    if (!id.is_integer() || id.as_int() < 0 || id.as_int() >= kMaxTokenId) {
      return Status::Format(origin + ": model.vocab gives \"" + token.substr(0, 64) + "\" an invalid id");
    }
    *max_id = std::max(*max_id, id.as_int());
  }
  std::size_t added_count = 0;
  if (added_list && added_list->is_array()) {
    for (const json::Value& item : added_list->items()) {
      const json::Value* id = item.find("id");
      const json::Value* content = item.find("content");
      if (!id || !id->is_integer() || id->as_int() < 0 || id->as_int() >= kMaxTokenId || !content ||
          !content->is_string()) {
        return Status::Format(origin + ": malformed added_tokens entry " + json::serialize(item).substr(0, 200));
      }
      *max_id = std::max(*max_id, id->as_int());
      ++added_count;
    }
  }
  const std::size_t listed = vocab.members().size() + added_count;
  if (*max_id < 0) return Status::Format(origin + ": the vocabulary is empty");
  if (static_cast<std::size_t>(*max_id) > 2 * listed + 1024) {
    return Status::Format(origin + ": token id " + std::to_string(*max_id) + " is far beyond the " +
                          std::to_string(listed) + " tokens listed");
  }
  return Status::Ok();
}

Status read_vocabulary(const json::Value& root, const json::Value& model, const std::string& origin,
                       JsonVocabulary* out) {
  const json::Value* vocab = model.find("vocab");
  if (!vocab || !vocab->is_object()) return Status::Format(origin + ": model.vocab is not an object");
  const json::Value* added_list = root.find("added_tokens");
  if (added_list && !added_list->is_null() && !added_list->is_array()) {
    return Status::Format(origin + ": added_tokens is not a list");
  }
  std::int64_t max_id = -1;
  ZIPMOE_RETURN_IF_ERROR(highest_token_id(*vocab, added_list, origin, &max_id));
  const std::size_t n = static_cast<std::size_t>(max_id) + 1;
  out->tokens.assign(n, std::string());
  out->attributes.assign(n, TokenAttribute::kUnused);
  out->mergeable.assign(n, false);
  std::vector<bool> filled(n, false);
  out->byte_fallback = bool_member(model, "byte_fallback", false);
  for (const auto& [token, id_value] : vocab->members()) {
    const auto id = static_cast<std::size_t>(id_value.as_int());
    if (filled[id]) return Status::Format(origin + ": model.vocab gives id " + std::to_string(id) + " twice");
    filled[id] = true;
    out->tokens[id] = token;
    const bool is_byte = out->byte_fallback && byte_token_value(token) >= 0;
    out->attributes[id] = is_byte ? TokenAttribute::kByte : TokenAttribute::kNormal;
    out->mergeable[id] = !is_byte;
  }
  if (const json::Value* unk = model.find("unk_token"); unk && unk->is_string()) out->unk_token = unk->as_string();
  if (!added_list || !added_list->is_array()) return Status::Ok();
  for (const json::Value& item : added_list->items()) {
    const auto id = static_cast<std::size_t>(item.find("id")->as_int());
    const std::string& content = item.find("content")->as_string();
    const bool special = bool_member(item, "special", false);
    out->tokens[id] = content;
    out->attributes[id] = special ? (content == out->unk_token ? TokenAttribute::kUnknown : TokenAttribute::kControl)
                                  : TokenAttribute::kUserDefined;
    out->mergeable[id] = false;
    out->added.push_back(TokenizerBuilder::AddedToken{static_cast<std::int32_t>(id), content, special,
                                                      bool_member(item, "lstrip", false),
                                                      bool_member(item, "rstrip", false),
                                                      bool_member(item, "single_word", false)});
  }
  return Status::Ok();
}

// Merges: "left right" strings (older files) or [left, right] pairs.
Status read_merges(const json::Value& model, const std::string& origin,
                   std::vector<std::pair<std::string, std::string>>* pairs) {
  const json::Value* merges = model.find("merges");
  if (merges && !merges->is_null() && !merges->is_array()) {
    return Status::Format(origin + ": model.merges is not a list");
  }
  if (!merges || !merges->is_array()) return Status::Ok();
  pairs->reserve(merges->items().size());
  for (const json::Value& merge : merges->items()) {
    if (merge.is_string()) {
      const std::string& s = merge.as_string();
      const std::size_t space = s.find(' ', 1);
      if (space == std::string::npos) {
        return Status::Format(origin + ": merge \"" + s.substr(0, 64) + "\" is not \"left right\"");
      }
      pairs->emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (merge.is_array() && merge.items().size() == 2 && merge.items()[0].is_string() &&
               merge.items()[1].is_string()) {
      pairs->emplace_back(merge.items()[0].as_string(), merge.items()[1].as_string());
    } else {
      return Status::Format(origin + ": malformed merge " + json::serialize(merge).substr(0, 100));
    }
  }
  return Status::Ok();
}

// Normalizer, pre-tokenizer and decoder.
Status read_text_settings(const json::Value& root, const std::string& origin, TextSettings* settings) {
  const json::Value* normalizer = root.find("normalizer");
  const json::Value* pre_tokenizer = root.find("pre_tokenizer");
  const json::Value* decoder = root.find("decoder");
  if (normalizer) ZIPMOE_RETURN_IF_ERROR(read_normalizer(*normalizer, settings, origin));
  if (pre_tokenizer) ZIPMOE_RETURN_IF_ERROR(read_pre_tokenizer(*pre_tokenizer, settings, origin));
  if (decoder && type_of(*decoder) == "ByteLevel") settings->byte_level = true;
  return Status::Ok();
}

// e.g. "byte-level BPE, pre-tokenizer qwen2, NFC, 151936 tokens (tokenizer.json)"
std::string json_description(const TextSettings& settings, bool byte_fallback, const PreTokenizer& pre_tokenizer,
                             std::size_t tokens) {
  std::string description = settings.byte_level ? "byte-level BPE" : "BPE";
  if (!settings.byte_level && byte_fallback) description += " with byte fallback";
  if (!pre_tokenizer.empty()) {
    description += ", pre-tokenizer";
    for (SplitRule rule : pre_tokenizer.rules()) description += std::string(" ") + split_rule_name(rule);
  }
  if (settings.nfc) description += ", NFC";
  return description + ", " + std::to_string(tokens) + " tokens (tokenizer.json)";
}

}  // namespace

Status TokenizerBuilder::from_json(std::string_view text, const json::Value* config, const std::string& origin,
                                   std::shared_ptr<const Tokenizer>* out) {
  json::Value root;
  ZIPMOE_RETURN_IF_ERROR(json::parse(text, &root).with_context(origin));
  if (!root.is_object()) return Status::Format(origin + ": tokenizer.json is not a JSON object");
  if (config && !config->is_object()) config = nullptr;
  const json::Value* model = root.find("model");
  if (!model || !model->is_object()) return Status::Format(origin + ": tokenizer.json has no \"model\" object");
  ZIPMOE_RETURN_IF_ERROR(check_bpe_model(*model, origin));
  JsonVocabulary vocabulary;
  ZIPMOE_RETURN_IF_ERROR(read_vocabulary(root, *model, origin, &vocabulary));
  const std::size_t n = vocabulary.tokens.size();
  std::shared_ptr<Tokenizer> t = create();
  t->added_ = std::move(vocabulary.added);
  set_vocabulary(t.get(), vocabulary.tokens, std::move(vocabulary.attributes), std::move(vocabulary.mergeable));

  TextSettings settings;
  ZIPMOE_RETURN_IF_ERROR(read_text_settings(root, origin, &settings));
  const json::Value* decoder = root.find("decoder");
  t->model_ = settings.byte_level ? Model::kByteLevel : Model::kCharacter;
  t->nfc_ = settings.nfc;
  t->replace_spaces_ = settings.replace_spaces && !settings.byte_level;
  t->space_prefix_ = settings.byte_level ? SpacePrefix::kNone : settings.space_prefix;
  t->byte_level_prefix_space_ = settings.byte_level_prefix_space;
  t->pre_tokenizer_ = PreTokenizer(std::move(settings.rules));
  t->ignore_merges_ = bool_member(*model, "ignore_merges", false);
  t->byte_fallback_ = vocabulary.byte_fallback;
  t->fuse_unk_ = bool_member(*model, "fuse_unk", false);
  t->strip_leading_space_ = !settings.byte_level && decoder && decoder_strips_leading_space(*decoder);
  if (!vocabulary.unk_token.empty()) t->unk_id_ = t->vocab_.find(vocabulary.unk_token);

  std::vector<std::pair<std::string, std::string>> pairs;
  ZIPMOE_RETURN_IF_ERROR(read_merges(*model, origin, &pairs));
  std::size_t skipped = 0;
  add_rank_merges(t.get(), pairs, &skipped);
  if (const json::Value* post = root.find("post_processor")) {
    ZIPMOE_RETURN_IF_ERROR(read_post_processor(*post, &t->prefix_ids_, &t->suffix_ids_, t->vocab_size(), origin));
  }
  apply_tokenizer_config(t.get(), config);
  finish(t.get(), json_description(settings, vocabulary.byte_fallback, t->pre_tokenizer_, n));
  *out = std::move(t);
  return Status::Ok();
}

// BOS/EOS names and add_bos/add_eos from tokenizer_config, as transformers applies them.
void TokenizerBuilder::apply_tokenizer_config(Tokenizer* t, const json::Value* config) {
  auto id_of_config = [&](const char* key) {
    const std::string* name = config_token(config, key);
    return name ? t->vocab_.find(*name) : -1;
  };
  t->bos_id_ = id_of_config("bos_token");
  t->eos_id_ = id_of_config("eos_token");
  t->pad_id_ = id_of_config("pad_token");
  if (const std::int32_t unk = id_of_config("unk_token"); unk >= 0) t->unk_id_ = unk;
  if (t->bos_id_ < 0 && t->prefix_ids_.size() == 1) t->bos_id_ = t->prefix_ids_[0];
  if (t->eos_id_ < 0 && t->suffix_ids_.size() == 1) t->eos_id_ = t->suffix_ids_[0];
  if (!config) return;
  const json::Value* add_bos = config->find("add_bos_token");
  if (add_bos && add_bos->is_bool() && t->bos_id_ >= 0) {
    const bool has = !t->prefix_ids_.empty() && t->prefix_ids_.front() == t->bos_id_;
    if (add_bos->as_bool() && !has) t->prefix_ids_.insert(t->prefix_ids_.begin(), t->bos_id_);
    if (!add_bos->as_bool() && has) t->prefix_ids_.erase(t->prefix_ids_.begin());
  }
  const json::Value* add_eos = config->find("add_eos_token");
  if (add_eos && add_eos->is_bool() && t->eos_id_ >= 0) {
    const bool has = !t->suffix_ids_.empty() && t->suffix_ids_.back() == t->eos_id_;
    if (add_eos->as_bool() && !has) t->suffix_ids_.push_back(t->eos_id_);
    if (!add_eos->as_bool() && has) t->suffix_ids_.pop_back();
  }
}

}  // namespace zipmoe::text
