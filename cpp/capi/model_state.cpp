#include "capi/model_state.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/cpu_features.h"

namespace zipmoe::capi {

namespace {

// Fallback sampling when the model has no generation_config.json: llama.cpp's
// defaults (python/zipmoe/model.py FALLBACK_SAMPLING).
constexpr float kFallbackTemperature = 0.8f;
constexpr int kFallbackTopK = 40;
constexpr float kFallbackTopP = 0.95f;
constexpr float kFallbackMinP = 0.05f;
constexpr std::int64_t kDefaultMaxNewTokens = 256;

// Python's truth value of a JSON value.
bool truthy(const json::Value* value) {
  if (value == nullptr) return false;
  switch (value->type()) {
    case json::Type::kNull:
      return false;
    case json::Type::kBool:
      return value->as_bool();
    case json::Type::kNumber:
      return value->as_number() != 0.0;
    case json::Type::kString:
      return !value->as_string().empty();
    case json::Type::kArray:
      return !value->items().empty();
    case json::Type::kObject:
      return !value->members().empty();
  }
  return false;
}

// A generation_config number (an int or a float, not a bool): FormatError otherwise.
double config_number(const json::Value& value, const std::string& name, const std::string& path,
                     const char* flag) {
  if (!value.is_number() || !std::isfinite(value.as_number())) {
    throw FormatError(path + ": the model's generation_config.json is invalid: " + name +
                      " must be a finite number, not " + json::serialize(value) + "; set " + name +
                      " in zipmoe_sampling_params (" + flag + " on the command line) to override it");
  }
  return value.as_number();
}

[[noreturn]] void invalid_default(const std::string& path, const std::string& name, const std::string& rule,
                                  const json::Value& value, const char* flag) {
  throw FormatError(path + ": the model's generation_config.json is invalid: " + name + " must be " + rule +
                    ", not " + json::serialize(value) + "; set " + name + " in zipmoe_sampling_params (" + flag +
                    " on the command line) to override it");
}

}  // namespace

std::shared_ptr<ModelState> ModelState::load(const std::string& path, const ModelOptions& options) {
  std::shared_ptr<ModelState> state(new ModelState(Model::load(path, options)));
  state->path = path;
  const ModelInfo& info = state->model.info();
  state->architecture = info.architecture;
  state->config_json = info.config_json;
  state->isa = isa_name(state->model.isa());
  state->read_metadata(state->model.metadata_json());
  return state;
}

void ModelState::read_metadata(const std::string& metadata_json) {
  json::ParseOptions parse_options;
  parse_options.keep_top_level = {"tokenizer", "chat_template", "generation_config"};
  json::Value metadata;
  throw_if_error(json::parse(metadata_json, &metadata, parse_options).with_context(path + ": metadata"));
  if (!metadata.is_object()) throw FormatError(path + ": the metadata is not a JSON object");

  const json::Value* record = metadata.find("tokenizer");
  if (record && record->is_object()) {
    tokenizer_status = text::Tokenizer::from_container_metadata(*record, path + ": metadata", &tokenizer);
  } else {
    tokenizer_status = Status::Unsupported(path + ": the container carries no tokenizer (convert the model from a "
                                                  "folder with tokenizer.json, or from a GGUF file)");
  }

  const json::Value* source = metadata.find("chat_template");
  if (source && source->is_string() && !source->as_string().empty()) {
    has_chat_template = true;
    chat_template_source = source->as_string();
  }
  find_special_tokens(record ? *record : json::Value());

  const json::Value* generation = metadata.find("generation_config");
  generation_config = generation && generation->is_object() ? *generation : json::Value::object({});
  collect_eos_ids();
}

// As python/zipmoe/model.py's chat_template: the named tokens of tokenizer_config
// (a string, or a record with "content"), else the vocabulary's BOS/EOS/UNK/PAD.
void ModelState::find_special_tokens(const json::Value& tokenizer_record) {
  std::vector<json::Value::Member> found;
  const json::Value* config = tokenizer_record.is_object() ? tokenizer_record.find("tokenizer_config") : nullptr;
  if (config && config->is_object()) {
    for (const char* name : text::kSpecialTokenNames) {
      const json::Value* value = config->find(name);
      if (value && value->is_object()) value = value->find("content");
      if (value && value->is_string()) found.emplace_back(name, *value);
    }
  }
  if (found.empty() && tokenizer) {
    const std::pair<const char*, std::int32_t> ids[] = {{"bos_token", tokenizer->bos_id()},
                                                       {"eos_token", tokenizer->eos_id()},
                                                       {"unk_token", tokenizer->unk_id()},
                                                       {"pad_token", tokenizer->pad_id()}};
    for (const auto& [name, id] : ids) {
      if (id >= 0 && id < tokenizer->vocab_size()) {
        found.emplace_back(name, json::Value::string(std::string(tokenizer->id_to_token(id))));
      }
    }
  }
  special_tokens = json::Value::object(std::move(found));
}

// As python/zipmoe/model.py's eos_token_ids.
void ModelState::collect_eos_ids() {
  const std::int64_t vocab = static_cast<std::int64_t>(model.info().vocab_size);
  json::Value config;
  if (!json::parse(config_json, &config).ok()) config = json::Value::object({});
  for (const json::Value* source : {generation_config.find("eos_token_id"),
                                    config.is_object() ? config.find("eos_token_id") : nullptr}) {
    if (source == nullptr) continue;
    std::vector<json::Value> values = source->is_array() ? source->items() : std::vector<json::Value>{*source};
    for (const json::Value& value : values) {
      if (value.is_integer() && value.as_int() >= 0 && value.as_int() < vocab) {
        eos_ids.push_back(static_cast<std::int32_t>(value.as_int()));
      }
    }
  }
  if (tokenizer && tokenizer->eos_id() >= 0 && tokenizer->eos_id() < vocab) eos_ids.push_back(tokenizer->eos_id());
  std::sort(eos_ids.begin(), eos_ids.end());
  eos_ids.erase(std::unique(eos_ids.begin(), eos_ids.end()), eos_ids.end());
}

const text::Tokenizer& ModelState::require_tokenizer() const {
  if (!tokenizer) throw_if_error(tokenizer_status);
  if (!tokenizer) throw UnsupportedModelError(path + ": the container carries no tokenizer");
  return *tokenizer;
}

std::shared_ptr<const text::ChatTemplate> ModelState::chat_template() const {
  if (!has_chat_template) {
    throw UnsupportedModelError(path + ": the model has no chat template; give a text prompt instead of messages");
  }
  std::lock_guard<std::mutex> lock(template_mutex_);
  if (!template_built_) {
    template_status_ = text::ChatTemplate::create(chat_template_source, special_tokens, &template_);
    template_built_ = true;
  }
  throw_if_error(template_status_.with_context(path));
  return template_;
}

// As python/zipmoe/model.py's _sampling_options.
double ModelState::sampling_default(Sampling setting) const {
  if (generation_config.members().empty()) {
    switch (setting) {
      case Sampling::kTemperature:
        return kFallbackTemperature;
      case Sampling::kTopK:
        return kFallbackTopK;
      case Sampling::kTopP:
        return kFallbackTopP;
      case Sampling::kMinP:
        return kFallbackMinP;
      case Sampling::kRepetitionPenalty:
        return 1.0;
    }
  }
  auto given = [&](const char* name) -> const json::Value* {
    const json::Value* value = generation_config.find(name);
    return value && !value->is_null() ? value : nullptr;
  };
  switch (setting) {
    case Sampling::kTemperature: {
      // do_sample false or absent: greedy, whatever the temperature says
      if (!truthy(generation_config.find("do_sample"))) return 0.0;
      const json::Value* v = given("temperature");
      if (!v) return 1.0;
      const double t = config_number(*v, "temperature", path, "--temperature");
      if (!(t >= 0)) invalid_default(path, "temperature", ">= 0 (0: greedy)", *v, "--temperature");
      return t;
    }
    case Sampling::kTopK: {
      const json::Value* v = given("top_k");
      if (!v) return 50;
      if (!v->is_integer() || v->as_int() < 0 || v->as_int() > std::numeric_limits<std::int32_t>::max()) {
        invalid_default(path, "top_k", "an integer in [0, 2147483647]", *v, "--top-k");
      }
      return static_cast<double>(v->as_int());
    }
    case Sampling::kTopP: {
      const json::Value* v = given("top_p");
      if (!v) return 1.0;
      const double p = config_number(*v, "top_p", path, "--top-p");
      if (!(p > 0 && p <= 1)) invalid_default(path, "top_p", "in (0, 1] (1: off)", *v, "--top-p");
      return p;
    }
    case Sampling::kMinP: {
      const json::Value* v = given("min_p");
      if (!v) return 0.0;
      const double p = config_number(*v, "min_p", path, "--min-p");
      if (!(p >= 0 && p <= 1)) invalid_default(path, "min_p", "in [0, 1] (0: off)", *v, "--min-p");
      return p;
    }
    case Sampling::kRepetitionPenalty: {
      const json::Value* v = given("repetition_penalty");
      if (!v) return 1.0;
      const double r = config_number(*v, "repetition_penalty", path, "--repeat-penalty");
      if (!(r > 0)) invalid_default(path, "repetition_penalty", "> 0 (1: off)", *v, "--repeat-penalty");
      return r;
    }
  }
  return 0.0;
}

std::int64_t ModelState::default_max_new_tokens(std::size_t prompt_tokens) const {
  const json::Value* value = generation_config.find("max_new_tokens");
  if (value && value->is_integer() && value->as_int() >= 0) return value->as_int();
  value = generation_config.find("max_length");
  if (value && value->is_integer() && value->as_int() > 20) {
    // transformers' max_length counts the prompt; its default (20) is too short to mean anything here
    return std::max<std::int64_t>(0, value->as_int() - static_cast<std::int64_t>(prompt_tokens));
  }
  return kDefaultMaxNewTokens;
}

}  // namespace zipmoe::capi
