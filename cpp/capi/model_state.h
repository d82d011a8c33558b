// The state behind a zipmoe_model handle: the engine's Model, and what the
// Python package adds on top of it today (tokenizer, chat template with its
// special tokens, the set of EOS ids and the generation defaults of
// generation_config.json), read from the container's metadata the same way
// python/zipmoe/model.py reads it. When the C++ Model carries these itself
// (the model/context split), this state shrinks to a reference to it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/json.h"
#include "common/status.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "zipmoe.h"
#include "zipmoe/model.h"
#include "zipmoe/sampler.h"

namespace zipmoe::capi {

struct ModelState {
  // Loads the container (the throwing C++ API; the caller turns exceptions into statuses).
  static std::shared_ptr<ModelState> load(const std::string& path, const ModelOptions& options);

  Model model;
  std::string path;
  std::string architecture;
  std::string isa;
  std::string config_json;

  // The tokenizer, or why there is none (Unsupported / Format).
  std::shared_ptr<const text::Tokenizer> tokenizer;
  Status tokenizer_status;
  const text::Tokenizer& require_tokenizer() const;  // throws the tokenizer's error

  bool has_chat_template = false;
  std::string chat_template_source;
  json::Value special_tokens;  // {"bos_token": "<s>", ...}: what the template sees
  // The compiled template, built on first use (a template that does not
  // parse fails the calls that need it, not the load).
  std::shared_ptr<const text::ChatTemplate> chat_template() const;

  json::Value generation_config;  // an object ({} when the container has none)
  std::vector<std::int32_t> eos_ids;  // ascending

  // The model's default for one sampling setting, as Python's generate()
  // resolves it: generation_config.json as transformers reads it, else
  // llama.cpp's defaults. FormatError when the config's value is invalid.
  enum class Sampling { kTemperature, kTopK, kTopP, kMinP, kRepetitionPenalty };
  double sampling_default(Sampling setting) const;
  // max_new_tokens when the caller gives none, for a prompt of prompt_tokens.
  std::int64_t default_max_new_tokens(std::size_t prompt_tokens) const;

 private:
  explicit ModelState(Model loaded) : model(std::move(loaded)) {}
  void read_metadata(const std::string& metadata_json);
  void find_special_tokens(const json::Value& tokenizer_record);
  void collect_eos_ids();

  mutable std::mutex template_mutex_;
  mutable std::shared_ptr<const text::ChatTemplate> template_;
  mutable Status template_status_;
  mutable bool template_built_ = false;
};

}  // namespace zipmoe::capi
