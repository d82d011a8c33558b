#include "model/config.h"

#include <cmath>
#include <limits>
#include <string>

namespace zipmoe::model {

namespace {

// Bounds that no real model comes near; they keep a corrupt config from sizing
// absurd allocations before the tensor shapes are checked.
constexpr std::int64_t kMaxVocab = std::int64_t(1) << 24;
constexpr std::int64_t kMaxWidth = std::int64_t(1) << 20;  // hidden, intermediate, ranks
constexpr std::int64_t kMaxLayers = 4096;
constexpr std::int64_t kMaxHeads = 4096;
constexpr std::int64_t kMaxExperts = 1 << 16;
constexpr std::int64_t kMaxPositions = std::int64_t(1) << 26;

// Typed, range-checked access to the members of the `config` object. Every
// error names the key.
class ConfigReader {
 public:
  ConfigReader(const json::Value& object, std::string where) : object_(object), where_(std::move(where)) {}

  const json::Value* get(const char* key) const {
    const json::Value* v = object_.find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  bool has(const char* key) const { return get(key) != nullptr; }
  // Present with the value null (which some configs use for "none").
  bool is_null(const char* key) const {
    const json::Value* v = object_.find(key);
    return v && v->is_null();
  }

  Status bad(const char* key, const std::string& what) const {
    return Status::Format(where_ + ": " + key + " " + what);
  }

  Status integer(const char* key, std::int64_t lo, std::int64_t hi, std::size_t* out) const {
    const json::Value* v = get(key);
    if (!v) return bad(key, "is missing");
    return integer_value(key, *v, lo, hi, out);
  }
  Status integer_or(const char* key, std::int64_t fallback, std::int64_t lo, std::int64_t hi,
                    std::size_t* out) const {
    const json::Value* v = get(key);
    if (!v) {
      *out = static_cast<std::size_t>(fallback);
      return Status::Ok();
    }
    return integer_value(key, *v, lo, hi, out);
  }
  Status integer_value(const char* key, const json::Value& v, std::int64_t lo, std::int64_t hi,
                       std::size_t* out) const {
    // Some configs write integers as floats (2.0): accept exact integral values.
    std::int64_t value = 0;
    if (v.is_integer()) {
      value = v.as_int();
    } else if (v.is_number() && std::floor(v.as_number()) == v.as_number() && std::fabs(v.as_number()) < 9e15) {
      value = static_cast<std::int64_t>(v.as_number());
    } else {
      return bad(key, std::string("must be an integer, not a ") + json::type_name(v.type()));
    }
    if (value < lo || value > hi) {
      return bad(key, "is " + std::to_string(value) + ", outside [" + std::to_string(lo) + ", " + std::to_string(hi) +
                          "]");
    }
    *out = static_cast<std::size_t>(value);
    return Status::Ok();
  }

  Status number_or(const char* key, double fallback, double* out) const {
    const json::Value* v = get(key);
    if (!v) {
      *out = fallback;
      return Status::Ok();
    }
    if (!v->is_number()) return bad(key, std::string("must be a number, not a ") + json::type_name(v->type()));
    *out = v->as_number();
    return Status::Ok();
  }
  Status positive_or(const char* key, double fallback, double* out) const {
    ZIPMOE_RETURN_IF_ERROR(number_or(key, fallback, out));
    if (!(*out > 0) || !std::isfinite(*out)) return bad(key, "must be a positive number");
    return Status::Ok();
  }
  Status boolean_or(const char* key, bool fallback, bool* out) const {
    const json::Value* v = get(key);
    if (!v) {
      *out = fallback;
      return Status::Ok();
    }
    if (!v->is_bool()) return bad(key, std::string("must be true or false, not a ") + json::type_name(v->type()));
    *out = v->as_bool();
    return Status::Ok();
  }
  Status string_or(const char* key, const std::string& fallback, std::string* out) const {
    const json::Value* v = get(key);
    if (!v) {
      *out = fallback;
      return Status::Ok();
    }
    if (!v->is_string()) return bad(key, std::string("must be a string, not a ") + json::type_name(v->type()));
    *out = v->as_string();
    return Status::Ok();
  }
  // An integer, or a list of one integer per layer that must all be equal
  // (Hunyuan writes moe_topk and friends per layer).
  Status uniform_integer_or(const char* key, std::int64_t fallback, std::int64_t lo, std::int64_t hi,
                            std::size_t* out) const {
    const json::Value* v = get(key);
    if (!v || !v->is_array()) return integer_or(key, fallback, lo, hi, out);
    if (v->items().empty()) return bad(key, "must not be an empty list");
    std::size_t first = 0;
    for (std::size_t i = 0; i < v->items().size(); ++i) {
      std::size_t value = 0;
      ZIPMOE_RETURN_IF_ERROR(integer_value(key, v->items()[i], lo, hi, &value));
      if (i == 0) first = value;
      if (value != first) {
        return Status::Unsupported(where_ + ": " + key + " varies per layer, which the engine does not support");
      }
    }
    *out = first;
    return Status::Ok();
  }
  // The first of `keys` present.
  const char* first_present(std::initializer_list<const char*> keys) const {
    for (const char* k : keys) {
      if (has(k)) return k;
    }
    return nullptr;
  }

  const std::string& where() const { return where_; }

 private:
  const json::Value& object_;
  std::string where_;
};

const json::Value& empty_object() {
  static const json::Value kEmpty = json::Value::object({});
  return kEmpty;
}

// The reader of a nested config object (DBRX's attn_config, ffn_config); an
// empty one when absent.
ConfigReader sub_config(const ConfigReader& c, const char* key) {
  const json::Value* v = c.get(key);
  return ConfigReader(v && v->is_object() ? *v : empty_object(), c.where() + ": " + key);
}

Status read_factor_list(const ConfigReader& rope, const char* key, std::size_t count, std::vector<float>* out) {
  const json::Value* v = rope.get(key);
  if (!v) return rope.bad(key, "is missing (longrope needs it)");
  if (!v->is_array() || v->items().size() != count) {
    return rope.bad(key, "must be a list of " + std::to_string(count) + " numbers (rotary dimensions / 2)");
  }
  out->clear();
  for (const json::Value& item : v->items()) {
    if (!item.is_number() || !(item.as_number() > 0)) return rope.bad(key, "must hold positive numbers");
    out->push_back(static_cast<float>(item.as_number()));
  }
  return Status::Ok();
}

// RoPE: theta, scaling type and its parameters, from rope_parameters (transformers
// 5) or rope_theta + rope_scaling (older configs and GGUF-synthesized ones).
// transformers' defaults where a config names no RoPE base or rotary fraction.
struct RopeDefaults {
  double theta = 10000.0;
  double partial_rotary_factor = 1.0;
};

RopeDefaults rope_defaults(Family f) {
  RopeDefaults d;
  if (f == Family::kErnie45Moe || f == Family::kLlama4Text) d.theta = 500000.0;
  if (f == Family::kMinimaxM2) d.theta = 5000000.0;
  if (f == Family::kGlm4Moe) d.partial_rotary_factor = 0.5;
  return d;
}

Status parse_rope(const ConfigReader& c, ModelConfig* m, std::size_t rotary_head_dim) {
  const RopeDefaults defaults = rope_defaults(m->family->family);
  RopeSettings& rope = m->rope;
  const json::Value* params = c.get("rope_parameters");
  if (params && !params->is_object()) return c.bad("rope_parameters", "must be an object");
  const json::Value* scaling = c.get("rope_scaling");
  if (scaling && !scaling->is_object()) return c.bad("rope_scaling", "must be an object");
  // Scaling parameters live in rope_parameters, else in rope_scaling.
  static const json::Value kEmpty = json::Value::object({});
  const json::Value& p = params ? *params : (scaling ? *scaling : kEmpty);
  ConfigReader r(p, c.where() + (params ? ": rope_parameters" : ": rope_scaling"));

  double theta = 0;
  if (r.has("rope_theta")) {
    ZIPMOE_RETURN_IF_ERROR(r.positive_or("rope_theta", defaults.theta, &theta));
  } else if (c.has("rope_theta")) {
    ZIPMOE_RETURN_IF_ERROR(c.positive_or("rope_theta", defaults.theta, &theta));
  } else {
    // DBRX's own configs keep the base in attn_config (transformers 5 writes rope_parameters)
    ZIPMOE_RETURN_IF_ERROR(sub_config(c, "attn_config").positive_or("rope_theta", defaults.theta, &theta));
  }
  if (!(theta > 1.0)) return c.bad("rope_theta", "must be > 1");
  rope.config.theta = theta;

  double partial = 0;
  if (r.has("partial_rotary_factor")) {
    ZIPMOE_RETURN_IF_ERROR(r.positive_or("partial_rotary_factor", defaults.partial_rotary_factor, &partial));
  } else if (c.has("partial_rotary_factor") || !c.has("rotary_dim")) {
    ZIPMOE_RETURN_IF_ERROR(c.positive_or("partial_rotary_factor", defaults.partial_rotary_factor, &partial));
  } else {
    // MiniMax-M2's published configs give the rotary width itself
    std::size_t rotary_dim = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer("rotary_dim", 1, kMaxWidth, &rotary_dim));
    partial = static_cast<double>(rotary_dim) / static_cast<double>(rotary_head_dim);
  }
  if (partial > 1.0) return c.bad("partial_rotary_factor", "must be in (0, 1]");
  const std::size_t rotary = static_cast<std::size_t>(static_cast<double>(rotary_head_dim) * partial);
  if (rotary == 0 || rotary % 2 != 0) {
    return Status::Format(c.where() + ": the rotary dimension (" + std::to_string(rotary) + ") must be even and > 0");
  }
  rope.config.rotary_dim = rotary;

  std::string type;
  if (r.has("rope_type")) {
    ZIPMOE_RETURN_IF_ERROR(r.string_or("rope_type", "default", &type));
  } else {
    ZIPMOE_RETURN_IF_ERROR(r.string_or("type", "default", &type));
  }
  double original = 0.0;
  if (r.has("original_max_position_embeddings")) {
    ZIPMOE_RETURN_IF_ERROR(r.positive_or("original_max_position_embeddings", 1.0, &original));
  } else if (c.has("original_max_position_embeddings")) {
    ZIPMOE_RETURN_IF_ERROR(c.positive_or("original_max_position_embeddings", 1.0, &original));
  } else {
    original = static_cast<double>(m->max_position_embeddings);
  }
  double factor = 0.0;
  const bool has_factor = r.has("factor");
  if (has_factor) ZIPMOE_RETURN_IF_ERROR(r.positive_or("factor", 1.0, &factor));
  double attention_factor = 0.0;
  if (r.has("attention_factor")) ZIPMOE_RETURN_IF_ERROR(r.positive_or("attention_factor", 1.0, &attention_factor));
  rope.config.attention_factor = attention_factor;

  double alpha = 0.0;
  if (r.has("alpha")) ZIPMOE_RETURN_IF_ERROR(r.positive_or("alpha", 1.0, &alpha));
  if (type == "dynamic" && alpha > 0 && m->family->family == Family::kHunyuanV1Moe) {
    // Hunyuan's NTK-alpha RoPE: a fixed alpha only stretches the base,
    // theta * alpha^(d / (d - 2)) over the head size d.
    const double d = static_cast<double>(rotary_head_dim);
    if (rotary_head_dim <= 2) return c.bad("head_dim", "must exceed 2 for NTK-alpha RoPE");
    rope.config.theta = theta * std::pow(alpha, d / (d - 2.0));
    rope.config.scaling = kernels::RopeScaling::kNone;
  } else if (type == "default" || type.empty()) {
    rope.config.scaling = kernels::RopeScaling::kNone;
  } else if (type == "linear") {
    if (!has_factor) return r.bad("factor", "is missing (linear rope scaling needs it)");
    rope.config.scaling = kernels::RopeScaling::kLinear;
    rope.config.factor = factor;
  } else if (type == "yarn") {
    rope.config.scaling = kernels::RopeScaling::kYarn;
    rope.config.factor = has_factor ? factor : static_cast<double>(m->max_position_embeddings) / original;
    rope.config.original_max_position_embeddings = original;
    ZIPMOE_RETURN_IF_ERROR(r.number_or("beta_fast", 32.0, &rope.config.beta_fast));
    ZIPMOE_RETURN_IF_ERROR(r.number_or("beta_slow", 1.0, &rope.config.beta_slow));
    ZIPMOE_RETURN_IF_ERROR(r.number_or("mscale", 0.0, &rope.config.mscale));
    ZIPMOE_RETURN_IF_ERROR(r.number_or("mscale_all_dim", 0.0, &rope.config.mscale_all_dim));
    ZIPMOE_RETURN_IF_ERROR(r.boolean_or("truncate", true, &rope.config.truncate));
  } else if (type == "llama3") {
    if (!has_factor) return r.bad("factor", "is missing (llama3 rope scaling needs it)");
    rope.config.scaling = kernels::RopeScaling::kLlama3;
    rope.config.factor = factor;
    rope.config.original_max_position_embeddings = original;
    ZIPMOE_RETURN_IF_ERROR(r.positive_or("low_freq_factor", 1.0, &rope.config.low_freq_factor));
    ZIPMOE_RETURN_IF_ERROR(r.positive_or("high_freq_factor", 4.0, &rope.config.high_freq_factor));
  } else if (type == "longrope" || type == "su") {
    rope.config.scaling = kernels::RopeScaling::kLongRope;
    rope.config.factor = has_factor ? factor : static_cast<double>(m->max_position_embeddings) / original;
    rope.config.original_max_position_embeddings = original;
    if (rope.config.factor > 1.0 && !(original > 1.0)) {
      return r.bad("original_max_position_embeddings", "must be > 1 for longrope scaling with a factor above 1");
    }
    ZIPMOE_RETURN_IF_ERROR(read_factor_list(r, "short_factor", rotary / 2, &rope.short_factors));
    ZIPMOE_RETURN_IF_ERROR(read_factor_list(r, "long_factor", rotary / 2, &rope.long_factors));
    ZIPMOE_RETURN_IF_ERROR(r.number_or("short_mscale", 0.0, &rope.short_mscale));
    ZIPMOE_RETURN_IF_ERROR(r.number_or("long_mscale", 0.0, &rope.long_mscale));
  } else {
    return Status::Unsupported(c.where() + ": rope scaling type '" + type +
                               "' is not supported (supported: default, linear, yarn, llama3, longrope)");
  }
  return Status::Ok();
}

// A list of layer indices (entries past the last layer are ignored).
Status read_layer_list(const ConfigReader& c, const char* key, std::size_t num_layers, std::vector<bool>* out) {
  out->assign(num_layers, false);
  const json::Value* list = c.get(key);
  if (!list) return Status::Ok();
  if (!list->is_array()) return c.bad(key, "must be a list of layer indices");
  for (const json::Value& item : list->items()) {
    std::size_t layer = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer_value(key, item, 0, kMaxLayers, &layer));
    if (layer < num_layers) (*out)[layer] = true;
  }
  return Status::Ok();
}

// Which layers are MoE, in each family's config vocabulary.
Status parse_moe_layers(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  const std::size_t L = m->num_layers;
  std::vector<bool> moe(L, true);
  if (f == Family::kQwen2Moe || f == Family::kQwen3Moe) {
    std::size_t step = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("decoder_sparse_step", 1, 1, kMaxLayers, &step));
    std::vector<bool> dense_only;
    ZIPMOE_RETURN_IF_ERROR(read_layer_list(c, "mlp_only_layers", L, &dense_only));
    for (std::size_t i = 0; i < L; ++i) moe[i] = !dense_only[i] && (i + 1) % step == 0;
  } else if (f == Family::kDeepseekV2 || f == Family::kDeepseekV3 || f == Family::kGlm4Moe || f == Family::kDots1) {
    std::size_t first_dense = 0, frequency = 0;
    ZIPMOE_RETURN_IF_ERROR(
        c.integer_or("first_k_dense_replace", f == Family::kGlm4Moe ? 1 : 0, 0, kMaxLayers, &first_dense));
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("moe_layer_freq", 1, 1, kMaxLayers, &frequency));
    for (std::size_t i = 0; i < L; ++i) moe[i] = i >= first_dense && i % frequency == 0;
  } else if (f == Family::kErnie45Moe) {
    std::size_t start = 0, interval = 0, end = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("moe_layer_start_index", 1, 0, kMaxLayers, &start));
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("moe_layer_interval", 1, 1, kMaxLayers, &interval));
    const json::Value* end_value = c.get("moe_layer_end_index");
    if (end_value && end_value->is_integer() && end_value->as_int() == -1) {
      end = L - 1;
    } else {
      ZIPMOE_RETURN_IF_ERROR(c.integer_or("moe_layer_end_index", static_cast<std::int64_t>(L) - 1, 0, kMaxLayers,
                                          &end));
    }
    for (std::size_t i = 0; i < L; ++i) moe[i] = (i + 1) % interval == 0 && i >= start && i <= end;
  } else if (f == Family::kLlama4Text) {
    if (c.has("moe_layers")) {
      ZIPMOE_RETURN_IF_ERROR(read_layer_list(c, "moe_layers", L, &moe));
    } else {
      std::size_t step = 0;
      ZIPMOE_RETURN_IF_ERROR(c.integer_or("interleave_moe_layer_step", 1, 1, kMaxLayers, &step));
      for (std::size_t i = 0; i < L; ++i) moe[i] = (i + 1) % step == 0;
    }
  }
  for (std::size_t i = 0; i < L; ++i) m->layers[i].ffn = moe[i] ? FfnKind::kMoe : FfnKind::kDense;
  return Status::Ok();
}

// Llama 4: NoPE layers (no_rope_layers: 1 = RoPE) and chunked attention on the RoPE layers.
Status parse_llama4_attention_layers(const ConfigReader& c, ModelConfig* m) {
  const std::size_t L = m->num_layers;
  if (const json::Value* list = c.get("no_rope_layers"); list && !(list->is_array() && list->items().empty())) {
    if (!list->is_array() || list->items().size() < L) {
      return c.bad("no_rope_layers", "must be a list with an entry per layer");
    }
    for (std::size_t i = 0; i < L; ++i) {
      std::size_t use_rope = 0;
      ZIPMOE_RETURN_IF_ERROR(c.integer_value("no_rope_layers", list->items()[i], 0, 1, &use_rope));
      m->layers[i].rope = use_rope == 1;
    }
  } else {
    std::size_t interval = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("no_rope_layer_interval", 4, 1, kMaxLayers, &interval));
    for (std::size_t i = 0; i < L; ++i) m->layers[i].rope = (i + 1) % interval != 0;
  }
  std::size_t chunk = 0;  // null: no chunked layers
  if (!c.is_null("attention_chunk_size")) {
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("attention_chunk_size", 8192, 1, kMaxPositions, &chunk));
  }
  const json::Value* types = c.get("layer_types");
  for (std::size_t i = 0; i < L; ++i) {
    std::string type = m->layers[i].rope && chunk ? "chunked_attention" : "full_attention";
    if (types) {
      if (!types->is_array() || types->items().size() != L || !types->items()[i].is_string()) {
        return c.bad("layer_types", "must be a list with one string per layer");
      }
      type = types->items()[i].as_string();
    }
    if (type == "chunked_attention") {
      if (!chunk) return c.bad("attention_chunk_size", "is missing (chunked_attention layers need it)");
      m->layers[i].attention_chunk = chunk;
    } else if (type != "full_attention") {
      return Status::Unsupported(c.where() + ": layer type '" + type + "' is not supported");
    }
  }
  return Status::Ok();
}

Status parse_layers(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  m->layers.assign(m->num_layers, LayerPlan());
  if (m->family->moe && m->num_experts > 0) ZIPMOE_RETURN_IF_ERROR(parse_moe_layers(c, m));
  if (f == Family::kLlama4Text) return parse_llama4_attention_layers(c, m);

  if (m->family->mtp_layers) {
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("num_nextn_predict_layers", 0, 0, kMaxLayers, &m->mtp_layers));
  }

  // Sliding-window attention.
  std::size_t window = 0;
  if (c.has("sliding_window")) ZIPMOE_RETURN_IF_ERROR(c.integer("sliding_window", 0, kMaxPositions, &window));
  bool use_sliding = true;
  if (f == Family::kQwen2 || f == Family::kQwen2Moe || f == Family::kQwen3Moe) {
    ZIPMOE_RETURN_IF_ERROR(c.boolean_or("use_sliding_window", false, &use_sliding));
  }
  if (f == Family::kDeepseekV2 || f == Family::kDeepseekV3 || f == Family::kOlmoe || f == Family::kGraniteMoe ||
      f == Family::kLlama || f == Family::kGlm4Moe || f == Family::kMinimaxM2 || f == Family::kHunyuanV1Moe ||
      f == Family::kErnie45Moe || f == Family::kDbrx) {
    use_sliding = false;  // these families have no sliding-window attention
  }
  if (!use_sliding || window == 0) return Status::Ok();
  const json::Value* types = c.get("layer_types");
  if (types) {
    if (!types->is_array() || types->items().size() != m->num_layers) {
      return c.bad("layer_types", "must be a list with one entry per layer");
    }
    for (std::size_t i = 0; i < m->num_layers; ++i) {
      const json::Value& t = types->items()[i];
      if (!t.is_string()) return c.bad("layer_types", "must hold strings");
      if (t.as_string() == "sliding_attention") {
        m->layers[i].sliding_window = window;
      } else if (t.as_string() != "full_attention") {
        return Status::Unsupported(c.where() + ": layer type '" + t.as_string() + "' is not supported");
      }
    }
    return Status::Ok();
  }
  if (f == Family::kGptOss) {
    // transformers' default: even layers slide, odd layers attend to everything
    for (std::size_t i = 0; i < m->num_layers; ++i) {
      if ((i + 1) % 2) m->layers[i].sliding_window = window;
    }
    return Status::Ok();
  }
  if (f == Family::kQwen2 || f == Family::kQwen2Moe) {
    std::size_t max_window_layers = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("max_window_layers", m->num_layers, 0, kMaxLayers, &max_window_layers));
    for (std::size_t i = 0; i < m->num_layers; ++i) {
      if ((i + 1) % 2 && i < max_window_layers) m->layers[i].sliding_window = window;
    }
    return Status::Ok();
  }
  if (f == Family::kDots1) {
    // transformers' default: the layers from max_window_layers on slide
    std::size_t max_window_layers = 0;
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("max_window_layers", 62, 0, kMaxLayers, &max_window_layers));
    for (std::size_t i = max_window_layers; i < m->num_layers; ++i) m->layers[i].sliding_window = window;
    return Status::Ok();
  }
  for (LayerPlan& layer : m->layers) layer.sliding_window = window;
  return Status::Ok();
}

// The FFN activation and bias, which the engine supports in one form only.
Status check_activation(const ConfigReader& c, Family f) {
  std::string activation;
  if (f == Family::kDbrx) {
    const ConfigReader ffn = sub_config(c, "ffn_config");
    ZIPMOE_RETURN_IF_ERROR(sub_config(ffn, "ffn_act_fn").string_or("name", "silu", &activation));
  } else {
    ZIPMOE_RETURN_IF_ERROR(c.string_or("hidden_act", "silu", &activation));
  }
  if (activation != "silu" && activation != "swish") {
    return Status::Unsupported(c.where() + ": hidden_act '" + activation + "' is not supported (only silu)");
  }
  bool mlp_bias = false;
  ZIPMOE_RETURN_IF_ERROR(c.boolean_or("mlp_bias", false, &mlp_bias));
  if (mlp_bias) return Status::Unsupported(c.where() + ": mlp_bias is not supported");
  bool use_bias = false;  // ERNIE 4.5: a bias on every linear layer
  ZIPMOE_RETURN_IF_ERROR(c.boolean_or("use_bias", false, &use_bias));
  if (use_bias) return Status::Unsupported(c.where() + ": use_bias (biases on every linear layer) is not supported");
  return Status::Ok();
}

// Vocabulary, widths, depth, heads, context and norm epsilon.
Status parse_dimensions(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  const bool dbrx = f == Family::kDbrx;  // MPT-style names, the KV heads in attn_config
  ZIPMOE_RETURN_IF_ERROR(c.integer("vocab_size", 1, kMaxVocab, &m->vocab_size));
  ZIPMOE_RETURN_IF_ERROR(c.integer(dbrx ? "d_model" : "hidden_size", 1, kMaxWidth, &m->hidden_size));
  ZIPMOE_RETURN_IF_ERROR(c.integer(dbrx ? "n_layers" : "num_hidden_layers", 1, kMaxLayers, &m->num_layers));
  ZIPMOE_RETURN_IF_ERROR(c.integer(dbrx ? "n_heads" : "num_attention_heads", 1, kMaxHeads, &m->num_heads));
  if (dbrx) {
    ZIPMOE_RETURN_IF_ERROR(sub_config(c, "attn_config").integer_or("kv_n_heads", 1, 1, kMaxHeads, &m->num_kv_heads));
  } else {
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("num_key_value_heads", static_cast<std::int64_t>(m->num_heads), 1,
                                        kMaxHeads, &m->num_kv_heads));
  }
  if (m->num_heads % m->num_kv_heads != 0) {
    return c.bad("num_key_value_heads", "must divide num_attention_heads");
  }
  ZIPMOE_RETURN_IF_ERROR(c.integer_or(dbrx ? "max_seq_len" : "max_position_embeddings", 2048, 1, kMaxPositions,
                                      &m->max_position_embeddings));
  const bool eps_1e5 = f == Family::kMixtral || f == Family::kOlmoe || f == Family::kGptOss || f == Family::kPhiMoe ||
                       f == Family::kGlm4Moe || f == Family::kHunyuanV1Moe || f == Family::kErnie45Moe ||
                       f == Family::kLlama4Text;
  double eps = 1e-5;  // DBRX's LayerNorm has torch's default epsilon
  if (!dbrx) ZIPMOE_RETURN_IF_ERROR(c.positive_or("rms_norm_eps", eps_1e5 ? 1e-5 : 1e-6, &eps));
  m->norm_eps = static_cast<float>(eps);
  ZIPMOE_RETURN_IF_ERROR(
      c.boolean_or("tie_word_embeddings", f == Family::kErnie45Moe, &m->tie_word_embeddings));
  // Llama 4's dense layers have their own width; its experts use intermediate_size
  const char* dense_key = f == Family::kLlama4Text ? "intermediate_size_mlp" : "intermediate_size";
  return c.integer_or(dense_key, 0, 0, kMaxWidth, &m->intermediate_size);
}

// Head sizes: latent attention's ranks, or the grouped attention's head_dim.
Status parse_attention_geometry(const ConfigReader& c, ModelConfig* m) {
  if (m->family->attention == AttentionKind::kLatent) {
    std::size_t q_lora = 0;
    if (c.has("q_lora_rank")) ZIPMOE_RETURN_IF_ERROR(c.integer("q_lora_rank", 0, kMaxWidth, &q_lora));
    m->q_lora_rank = q_lora;
    ZIPMOE_RETURN_IF_ERROR(c.integer("kv_lora_rank", 1, kMaxWidth, &m->kv_lora_rank));
    ZIPMOE_RETURN_IF_ERROR(c.integer("qk_nope_head_dim", 0, kMaxWidth, &m->qk_nope_head_dim));
    ZIPMOE_RETURN_IF_ERROR(c.integer("qk_rope_head_dim", 2, kMaxWidth, &m->qk_rope_head_dim));
    ZIPMOE_RETURN_IF_ERROR(c.integer("v_head_dim", 1, kMaxWidth, &m->v_head_dim));
    m->head_dim = m->qk_nope_head_dim + m->qk_rope_head_dim;
    return Status::Ok();
  }
  std::size_t head_dim = 0;
  if (c.has("head_dim")) ZIPMOE_RETURN_IF_ERROR(c.integer("head_dim", 1, kMaxWidth, &head_dim));
  if (head_dim == 0) {
    if (m->hidden_size % m->num_heads != 0) {
      return c.bad("hidden_size", "is not a multiple of num_attention_heads (and no head_dim is given)");
    }
    head_dim = m->hidden_size / m->num_heads;
  }
  m->head_dim = head_dim;
  return Status::Ok();
}

// DeepSeek's routing: scaling, groups and the top-k method.
Status parse_deepseek_routing(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  if (f == Family::kMinimaxM2) {
    // sigmoid scores, the correction bias for the choice, always renormalized, unscaled, one group
    m->routed_scaling_factor = 1.0;
    m->num_groups = m->topk_groups = 1;
  } else {
    ZIPMOE_RETURN_IF_ERROR(
        c.number_or("routed_scaling_factor", f == Family::kDeepseekV3 ? 2.5 : 1.0, &m->routed_scaling_factor));
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("n_group", 1, 1, kMaxExperts, &m->num_groups));
    ZIPMOE_RETURN_IF_ERROR(c.integer_or("topk_group", 1, 1, kMaxExperts, &m->topk_groups));
  }
  if (f == Family::kDeepseekV2) {
    std::string method;
    ZIPMOE_RETURN_IF_ERROR(c.string_or("topk_method", "greedy", &method));
    if (method == "group_limited_greedy") {
      m->group_limited = true;
    } else if (method != "greedy") {
      return Status::Unsupported(c.where() + ": topk_method '" + method +
                                 "' is not supported (greedy, group_limited_greedy)");
    }
  } else {
    m->group_limited = true;
    std::string scoring;
    ZIPMOE_RETURN_IF_ERROR(c.string_or("scoring_func", "sigmoid", &scoring));
    if (scoring != "sigmoid") {
      return Status::Unsupported(c.where() + ": scoring_func '" + scoring + "' is not supported (sigmoid)");
    }
  }
  if (m->num_experts == 0 || !m->group_limited) return Status::Ok();
  if (m->num_experts % m->num_groups != 0) return c.bad("n_group", "must divide the number of experts");
  if (m->topk_groups > m->num_groups) return c.bad("topk_group", "must not exceed n_group");
  const std::size_t per_group = m->num_experts / m->num_groups;
  if (m->family->router == RouterKind::kDeepseekV3 && per_group < 2 && m->num_groups > 1) {
    return c.bad("n_group", "leaves fewer than 2 experts per group");
  }
  if (m->topk_groups * per_group < m->experts_per_token) {
    return c.bad("topk_group", "selects fewer experts than num_experts_per_tok");
  }
  return Status::Ok();
}

// DBRX keeps its MoE numbers in ffn_config.
Status parse_dbrx_experts(const ConfigReader& c, ModelConfig* m) {
  const ConfigReader ffn = sub_config(c, "ffn_config");
  ZIPMOE_RETURN_IF_ERROR(ffn.integer_or("moe_num_experts", 4, 1, kMaxExperts, &m->num_experts));
  ZIPMOE_RETURN_IF_ERROR(
      ffn.integer_or("moe_top_k", 1, 1, static_cast<std::int64_t>(m->num_experts), &m->experts_per_token));
  ZIPMOE_RETURN_IF_ERROR(ffn.integer_or("ffn_hidden_size", 3584, 1, kMaxWidth, &m->expert_intermediate_size));
  // The top-k weights are divided by their p-norm; null: not renormalized.
  m->norm_topk_prob = !ffn.is_null("moe_normalize_expert_weights");
  if (m->norm_topk_prob) {
    ZIPMOE_RETURN_IF_ERROR(ffn.positive_or("moe_normalize_expert_weights", 1.0, &m->norm_topk_p));
    if (m->norm_topk_p != 1.0 && m->norm_topk_p != 2.0) {
      return Status::Unsupported(ffn.where() + ": moe_normalize_expert_weights " + std::to_string(m->norm_topk_p) +
                                 " is not supported (1 or 2, the norm the weights are divided by)");
    }
  }
  return Status::Ok();
}

// The config key holding one routed expert's width.
const char* expert_size_key(const FamilySpec& family) {
  switch (family.family) {
    case Family::kQwen2Moe:
    case Family::kQwen3Moe:
    case Family::kDeepseekV2:
    case Family::kDeepseekV3:
    case Family::kGlm4Moe:
    case Family::kDots1:
    case Family::kErnie45Moe:
      return "moe_intermediate_size";
    default:
      return "intermediate_size";  // Mixtral-style configs, MiniMax-M2, Hunyuan, Llama 4
  }
}

// Shared experts: their width (0: none).
Status parse_shared_experts(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  std::size_t count = 0;
  switch (f) {
    case Family::kQwen2Moe:
      return c.integer_or("shared_expert_intermediate_size", 0, 0, kMaxWidth, &m->shared_intermediate_size);
    case Family::kDeepseekV2:
    case Family::kDeepseekV3:
    case Family::kGlm4Moe:
    case Family::kDots1:
      ZIPMOE_RETURN_IF_ERROR(c.integer_or("n_shared_experts", f == Family::kGlm4Moe ? 1 : 0, 0, 1024, &count));
      break;
    case Family::kErnie45Moe:
      ZIPMOE_RETURN_IF_ERROR(c.integer_or("moe_num_shared_experts", 2, 0, 1024, &count));
      break;
    case Family::kHunyuanV1Moe:
      // transformers builds one shared MLP of intermediate_size, whatever num_shared_expert says
      ZIPMOE_RETURN_IF_ERROR(c.uniform_integer_or("num_shared_expert", 1, 0, 1024, &count));
      if (count != 1) {
        return Status::Unsupported(c.where() + ": num_shared_expert " + std::to_string(count) +
                                   " is not supported (one shared expert)");
      }
      break;
    case Family::kLlama4Text:
      count = 1;  // one shared expert as wide as a routed one
      break;
    default:
      return Status::Ok();
  }
  m->shared_intermediate_size = count * m->expert_intermediate_size;
  return Status::Ok();
}

// Routed experts: count, k, size, shared experts and the router's options.
Status parse_experts(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  if (f == Family::kDbrx) return parse_dbrx_experts(c, m);
  const char* count_key = c.first_present({"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"});
  if (!count_key) return c.bad("num_experts", "is missing (also looked for num_local_experts, n_routed_experts)");
  ZIPMOE_RETURN_IF_ERROR(c.integer(count_key, 0, kMaxExperts, &m->num_experts));
  if (m->num_experts > 0) {
    const std::int64_t E = static_cast<std::int64_t>(m->num_experts);
    if (f == Family::kErnie45Moe) {
      ZIPMOE_RETURN_IF_ERROR(c.integer("moe_k", 1, E, &m->experts_per_token));
    } else if (f == Family::kHunyuanV1Moe) {
      ZIPMOE_RETURN_IF_ERROR(c.uniform_integer_or("moe_topk", 1, 1, E, &m->experts_per_token));
    } else if (f == Family::kLlama4Text) {
      ZIPMOE_RETURN_IF_ERROR(c.integer_or("num_experts_per_tok", 1, 1, E, &m->experts_per_token));
    } else {
      ZIPMOE_RETURN_IF_ERROR(c.integer("num_experts_per_tok", 1, E, &m->experts_per_token));
    }
    ZIPMOE_RETURN_IF_ERROR(c.integer(expert_size_key(*m->family), 1, kMaxWidth, &m->expert_intermediate_size));
  }
  ZIPMOE_RETURN_IF_ERROR(parse_shared_experts(c, m));
  const bool norm_default = f == Family::kDeepseekV3 || f == Family::kGlm4Moe;
  ZIPMOE_RETURN_IF_ERROR(c.boolean_or("norm_topk_prob", norm_default, &m->norm_topk_prob));
  if (f == Family::kMixtral || f == Family::kMinimaxM2 || f == Family::kHunyuanV1Moe) m->norm_topk_prob = true;
  if (f == Family::kErnie45Moe) {
    m->norm_topk_prob = true;
    double norm_min = 0;
    ZIPMOE_RETURN_IF_ERROR(c.number_or("moe_norm_min", 1e-12, &norm_min));
    if (norm_min < 0) return c.bad("moe_norm_min", "must not be negative");
    m->norm_topk_min = static_cast<float>(norm_min);
  }
  if (f == Family::kPhiMoe) {
    if (m->num_experts > 0 && m->experts_per_token != 2) {
      return Status::Unsupported(c.where() + ": sparsemixer routing needs num_experts_per_tok = 2");
    }
    if (m->num_experts == 1) return c.bad("num_local_experts", "must be at least 2 for sparsemixer routing");
    double jitter = 0;
    ZIPMOE_RETURN_IF_ERROR(c.number_or("router_jitter_noise", 0.01, &jitter));
    m->router_jitter_noise = static_cast<float>(jitter);
  }
  const RouterKind router = m->family->router;
  const bool deepseek_routing = router == RouterKind::kDeepseekV2 || router == RouterKind::kDeepseekV3;
  return deepseek_routing ? parse_deepseek_routing(c, m) : Status::Ok();
}

// Scalars only some families have (Granite's multipliers, OLMoE's clip, gpt-oss's SwiGLU).
Status parse_family_scalars(const ConfigReader& c, ModelConfig* m) {
  const Family f = m->family->family;
  if (f == Family::kGraniteMoe) {
    double v = 0;
    ZIPMOE_RETURN_IF_ERROR(c.number_or("embedding_multiplier", 1.0, &v));
    m->embedding_multiplier = static_cast<float>(v);
    ZIPMOE_RETURN_IF_ERROR(c.number_or("residual_multiplier", 1.0, &v));
    m->residual_multiplier = static_cast<float>(v);
    ZIPMOE_RETURN_IF_ERROR(c.number_or("attention_multiplier", 1.0, &v));
    m->attention_scale = static_cast<float>(v);
    ZIPMOE_RETURN_IF_ERROR(c.number_or("logits_scaling", 1.0, &v));
    if (v == 0) return c.bad("logits_scaling", "must not be 0");
    m->logits_scaling = static_cast<float>(v);
  }
  if (f == Family::kOlmoe || f == Family::kDbrx) {
    const ConfigReader& holder = f == Family::kDbrx ? sub_config(c, "attn_config") : c;
    double clip = 0;
    ZIPMOE_RETURN_IF_ERROR(holder.number_or("clip_qkv", 0.0, &clip));
    if (clip < 0) return holder.bad("clip_qkv", "must not be negative");
    m->clip_qkv = static_cast<float>(clip);
  }
  if (f == Family::kLlama4Text) {
    ZIPMOE_RETURN_IF_ERROR(c.boolean_or("attn_temperature_tuning", true, &m->attention_temperature_tuning));
    ZIPMOE_RETURN_IF_ERROR(c.positive_or("floor_scale", 8192.0, &m->attention_floor_scale));
    ZIPMOE_RETURN_IF_ERROR(c.number_or("attn_scale", 0.1, &m->attention_temperature_scale));
  }
  // q/k norms some configs switch off
  m->qk_norm = m->family->qk_norm;
  if (f == Family::kGlm4Moe || f == Family::kLlama4Text) {
    bool use_qk_norm = false;
    ZIPMOE_RETURN_IF_ERROR(c.boolean_or("use_qk_norm", f == Family::kLlama4Text, &use_qk_norm));
    if (!use_qk_norm) m->qk_norm = QkNormKind::kNone;
  }
  if (f == Family::kHunyuanV1Moe) {
    bool cross_layer = false;
    ZIPMOE_RETURN_IF_ERROR(c.boolean_or("use_cla", false, &cross_layer));
    if (cross_layer) {
      return Status::Unsupported(c.where() + ": use_cla (cross-layer attention, a KV cache shared by layers) is "
                                 "not supported");
    }
  }
  if (f == Family::kGptOss) {
    double v = 0;
    ZIPMOE_RETURN_IF_ERROR(c.number_or("swiglu_alpha", 1.702, &v));
    m->swiglu_alpha = static_cast<float>(v);
    ZIPMOE_RETURN_IF_ERROR(c.positive_or("swiglu_limit", 7.0, &v));
    m->swiglu_limit = static_cast<float>(v);
  }
  return Status::Ok();
}

// RoPE over the rotary part of each head, and the attention's softmax scale.
Status parse_positions(const ConfigReader& c, ModelConfig* m) {
  const bool latent = m->family->attention == AttentionKind::kLatent;
  ZIPMOE_RETURN_IF_ERROR(parse_rope(c, m, latent ? m->qk_rope_head_dim : m->head_dim));
  if (!latent) {
    m->rope.style = m->family->rope_style;
    if (m->attention_scale == 0.0f) m->attention_scale = static_cast<float>(1.0 / std::sqrt(double(m->head_dim)));
    return Status::Ok();
  }
  bool interleave = true;
  if (m->family->family == Family::kDeepseekV3) {
    ZIPMOE_RETURN_IF_ERROR(c.boolean_or("rope_interleave", true, &interleave));
  }
  m->rope.style = interleave ? kernels::RopeStyle::kInterleaved : kernels::RopeStyle::kNeox;
  if (m->rope.config.rotary_dim != m->qk_rope_head_dim) {
    return c.bad("partial_rotary_factor", "is not supported with latent attention");
  }
  // transformers' yarn_apply_mscale: the softmax scale gains mscale(factor, mscale_all_dim)^2.
  double scale = 1.0 / std::sqrt(static_cast<double>(m->qk_nope_head_dim + m->qk_rope_head_dim));
  if (m->rope.config.scaling != kernels::RopeScaling::kNone && m->rope.config.mscale_all_dim != 0) {
    const double mscale = kernels::yarn_get_mscale(m->rope.config.factor, m->rope.config.mscale_all_dim);
    scale *= mscale * mscale;
  }
  m->attention_scale = static_cast<float>(scale);
  return Status::Ok();
}

Status parse_config_object(const FamilySpec& family, const json::Value& object, ModelConfig* m) {
  ConfigReader c(object, std::string(family.name) + " config");
  m->family = &family;
  ZIPMOE_RETURN_IF_ERROR(check_activation(c, family.family));
  ZIPMOE_RETURN_IF_ERROR(parse_dimensions(c, m));
  ZIPMOE_RETURN_IF_ERROR(parse_attention_geometry(c, m));
  if (family.moe) ZIPMOE_RETURN_IF_ERROR(parse_experts(c, m));
  ZIPMOE_RETURN_IF_ERROR(parse_layers(c, m));
  for (const LayerPlan& layer : m->layers) {
    if (layer.ffn == FfnKind::kDense && m->intermediate_size == 0) {
      return c.bad("intermediate_size", "is missing (a dense FFN layer needs it)");
    }
  }
  ZIPMOE_RETURN_IF_ERROR(parse_family_scalars(c, m));
  ZIPMOE_RETURN_IF_ERROR(parse_positions(c, m));
  m->config_json = json::serialize(object);
  return Status::Ok();
}

}  // namespace

std::size_t ModelConfig::num_moe_layers() const {
  std::size_t n = 0;
  for (const LayerPlan& layer : layers) n += layer.ffn == FfnKind::kMoe;
  return n;
}

cache::ExpertShapes expert_shapes(const ModelConfig& config) {
  cache::ExpertShapes shapes;
  shapes.num_layers = config.num_layers;
  for (std::uint32_t layer = 0; layer < config.num_layers; ++layer) {
    if (config.is_moe_layer(layer)) shapes.moe_layers.push_back(layer);
  }
  shapes.num_experts = config.num_experts;
  shapes.experts_per_token = config.experts_per_token;
  shapes.hidden_size = config.hidden_size;
  shapes.intermediate_size = config.expert_intermediate_size;
  return shapes;
}

Status parse_model_config(const json::Value& metadata, ModelConfig* config) {
  if (!metadata.is_object()) return Status::Format("container metadata is not a JSON object");
  const json::Value* architecture = metadata.find("architecture");
  if (!architecture) {
    return Status::Unsupported("the container metadata names no architecture (supported: " +
                               supported_family_names() + ")");
  }
  if (!architecture->is_string()) return Status::Format("container metadata: architecture must be a string");
  const FamilySpec* family = find_family(architecture->as_string());
  if (!family) {
    const std::string& name = architecture->as_string();
    const std::string why = name == "generic" ? " (a --generic container has no architecture the engine knows)" : "";
    return Status::Unsupported("architecture '" + name + "' is not supported by the engine" + why +
                               "; supported: " + supported_family_names());
  }
  const json::Value* object = metadata.find("config");
  if (!object || !object->is_object()) return Status::Format("container metadata: config must be an object");
  ModelConfig parsed;
  ZIPMOE_RETURN_IF_ERROR(parse_config_object(*family, *object, &parsed));
  *config = std::move(parsed);
  return Status::Ok();
}

Status parse_model_config(const std::string& metadata_json, ModelConfig* config) {
  json::ParseOptions options;
  options.keep_top_level = {"architecture", "config", "zipmoe_format"};
  json::Value metadata;
  ZIPMOE_RETURN_IF_ERROR(json::parse(metadata_json, &metadata, options).with_context("container metadata"));
  return parse_model_config(metadata, config);
}

}  // namespace zipmoe::model
