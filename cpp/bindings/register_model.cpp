// The inference engine (zipmoe.Model; the Python face is python/zipmoe/model.py).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bindings/arguments.h"
#include "bindings/bindings.h"
#include "common/cpu_features.h"
#include "model/config.h"
#include "model/context_impl.h"
#include "model/model_impl.h"
#include "zipmoe/model.h"
#include "zipmoe/sampler.h"

namespace zipmoe::bindings {

namespace {

using TokenArray = py::array_t<std::int64_t, py::array::c_style>;
using LogitsArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Ids of a history (may be empty) as int32; their range is checked against the
// vocabulary by Sampler::sample.
std::vector<std::int32_t> history_ids(const TokenArray& tokens) {
  if (tokens.ndim() != 1) throw InvalidArgumentError("history must be one-dimensional");
  const std::int64_t* data = tokens.data();
  const std::size_t n = static_cast<std::size_t>(tokens.shape(0));
  std::vector<std::int32_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (data[i] < 0 || data[i] > INT32_MAX) {
      throw InvalidArgumentError("history token " + std::to_string(data[i]) + " at index " + std::to_string(i) +
                                 " is out of range");
    }
    out[i] = static_cast<std::int32_t>(data[i]);
  }
  return out;
}

// Checks ids against the vocabulary (before narrowing) and copies them to int32.
std::vector<std::int32_t> token_ids(const TokenArray& tokens, std::size_t vocab) {
  if (tokens.ndim() != 1) throw InvalidArgumentError("token_ids must be one-dimensional");
  const std::int64_t* data = tokens.data();
  const std::size_t n = static_cast<std::size_t>(tokens.shape(0));
  if (n == 0) throw InvalidArgumentError("token_ids is empty");
  std::vector<std::int32_t> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (data[i] < 0 || static_cast<std::uint64_t>(data[i]) >= vocab) {
      throw InvalidArgumentError("token id " + std::to_string(data[i]) + " at index " + std::to_string(i) +
                                 " is outside [0, " + std::to_string(vocab) + ")");
    }
    out[i] = static_cast<std::int32_t>(data[i]);
  }
  return out;
}

py::dict info_dict(const ModelInfo& info) {
  py::dict d;
  d["architecture"] = info.architecture;
  d["vocab_size"] = info.vocab_size;
  d["hidden_size"] = info.hidden_size;
  d["num_layers"] = info.num_layers;
  d["num_heads"] = info.num_heads;
  d["num_kv_heads"] = info.num_kv_heads;
  d["num_experts"] = info.num_experts;
  d["experts_per_token"] = info.experts_per_token;
  d["num_moe_layers"] = info.num_moe_layers;
  d["max_position_embeddings"] = info.max_position_embeddings;
  d["max_context"] = info.max_context;
  return d;
}

py::dict tier_dict(const std::uint64_t (&values)[kNumExpertTiers]) {
  py::dict d;
  for (int t = 0; t < kNumExpertTiers; ++t) d[expert_tier_name(static_cast<ExpertTier>(t))] = values[t];
  return d;
}

py::dict layer_stats_dict(const ExpertLayerStats& s) {
  py::dict d;
  d["layer"] = s.layer;
  d["requests"] = s.requests;
  d["hits"] = s.hits();
  d["misses"] = s.misses();
  d["served_from"] = tier_dict(s.served_from);
  d["prefetch_hits"] = s.prefetch_hits;
  d["bytes_read"] = s.bytes_read;
  d["prefetch_bytes_read"] = s.prefetch_bytes_read;
  d["unused_bytes_read"] = s.unused_bytes_read;
  d["reread_bytes"] = s.reread_bytes;
  d["chunks_read"] = s.chunks_read;
  d["read_seconds"] = double(s.read_ns) * 1e-9;
  d["decoded_bytes"] = s.decoded_bytes;
  d["unused_decoded_bytes"] = s.unused_decoded_bytes;
  d["fused_decoded_bytes"] = s.fused_decoded_bytes;
  d["decode_seconds"] = double(s.decode_ns) * 1e-9;
  d["stall_seconds"] = double(s.stall_ns) * 1e-9;
  return d;
}

py::dict stats_dict(const ExpertCacheStats& s) {
  py::dict d;
  d["streaming"] = s.enabled;
  d["total"] = layer_stats_dict(s.total);
  py::list layers;
  for (const ExpertLayerStats& l : s.layers) layers.append(layer_stats_dict(l));
  d["layers"] = layers;
  d["experts_in"] = tier_dict(s.experts_in);
  d["tier_bytes"] = tier_dict(s.tier_bytes);
  d["tier_capacity"] = tier_dict(s.tier_capacity);
  d["working_set_bytes"] = s.working_set_bytes;
  d["decode_buffers"] = s.decode_buffers;
  d["fetch_buffers"] = s.fetch_buffers;
  d["prefetches"] = s.prefetches;
  d["prefetches_used"] = s.prefetches_used;
  d["prefetches_cancelled"] = s.prefetches_cancelled;
  d["admissions"] = s.admissions;
  d["evictions"] = s.evictions;
  d["steps"] = s.steps;
  d["replans"] = s.replans;
  d["read_latency"] = s.read_latency;
  d["other_cpu_seconds"] = s.other_cpu_seconds;
  d["storage_bandwidth"] = s.storage_bandwidth;
  d["decode_throughput"] = s.decode_throughput;
  d["planned_seconds_per_token"] = s.planned_seconds_per_token;
  d["load_bytes_read"] = s.load_bytes_read;
  d["replan_dropped_bytes"] = s.replan_dropped_bytes;
  d["replan_demotions"] = s.replan_demotions;
  d["io_busy_seconds"] = s.io_busy_seconds;
  d["forward_seconds"] = s.forward_seconds;
  const PlannerReport& p = s.planner;
  py::dict planner;
  planner["source"] = p.source;
  planner["storage_bandwidth"] = p.storage_bandwidth;
  planner["read_latency"] = p.read_latency;
  planner["decode_throughput"] = p.decode_throughput;
  planner["coded_decode_throughput"] = p.coded_decode_throughput;
  planner["matmul_throughput"] = p.matmul_throughput;
  planner["merge_throughput"] = p.merge_throughput;
  planner["other_cpu_seconds"] = p.other_cpu_seconds;
  planner["seconds_per_token"] = p.seconds_per_token;
  planner["raw_seconds_per_token"] = p.raw_seconds_per_token;
  planner["compressed_slower_than_raw"] = p.compressed_slower_than_raw;
  planner["choice"] = p.choice;
  planner["warning"] = p.warning;
  d["planner"] = planner;
  py::list timeline;
  for (const FetchTimelineEvent& e : s.timeline) {
    py::dict event;
    event["kind"] = e.kind;
    event["thread"] = e.thread;
    event["start"] = e.start;
    event["end"] = e.end;
    if (e.kind == "read" || e.kind == "decode" || e.kind == "fused") {
      event["prefetch"] = e.prefetch;
      event["layer"] = e.layer;
      event["expert"] = e.expert;
      event["projection"] = e.projection;
      if (e.kind == "read") event["plane"] = e.sm ? "sm" : "exponent";
    }
    timeline.append(event);
  }
  d["timeline"] = timeline;
  return d;
}

Precision precision_argument(const std::string& name) {
  if (name == "fast") return Precision::kFast;
  if (name == "exact") return Precision::kExact;
  throw InvalidArgumentError("precision must be 'fast' or 'exact', not '" + name + "'");
}

CachePolicy cache_policy_argument(const std::string& name) {
  CachePolicy policy;
  if (!parse_cache_policy(name, &policy)) {
    throw InvalidArgumentError("unknown cache_policy '" + name + "' (use affinity, lru or lfu)");
  }
  return policy;
}

// A mask of expert_tier_bit() of the named states; ABSENT is always allowed.
std::uint8_t tiers_argument(const std::vector<std::string>& names) {
  std::uint8_t mask = expert_tier_bit(ExpertTier::kAbsent);
  for (const std::string& name : names) {
    ExpertTier tier;
    if (!parse_expert_tier(name, &tier)) {
      throw InvalidArgumentError("unknown expert tier '" + name + "' (use full, compressed, sm, e, absent)");
    }
    mask |= expert_tier_bit(tier);
  }
  return mask;
}

py::dict memory_dict(const MemoryUse& use) {
  py::dict d;
  d["dense_weights"] = use.dense_weights;
  d["experts"] = use.experts;
  d["kv_cache"] = use.kv_cache;
  d["scratch"] = use.scratch;
  d["total"] = use.total;
  d["peak"] = use.peak;
  return d;
}

py::array_t<float> logits_array(std::size_t rows, std::size_t vocab) {
  return py::array_t<float>({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(vocab)});
}

LogitRows logit_rows_argument(const std::string& name) {
  if (name == "none") return LogitRows::kNone;
  if (name == "last") return LogitRows::kLast;
  if (name == "all") return LogitRows::kAll;
  throw InvalidArgumentError("logits must be 'none', 'last' or 'all', not '" + name + "'");
}

void register_context_class(py::module_& m) {
  py::class_<Context, std::shared_ptr<Context>>(m, "Context",
                                                "Sequences over a model's weights (use zipmoe.Model.new_context).")
      .def(
          "logits",
          [](Context& context, const TokenArray& tokens, std::size_t sequence) {
            const std::size_t vocab = context.impl().model->config.vocab_size;
            const std::vector<std::int32_t> ids = token_ids(tokens, vocab);
            py::array_t<float> out = logits_array(ids.size(), vocab);
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              context.logits(ids.data(), ids.size(), data, sequence);
            }
            return out;
          },
          py::arg("tokens"), py::arg("sequence") = 0)
      .def(
          "eval",
          [](Context& context, const TokenArray& tokens, bool last_only, std::size_t sequence) {
            const std::size_t vocab = context.impl().model->config.vocab_size;
            const std::vector<std::int32_t> ids = token_ids(tokens, vocab);
            py::array_t<float> out = logits_array(last_only ? 1 : ids.size(), vocab);
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              context.eval(ids.data(), ids.size(), data, last_only, sequence);
            }
            return out;
          },
          py::arg("tokens"), py::arg("last_only") = false, py::arg("sequence") = 0)
      .def(
          "decode",
          [](Context& context, const std::vector<std::tuple<std::size_t, TokenArray, std::string>>& batch) {
            // [(sequence, token ids, "none" | "last" | "all")] -> logits rows [rows, vocab]
            const std::size_t vocab = context.impl().model->config.vocab_size;
            std::vector<std::vector<std::int32_t>> ids;
            std::vector<SequenceTokens> entries;
            std::size_t rows = 0;
            for (const auto& [sequence, tokens, wanted] : batch) {
              ids.push_back(token_ids(tokens, vocab));
              SequenceTokens e;
              e.sequence = sequence;
              e.count = ids.back().size();
              e.logits = logit_rows_argument(wanted);
              rows += e.logits == LogitRows::kAll ? e.count : e.logits == LogitRows::kLast ? 1 : 0;
              entries.push_back(e);
            }
            for (std::size_t i = 0; i < entries.size(); ++i) entries[i].tokens = ids[i].data();
            py::array_t<float> out = logits_array(rows, vocab);
            float* data = rows ? out.mutable_data() : nullptr;
            {
              py::gil_scoped_release release;
              context.decode(entries.data(), entries.size(), data);
            }
            return out;
          },
          py::arg("batch"))
      .def(
          "reset",
          [](Context& context, std::optional<std::size_t> sequence) {
            if (sequence) {
              context.reset(*sequence);
            } else {
              context.reset();
            }
          },
          py::arg("sequence") = py::none())
      .def("truncate", &Context::truncate, py::arg("sequence"), py::arg("position"))
      .def("position", &Context::position, py::arg("sequence") = 0)
      .def("tokens", &Context::tokens, py::arg("sequence") = 0)
      .def_property_readonly("max_context", &Context::max_context)
      .def_property_readonly("max_sequences", &Context::max_sequences)
      .def_property_readonly("memory_bytes", &Context::memory_bytes);
}

void register_model_class(py::module_& m) {
  py::class_<Model, std::shared_ptr<Model>>(m, "Model", "Native inference engine (use zipmoe.load).")
      .def(py::init([](const std::string& path, int threads, std::size_t max_context,
                       const std::optional<std::string>& isa, const std::string& precision,
                       const std::string& kv_cache_dtype, std::size_t batch, const std::string& io,
                       std::uint64_t memory_budget, const std::string& cache_policy, bool prefetch,
                       const std::optional<std::vector<std::string>>& tiers, const std::string& routing_profile,
                       double storage_bandwidth, double decode_throughput, bool reorder_fetches, int io_threads) {
             ModelOptions options;
             options.threads = threads;
             options.max_context = max_context;
             options.isa = isa_argument(isa);
             options.precision = precision_argument(precision);
             options.kv_cache_dtype = dtype_argument(kv_cache_dtype, "kv_cache_dtype");
             options.batch = batch;
             options.io_mode = io_mode_argument(io);
             options.memory_budget = memory_budget;
             options.cache_policy = cache_policy_argument(cache_policy);
             options.prefetch = prefetch;
             if (tiers) options.allowed_tiers = tiers_argument(*tiers);
             options.routing_profile = routing_profile;
             options.storage_bandwidth = storage_bandwidth;
             options.decode_throughput = decode_throughput;
             options.reorder_fetches = reorder_fetches;
             options.io_threads = io_threads;
             py::gil_scoped_release release;
             return std::make_shared<Model>(Model::load(path, options));
           }),
           py::arg("path"), py::arg("threads") = 0, py::arg("max_context") = 0, py::arg("isa") = py::none(),
           py::arg("precision") = "fast", py::arg("kv_cache_dtype") = "f32", py::arg("batch") = 0,
           py::arg("io") = "pread", py::arg("memory_budget") = 0, py::arg("cache_policy") = "affinity",
           py::arg("prefetch") = true, py::arg("tiers") = py::none(), py::arg("routing_profile") = "",
           py::arg("storage_bandwidth") = 0.0, py::arg("decode_throughput") = 0.0,
           py::arg("reorder_fetches") = true, py::arg("io_threads") = 0)
      .def(
          "logits",
          [](Model& model, const TokenArray& tokens) {
            const std::size_t vocab = model.info().vocab_size;
            const std::vector<std::int32_t> ids = token_ids(tokens, vocab);
            py::array_t<float> out({static_cast<py::ssize_t>(ids.size()), static_cast<py::ssize_t>(vocab)});
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              model.logits(ids.data(), ids.size(), data);
            }
            return out;
          },
          py::arg("tokens"))
      .def(
          "eval",
          [](Model& model, const TokenArray& tokens, bool last_only) {
            const std::size_t vocab = model.info().vocab_size;
            const std::vector<std::int32_t> ids = token_ids(tokens, vocab);
            const std::size_t rows = last_only ? 1 : ids.size();
            py::array_t<float> out({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(vocab)});
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              model.eval(ids.data(), ids.size(), data, last_only);
            }
            return out;
          },
          py::arg("tokens"), py::arg("last_only") = false)
      .def("reset", &Model::reset)
      .def_property_readonly("position", &Model::position)
      .def(
          "new_context",
          [](Model& model, std::size_t max_context, std::size_t max_sequences) {
            ContextOptions options;
            options.max_context = max_context;
            options.max_sequences = max_sequences;
            py::gil_scoped_release release;
            return std::make_shared<Context>(model.new_context(options));
          },
          py::arg("max_context") = 0, py::arg("max_sequences") = 1)
      .def_property_readonly("default_context",
                             [](const std::shared_ptr<Model>& model) {
                               // shares the model's ownership: the model lives while the context is referenced
                               return std::shared_ptr<Context>(model, &model->default_context());
                             })
      .def_property_readonly("tokenizer",
                             [](const Model& model) {
                               std::shared_ptr<const text::Tokenizer> t;
                               throw_if_error(model.impl().tokenizer(&t));
                               return std::const_pointer_cast<text::Tokenizer>(t);
                             })
      .def_property_readonly("eos_token_ids", &Model::eos_token_ids)
      .def_property_readonly("info", [](const Model& model) { return info_dict(model.info()); })
      .def_property_readonly("config_json", [](const Model& model) { return model.info().config_json; })
      .def("memory", [](const Model& model) { return memory_dict(model.memory()); })
      .def("stats", [](const Model& model) { return stats_dict(model.stats()); })
      .def("reset_stats", &Model::reset_stats)
      .def("routing_profile_json", &Model::routing_profile_json)
      .def_property_readonly("num_threads", &Model::num_threads)
      .def_property_readonly("isa", [](const Model& model) { return std::string(isa_name(model.isa())); })
      .def_property_readonly("path", &Model::path);
}

// A (vocab,) row or the last row of a (rows, vocab) array, as eval() returns them: its start in *row, and vocab.
std::size_t last_row(const LogitsArray& logits, const float** row) {
  if (logits.ndim() != 1 && logits.ndim() != 2) {
    throw InvalidArgumentError("logits must be a (vocab,) or (rows, vocab) array");
  }
  const std::size_t vocab = static_cast<std::size_t>(logits.shape(logits.ndim() - 1));
  const std::size_t rows = logits.ndim() == 2 ? static_cast<std::size_t>(logits.shape(0)) : 1;
  if (rows == 0) throw InvalidArgumentError("logits has no row");
  *row = logits.data() + (rows - 1) * vocab;
  return vocab;
}

void register_sampler_class(py::module_& m) {
  py::class_<Sampler>(m, "Sampler",
                      "Next-token sampler (include/zipmoe/sampler.h); zipmoe.Model.generate uses it.")
      .def(py::init([](float temperature, int top_k, float top_p, float min_p, float repetition_penalty,
                       float presence_penalty, std::size_t penalty_last_n, std::uint64_t seed,
                       float frequency_penalty) {
             SamplerOptions options;
             options.temperature = temperature;
             options.top_k = top_k;
             options.top_p = top_p;
             options.min_p = min_p;
             options.repetition_penalty = repetition_penalty;
             options.presence_penalty = presence_penalty;
             options.penalty_last_n = penalty_last_n;
             options.seed = seed;
             options.frequency_penalty = frequency_penalty;
             return Sampler(options);
           }),
           py::arg("temperature") = 1.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f,
           py::arg("repetition_penalty") = 1.0f, py::arg("presence_penalty") = 0.0f,
           py::arg("penalty_last_n") = 0, py::arg("seed") = 0, py::arg("frequency_penalty") = 0.0f)
      .def(
          "sample",
          [](Sampler& sampler, const LogitsArray& logits) {
            const float* row = nullptr;
            const std::size_t vocab = last_row(logits, &row);
            py::gil_scoped_release release;
            return sampler.sample(row, vocab);
          },
          py::arg("logits"))
      .def(
          "set_history",
          [](Sampler& sampler, const TokenArray& tokens) {
            const std::vector<std::int32_t> ids = history_ids(tokens);
            sampler.set_history(ids.data(), ids.size());
          },
          py::arg("tokens"))
      .def("accept", &Sampler::accept, py::arg("token"))
      .def("reseed", &Sampler::reseed, py::arg("seed"))
      .def_property_readonly("history", &Sampler::history);

  m.def(
      "token_logprobs",
      [](const LogitsArray& logits, std::int32_t token, std::size_t top_n) {
        const float* row = nullptr;
        const std::size_t vocab = last_row(logits, &row);
        TokenLogprobs result;
        {
          py::gil_scoped_release release;
          result = token_logprobs(row, vocab, token, top_n);
        }
        py::list top;
        for (const TokenLogprob& entry : result.top) top.append(py::make_tuple(entry.token, entry.logprob));
        return py::make_tuple(result.chosen.logprob, top);
      },
      py::arg("logits"), py::arg("token"), py::arg("top_n") = 0,
      "(logprob of token, [(id, logprob) of the top_n likeliest]) under the softmax of a raw logits row, "
      "the last row of a (rows, vocab) array (include/zipmoe/sampler.h).");

  m.def(
      "check_model_config",
      [](const std::string& metadata_json) {
        model::ModelConfig config;
        throw_if_error(model::parse_model_config(metadata_json, &config));
      },
      py::arg("metadata_json"),
      "Checks a container's metadata (architecture and config) by the rules the engine loads it with: "
      "FormatError for a malformed or inconsistent config, UnsupportedModelError for what the engine cannot run.");
}

}  // namespace

void register_model(py::module_& m) {
  m.attr("MAX_SEQUENCES") = kMaxSequences;
  register_context_class(m);
  register_model_class(m);
  register_sampler_class(m);
}

}  // namespace zipmoe::bindings
