#include "cache/routing_profile.h"

#include <fstream>
#include <limits>
#include <sstream>

#include "common/json.h"

namespace zipmoe::cache {

namespace {
constexpr const char* kFormatName = "zipmoe-routing-profile";
constexpr std::int64_t kFormatVersion = 1;
// Far more than any real model has; bounds what a malformed file can make us allocate.
constexpr std::int64_t kMaxLayers = 1 << 16;
constexpr std::int64_t kMaxExperts = 1 << 16;
}  // namespace

RoutingProfile::RoutingProfile(std::string architecture, std::size_t num_layers, std::vector<std::uint32_t> moe_layers,
                               std::size_t num_experts, std::size_t experts_per_token)
    : architecture_(std::move(architecture)),
      num_layers_(num_layers),
      num_experts_(num_experts),
      experts_per_token_(experts_per_token),
      moe_layers_(std::move(moe_layers)) {
  moe_index_of_layer_.assign(num_layers_, -1);
  for (std::size_t i = 0; i < moe_layers_.size(); ++i) {
    if (moe_layers_[i] < num_layers_) moe_index_of_layer_[moe_layers_[i]] = static_cast<std::int32_t>(i);
  }
  tokens_.assign(moe_layers_.size(), 0);
  counts_.assign(moe_layers_.size() * num_experts_, 0);
}

void RoutingProfile::add(std::uint32_t layer, const std::uint32_t* experts, const std::uint32_t* token_counts,
                         std::size_t count, std::size_t tokens) {
  if (layer >= moe_index_of_layer_.size() || moe_index_of_layer_[layer] < 0) return;
  const std::size_t m = static_cast<std::size_t>(moe_index_of_layer_[layer]);
  tokens_[m] += tokens;
  for (std::size_t i = 0; i < count; ++i) {
    if (experts[i] < num_experts_) counts_[m * num_experts_ + experts[i]] += token_counts ? token_counts[i] : 1;
  }
}

void RoutingProfile::clear() {
  std::fill(tokens_.begin(), tokens_.end(), 0);
  std::fill(counts_.begin(), counts_.end(), 0);
}

Status RoutingProfile::merge(const RoutingProfile& other) {
  ZIPMOE_RETURN_IF_ERROR(other.check_compatible(num_layers_, moe_layers_, num_experts_));
  for (std::size_t i = 0; i < tokens_.size(); ++i) tokens_[i] += other.tokens_[i];
  for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  return Status::Ok();
}

double RoutingProfile::probability(std::size_t moe_index, std::size_t expert) const {
  const std::uint64_t t = tokens_[moe_index];
  if (t == 0) return num_experts_ ? double(experts_per_token_) / double(num_experts_) : 0.0;
  return double(count(moe_index, expert)) / double(t);
}

std::uint64_t RoutingProfile::total_tokens() const {
  std::uint64_t most = 0;
  for (std::uint64_t t : tokens_) most = std::max(most, t);
  return most;
}

std::string RoutingProfile::to_json() const {
  std::ostringstream out;
  std::string arch;
  {
    json::Value v = json::Value::string(architecture_);
    arch = json::serialize(v);
  }
  out << "{\"format\": \"" << kFormatName << "\", \"version\": " << kFormatVersion << ", \"architecture\": " << arch
      << ", \"num_layers\": " << num_layers_ << ", \"num_experts\": " << num_experts_
      << ", \"experts_per_token\": " << experts_per_token_ << ", \"layers\": [";
  for (std::size_t m = 0; m < moe_layers_.size(); ++m) {
    out << (m ? ",\n  " : "\n  ") << "{\"layer\": " << moe_layers_[m] << ", \"tokens\": " << tokens_[m]
        << ", \"counts\": [";
    for (std::size_t e = 0; e < num_experts_; ++e) out << (e ? ", " : "") << counts_[m * num_experts_ + e];
    out << "]}";
  }
  out << "]}\n";
  return out.str();
}

namespace {

Status get_int(const json::Value& object, const char* key, std::int64_t low, std::int64_t high, std::int64_t* out) {
  const json::Value* v = object.find(key);
  if (!v) return Status::Format(std::string("routing profile: '") + key + "' is missing");
  if (!v->is_integer()) return Status::Format(std::string("routing profile: '") + key + "' must be an integer");
  if (v->as_int() < low || v->as_int() > high) {
    return Status::Format(std::string("routing profile: '") + key + "' is " + std::to_string(v->as_int()) +
                          ", outside [" + std::to_string(low) + ", " + std::to_string(high) + "]");
  }
  *out = v->as_int();
  return Status::Ok();
}

}  // namespace

Status RoutingProfile::from_json(const std::string& text, RoutingProfile* out) {
  json::Value doc;
  ZIPMOE_RETURN_IF_ERROR(json::parse(text, &doc).with_context("routing profile"));
  if (!doc.is_object()) return Status::Format("routing profile: the document is not a JSON object");
  const json::Value* format = doc.find("format");
  if (!format || !format->is_string() || format->as_string() != kFormatName) {
    return Status::Format(std::string("routing profile: 'format' must be \"") + kFormatName + "\"");
  }
  std::int64_t version = 0, num_layers = 0, num_experts = 0, per_token = 0;
  ZIPMOE_RETURN_IF_ERROR(get_int(doc, "version", 1, std::numeric_limits<std::int64_t>::max(), &version));
  if (version != kFormatVersion) {
    return Status::Format("routing profile: version " + std::to_string(version) + " is not supported (this build reads " +
                          std::to_string(kFormatVersion) + ")");
  }
  ZIPMOE_RETURN_IF_ERROR(get_int(doc, "num_layers", 1, kMaxLayers, &num_layers));
  ZIPMOE_RETURN_IF_ERROR(get_int(doc, "num_experts", 1, kMaxExperts, &num_experts));
  ZIPMOE_RETURN_IF_ERROR(get_int(doc, "experts_per_token", 1, num_experts, &per_token));
  std::string architecture;
  if (const json::Value* a = doc.find("architecture")) {
    if (!a->is_string()) return Status::Format("routing profile: 'architecture' must be a string");
    architecture = a->as_string();
  }
  const json::Value* layers = doc.find("layers");
  if (!layers || !layers->is_array()) return Status::Format("routing profile: 'layers' must be an array");
  if (static_cast<std::int64_t>(layers->items().size()) > num_layers) {
    return Status::Format("routing profile: more entries in 'layers' than num_layers");
  }
  std::vector<std::uint32_t> moe_layers;
  for (const json::Value& entry : layers->items()) {
    if (!entry.is_object()) return Status::Format("routing profile: every entry of 'layers' must be an object");
    std::int64_t layer = 0;
    ZIPMOE_RETURN_IF_ERROR(get_int(entry, "layer", 0, num_layers - 1, &layer));
    if (!moe_layers.empty() && static_cast<std::uint32_t>(layer) <= moe_layers.back()) {
      return Status::Format("routing profile: layers must be listed once each, in increasing order");
    }
    moe_layers.push_back(static_cast<std::uint32_t>(layer));
  }
  RoutingProfile profile(architecture, static_cast<std::size_t>(num_layers), moe_layers,
                         static_cast<std::size_t>(num_experts), static_cast<std::size_t>(per_token));
  for (std::size_t m = 0; m < moe_layers.size(); ++m) {
    const json::Value& entry = layers->items()[m];
    const std::string where = "routing profile: layer " + std::to_string(moe_layers[m]);
    std::int64_t tokens = 0;
    ZIPMOE_RETURN_IF_ERROR(get_int(entry, "tokens", 0, std::int64_t(1) << 52, &tokens));
    const json::Value* counts = entry.find("counts");
    if (!counts || !counts->is_array() || counts->items().size() != static_cast<std::size_t>(num_experts)) {
      return Status::Format(where + ": 'counts' must be an array of num_experts integers");
    }
    profile.tokens_[m] = static_cast<std::uint64_t>(tokens);
    for (std::size_t e = 0; e < counts->items().size(); ++e) {
      const json::Value& c = counts->items()[e];
      if (!c.is_integer() || c.as_int() < 0 || c.as_int() > tokens) {
        return Status::Format(where + ": count of expert " + std::to_string(e) +
                              " must be an integer in [0, tokens]");
      }
      profile.counts_[m * profile.num_experts_ + e] = static_cast<std::uint64_t>(c.as_int());
    }
  }
  *out = std::move(profile);
  return Status::Ok();
}

Status RoutingProfile::check_compatible(std::size_t num_layers, const std::vector<std::uint32_t>& moe_layers,
                                        std::size_t num_experts) const {
  if (num_layers != num_layers_ || num_experts != num_experts_ || moe_layers != moe_layers_) {
    return Status::InvalidArgument("routing profile is for a model with " + std::to_string(num_layers_) +
                                   " layers (" + std::to_string(moe_layers_.size()) + " MoE) of " +
                                   std::to_string(num_experts_) + " experts, this model has " +
                                   std::to_string(num_layers) + " layers (" + std::to_string(moe_layers.size()) +
                                   " MoE) of " + std::to_string(num_experts) + " experts");
  }
  return Status::Ok();
}

Status load_routing_profile(const std::string& path, RoutingProfile* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Io(path + ": cannot open the routing profile");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::Io(path + ": cannot read the routing profile");
  return RoutingProfile::from_json(text.str(), out).with_context(path);
}

}  // namespace zipmoe::cache
