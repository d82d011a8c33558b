// The tiered expert cache: the planner, the policies, routing profiles, memory
// blocks, and ExpertCache inside whole models built here from random weights:
// logits bit-identical to the resident run for every budget from the minimum to
// everything, every policy, tier set, thread count, I/O mode and prefetch
// setting; the minimum budget reported; statistics that add up; a file
// truncated or overwritten under a running model failing that call only.
// The Python side (tests/python/test_cache.py) adds transformers models and the
// resident-size check over a long generation.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cache/coded_product.h"
#include "cache/machine_profile.h"
#include "cache/planner.h"
#include "cache/policy.h"
#include "cache/routing_profile.h"
#include "common/memory_block.h"
#include "common/memory_ledger.h"
#include "common/cpu_features.h"
#include "common/json.h"
#include "format/container_file.h"
#include "kernels/kernels.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/container.h"
#include "zipmoe/model.h"

using namespace zipmoe;
using namespace zipmoe::cache;

namespace {

// ------------------------------------------------------------------ planner

ExpertCosts expert(double probability, std::uint32_t group, std::uint64_t n = 1 << 20) {
  // BF16 expert of n elements: E plane ~ n/3 bytes, SM plane n bytes, decoded 2n.
  ExpertCosts c;
  const std::uint64_t e = n / 3, sm = n, decoded = 2 * n;
  c.bytes = {decoded, e + sm, sm, e, 0};
  c.reads = {0, 0, 3, 3, 6};
  c.read_bytes = {0, 0, e, sm, e + sm};
  c.decoded_bytes = decoded;
  c.probability = probability;
  c.group = group;
  return c;
}

std::vector<ExpertCosts> layer_of(const std::vector<double>& probabilities, std::uint32_t groups = 1) {
  std::vector<ExpertCosts> out;
  for (std::uint32_t g = 0; g < groups; ++g) {
    for (double p : probabilities) out.push_back(expert(p, g));
  }
  return out;
}

}  // namespace

ZTEST(cache_planner_stays_within_budget_and_prefers_hot_experts) {
  CostModel model;
  model.storage_bytes_per_second = 1.3e9;
  model.decode_bytes_per_second = 6e9;
  const std::vector<double> p = {0.9, 0.5, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02};  // sums to k = 2
  const std::vector<ExpertCosts> experts = layer_of(p, 3);
  const std::uint64_t one = 1 << 20;

  const TierPlan none = plan_tiers(experts, 3, 2, kAllExpertTiers, 0, model);
  for (ExpertTier t : none.tiers) ZCHECK(t == ExpertTier::kAbsent);
  ZCHECK_EQ(none.bytes, 0u);
  ZCHECK(std::fabs(none.seconds_per_token - none.seconds_per_token_empty) < 1e-12);

  double previous = none.seconds_per_token;
  for (std::uint64_t budget : {one / 2, 2 * one, 5 * one, 12 * one, 30 * one, 100 * one}) {
    const TierPlan plan = plan_tiers(experts, 3, 2, kAllExpertTiers, budget, model);
    std::uint64_t sum = 0;
    for (int t = 0; t < kNumExpertTiers; ++t) sum += plan.capacity[t];
    ZCHECK_EQ(sum, plan.bytes);
    ZCHECK(plan.bytes <= budget);
    ZCHECK(plan.seconds_per_token <= previous + 1e-12);  // more memory never plans slower
    previous = plan.seconds_per_token;
    // Within a layer an expert routed more often never holds fewer bytes than a colder one.
    for (std::uint32_t g = 0; g < 3; ++g) {
      for (std::size_t i = 1; i < p.size(); ++i) {
        if (p[i] == p[i - 1]) continue;
        const ExpertTier hot = plan.tiers[g * p.size() + i - 1], cold = plan.tiers[g * p.size() + i];
        ZCHECK(experts[0].bytes[tier_index(hot)] >= experts[0].bytes[tier_index(cold)]);
      }
    }
  }
  // Room for everything decoded: everything FULL, and nothing left to gain.
  const TierPlan all = plan_tiers(experts, 3, 2, kAllExpertTiers, 100 * one, model);
  for (ExpertTier t : all.tiers) ZCHECK(t == ExpertTier::kFull);
  ZCHECK(all.seconds_per_token < 1e-12);
}

ZTEST(cache_planner_uses_only_allowed_tiers) {
  CostModel model;
  const std::vector<ExpertCosts> experts = layer_of({0.6, 0.4, 0.4, 0.3, 0.2, 0.1}, 2);
  const std::uint8_t paper = expert_tier_bit(ExpertTier::kFull) | expert_tier_bit(ExpertTier::kSm);
  for (std::uint64_t budget : {std::uint64_t(1) << 19, std::uint64_t(3) << 20, std::uint64_t(40) << 20}) {
    const TierPlan plan = plan_tiers(experts, 2, 2, paper, budget, model);
    for (ExpertTier t : plan.tiers) {
      ZCHECK(t == ExpertTier::kFull || t == ExpertTier::kSm || t == ExpertTier::kAbsent);
    }
    ZCHECK_EQ(plan.capacity[tier_index(ExpertTier::kCompressed)], 0u);
    ZCHECK_EQ(plan.capacity[tier_index(ExpertTier::kE)], 0u);
  }
  const TierPlan only_full = plan_tiers(experts, 2, 2, expert_tier_bit(ExpertTier::kFull), std::uint64_t(5) << 20, model);
  int full = 0;
  for (ExpertTier t : only_full.tiers) full += t == ExpertTier::kFull;
  ZCHECK_EQ(full, 2);  // 5 MiB holds two 2 MiB decoded experts
  ZCHECK(only_full.tiers[0] == ExpertTier::kFull);  // the hottest of each layer
  ZCHECK(only_full.tiers[6] == ExpertTier::kFull);
}

ZTEST(cache_planner_layer_cost_model) {
  // io-bound layer: the decode stage hides behind reads except for its 1/k share
  ZCHECK(std::fabs(layer_seconds(4.0, 1.0, 4) - 4.25) < 1e-12);
  ZCHECK(std::fabs(layer_seconds(1.0, 4.0, 4) - 4.25) < 1e-12);
  CostModel model;
  model.storage_bytes_per_second = 1e9;
  model.read_latency_seconds = 1e-4;
  model.decode_bytes_per_second = 4e9;
  const ExpertCosts e = expert(1.0, 0, 1000000);
  ZCHECK(std::fabs(expert_io_seconds(e, ExpertTier::kAbsent, model) - (6e-4 + (333333.0 + 1e6) / 1e9)) < 1e-12);
  ZCHECK(std::fabs(expert_io_seconds(e, ExpertTier::kSm, model) - (3e-4 + 333333.0 / 1e9)) < 1e-12);
  ZCHECK_EQ(expert_io_seconds(e, ExpertTier::kCompressed, model), 0.0);
  ZCHECK_EQ(expert_decode_seconds(e, ExpertTier::kFull, model), 0.0);
  ZCHECK(std::fabs(expert_decode_seconds(e, ExpertTier::kE, model) - 2e6 / 4e9) < 1e-15);
}

ZTEST(cache_planner_prices_compressed_hits_at_the_coded_rate) {
  CostModel model;
  model.storage_bytes_per_second = 4e9;
  model.read_latency_seconds = 80e-6;
  model.decode_bytes_per_second = 1e9;
  model.other_cpu_seconds = 2e-3;  // CPU-bound: decoding competes with the layer's other work
  const ExpertCosts e = expert(1.0, 0, 1000000);
  ZCHECK(std::fabs(expert_decode_seconds(e, ExpertTier::kCompressed, model) - 2e6 / 1e9) < 1e-15);
  const std::vector<ExpertCosts> experts = layer_of({0.9, 0.5, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02}, 3);
  const std::uint64_t budget = std::uint64_t(8) << 20;
  auto compressed = [](const TierPlan& plan) {
    int n = 0;
    for (ExpertTier t : plan.tiers) n += t == ExpertTier::kCompressed;
    return n;
  };
  // Decoded whole on every use, a COMPRESSED expert saves only its read, which a
  // CPU-bound layer hides: the memory goes to FULL experts.
  const TierPlan whole = plan_tiers(experts, 3, 2, kAllExpertTiers, budget, model);
  ZCHECK_EQ(compressed(whole), 0);
  // Decoded into its products at 8x the rate, it saves more per byte than FULL.
  model.coded_decode_bytes_per_second = 8e9;
  ZCHECK(std::fabs(expert_decode_seconds(e, ExpertTier::kCompressed, model) - 2e6 / 8e9) < 1e-15);
  ZCHECK(std::fabs(expert_decode_seconds(e, ExpertTier::kSm, model) - 2e6 / 1e9) < 1e-15);  // misses decode whole
  const TierPlan coded = plan_tiers(experts, 3, 2, kAllExpertTiers, budget, model);
  ZCHECK(compressed(coded) > 0);
  ZCHECK(coded.seconds_per_token < whole.seconds_per_token);
  // plan_totals prices a plan as plan_tiers does, and splits it into its parts.
  const PlanTotals totals = plan_totals(experts, coded.tiers, 3, 2, model);
  ZCHECK(std::fabs(totals.seconds - coded.seconds_per_token) < 1e-12);
  ZCHECK(std::fabs(totals.other - 3 * 2e-3) < 1e-12);
  double io = 0, decode = 0;
  for (std::size_t i = 0; i < experts.size(); ++i) {
    io += experts[i].probability * expert_io_seconds(experts[i], coded.tiers[i], model);
    decode += experts[i].probability * expert_decode_seconds(experts[i], coded.tiers[i], model);
  }
  ZCHECK(std::fabs(totals.io - io) < 1e-12);
  ZCHECK(std::fabs(totals.decode - decode) < 1e-12);
}

ZTEST(cache_policies_rank_by_recency_frequency_or_both) {
  // One layer of 4 experts, 1 per token; expert 0 is hot in the prior.
  const std::vector<double> prior = {0.7, 0.1, 0.1, 0.1};
  PolicyRanker lru(CachePolicy::kLru, 1, 4, 1, prior, 16);
  PolicyRanker lfu(CachePolicy::kLfu, 1, 4, 1, prior, 16);
  PolicyRanker affinity(CachePolicy::kAffinity, 1, 4, 1, prior, 16);
  for (PolicyRanker* r : {&lru, &lfu, &affinity}) {
    r->record_tokens(0, 1);
    r->record_use(1, 10, 1);  // expert 1 used at step 10, expert 0 never
  }
  ZCHECK(lru.key(1) > lru.key(0));            // recency wins
  ZCHECK(lfu.key(0) > lfu.key(1));            // frequency wins
  ZCHECK(affinity.key(1) > affinity.key(0));  // a use 10 steps ago beats 0.7 * 4 * 4 = 11.2? no:
  // horizon = E / k = 4 steps; r(0) ~ 2.6 -> bonus ~10.5 < 10 + r(1) * 4
  ZCHECK(std::fabs(lfu.relative_frequency(0) - (16 * 0.7 / 17) * 4) < 1e-9);
  // Much later, the hot expert's bonus lets it outrank a cold one used a little later.
  for (PolicyRanker* r : {&lru, &affinity}) {
    r->record_use(0, 100, 1);
    r->record_use(2, 101, 1);
  }
  ZCHECK(lru.key(2) > lru.key(0));
  ZCHECK(affinity.key(0) > affinity.key(2));
}

// ------------------------------------------------------------------ profiles

ZTEST(cache_routing_profile_round_trips_and_rejects_malformed_documents) {
  RoutingProfile p("qwen2_moe", 3, {1, 2}, 4, 2);
  const std::uint32_t experts[2] = {0, 3}, counts[2] = {3, 1};
  p.add(1, experts, counts, 2, 3);
  p.add(2, experts, nullptr, 2, 1);
  p.add(0, experts, counts, 2, 3);  // not a MoE layer: ignored
  ZCHECK_EQ(p.tokens(0), 3u);
  ZCHECK_EQ(p.count(0, 0), 3u);
  ZCHECK_EQ(p.count(1, 3), 1u);
  ZCHECK(std::fabs(p.probability(0, 0) - 1.0) < 1e-12);
  RoutingProfile q;
  ZCHECK(RoutingProfile::from_json(p.to_json(), &q).ok());
  ZCHECK_EQ(q.to_json(), p.to_json());
  ZCHECK(q.check_compatible(3, {1, 2}, 4).ok());
  ZCHECK(!q.check_compatible(3, {2}, 4).ok());
  ZCHECK(q.merge(p).ok());
  ZCHECK_EQ(q.count(0, 0), 6u);

  const std::string good = R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 2,
    "experts_per_token": 1, "layers": [{"layer": 1, "tokens": 4, "counts": [3, 1]}]})";
  ZCHECK(RoutingProfile::from_json(good, &q).ok());
  const char* bad[] = {
      "", "[]", "{\"format\": \"other\"}",
      R"({"format": "zipmoe-routing-profile", "version": 2, "num_layers": 2, "num_experts": 2, "experts_per_token": 1, "layers": []})",
      R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 2, "experts_per_token": 3, "layers": []})",
      R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 2, "experts_per_token": 1, "layers": [{"layer": 2, "tokens": 1, "counts": [1, 0]}]})",
      R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 2, "experts_per_token": 1, "layers": [{"layer": 1, "tokens": 1, "counts": [1]}]})",
      R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 2, "experts_per_token": 1, "layers": [{"layer": 1, "tokens": 1, "counts": [2, 0]}]})",
      R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 2, "experts_per_token": 1, "layers": [{"layer": 1, "tokens": 1, "counts": [1, 0]}, {"layer": 1, "tokens": 1, "counts": [1, 0]}]})",
      R"({"format": "zipmoe-routing-profile", "version": 1, "num_layers": 2, "num_experts": 99999999, "experts_per_token": 1, "layers": []})",
  };
  for (const char* text : bad) {
    const Status st = RoutingProfile::from_json(text, &q);
    ZCHECK(!st.ok());
    ZCHECK(st.code() == StatusCode::kFormat);
  }
}

ZTEST(cache_memory_blocks_are_charged_and_refused_past_the_limit) {
  MemoryLedger ledger;
  ZCHECK_EQ(MemoryBlock::charged_size(0), 0u);
  ZCHECK_EQ(MemoryBlock::charged_size(1), 64u);
  ZCHECK_EQ(MemoryBlock::charged_size(65536), 65536u);
  ZCHECK_EQ(MemoryBlock::charged_size(65537), 69632u);
  {
    MemoryBlock small, large;
    ZCHECK(small.allocate(&ledger, 100).ok());
    ZCHECK(large.allocate(&ledger, 100000).ok());
    ZCHECK_EQ(reinterpret_cast<std::uintptr_t>(large.data()) % 4096, 0u);
    std::memset(large.data(), 1, large.size());
    ZCHECK_EQ(ledger.bytes(MemoryCategory::kExperts), 128u + 102400u);
    MemoryBlock moved = std::move(large);
    ZCHECK(large.empty() && !moved.empty());
    ledger.set_limit(ledger.total() + 1000);
    MemoryBlock refused;
    const Status st = refused.allocate(&ledger, 5000);
    ZCHECK(st.code() == StatusCode::kBudget);
    ZCHECK(refused.empty());
  }
  ZCHECK_EQ(ledger.total(), 0u);
}

// ------------------------------------------------------------------ whole models

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/zipmoe-cache-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = buf.data();
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::vector<std::uint8_t> random_bf16(std::size_t n, std::uint32_t seed, float scale, float offset) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::uint8_t> out(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint16_t b = ztest::f32_to_bf16_rne(offset + scale * normal(rng));
    std::memcpy(out.data() + 2 * i, &b, 2);
  }
  return out;
}

// A Qwen2-MoE-like model: 3 MoE layers of 8 experts, 2 per token, and a shared
// expert; the router rows are scaled so that some experts are picked far more
// often, as trained routers do.
void write_moe(const std::string& path, Codec codec, std::size_t hidden = 64, std::size_t inner = 96,
               std::uint32_t segment_symbols = 0) {
  const std::size_t E = 8, layers = 3, vocab = 96;
  const std::string metadata = R"({"architecture": "qwen2_moe", "config": {"vocab_size": 96, "hidden_size": )" +
                               std::to_string(hidden) + R"(, "num_hidden_layers": 3, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 128, "moe_intermediate_size": )" + std::to_string(inner) +
                               R"(, "shared_expert_intermediate_size": 64, "num_experts": 8, "num_experts_per_tok": 2,
    "norm_topk_prob": false, "rms_norm_eps": 1e-6, "max_position_embeddings": 256,
    "rope_theta": 10000.0, "hidden_act": "silu"}})";
  ContainerWriterOptions writer_options;
  writer_options.segment_symbols = segment_symbols;
  ContainerWriter writer(path, metadata, writer_options);
  std::uint32_t seed = 7;
  auto add = [&](const std::string& name, std::vector<std::uint64_t> shape, TensorRole role = TensorRole(),
                 bool norm = false, float scale = 0.08f) {
    std::size_t n = 1;
    for (std::uint64_t d : shape) n *= d;
    const std::vector<std::uint8_t> data = random_bf16(n, seed++, norm ? 0.1f : scale, norm ? 1.0f : 0.0f);
    writer.add_tensor(name, data.data(), DType::kBF16, shape, role, codec);
  };
  const std::uint64_t H = hidden, I = inner;
  add("token_embd.weight", {vocab, H}, TensorRole(), false, 1.0f);
  add("output_norm.weight", {H}, TensorRole(), true);
  add("output.weight", {vocab, H});
  for (std::size_t i = 0; i < layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", {H}, TensorRole(), true);
    add(p + "ffn_norm.weight", {H}, TensorRole(), true);
    add(p + "attn_q.weight", {H, H});
    add(p + "attn_k.weight", {H / 2, H});
    add(p + "attn_v.weight", {H / 2, H});
    add(p + "attn_q.bias", {H});
    add(p + "attn_k.bias", {H / 2});
    add(p + "attn_v.bias", {H / 2});
    add(p + "attn_output.weight", {H, H});
    {
      // router: row e scaled by 1 / (1 + e)^0.7 (rotated per layer)
      std::vector<std::uint8_t> router = random_bf16(E * H, seed++, 1.0f, 0.0f);
      for (std::size_t e = 0; e < E; ++e) {
        const float s = 1.0f / std::pow(1.0f + float((e + 3 * i) % E), 0.7f);
        for (std::size_t h = 0; h < H; ++h) {
          std::uint16_t b;
          std::memcpy(&b, router.data() + 2 * (e * H + h), 2);
          std::uint32_t bits = std::uint32_t(b) << 16;
          float v;
          std::memcpy(&v, &bits, 4);
          b = ztest::f32_to_bf16_rne(v * s);
          std::memcpy(router.data() + 2 * (e * H + h), &b, 2);
        }
      }
      writer.add_tensor(p + "ffn_gate_inp.weight", router.data(), DType::kBF16, {E, H}, TensorRole(), codec);
    }
    add(p + "ffn_gate_shexp.weight", {64, H});
    add(p + "ffn_up_shexp.weight", {64, H});
    add(p + "ffn_down_shexp.weight", {H, 64});
    add(p + "ffn_gate_inp_shexp.weight", {1, H});
    for (std::uint32_t e = 0; e < E; ++e) {
      const std::string s = "_exps." + std::to_string(e) + ".weight";
      const std::uint32_t layer = static_cast<std::uint32_t>(i);
      add(p + "ffn_gate" + s, {I, H}, TensorRole::expert_projection(layer, e, "gate"));
      add(p + "ffn_up" + s, {I, H}, TensorRole::expert_projection(layer, e, "up"));
      add(p + "ffn_down" + s, {H, I}, TensorRole::expert_projection(layer, e, "down"));
    }
  }
  writer.finish();
}

std::vector<std::int32_t> token_sequence(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> out(n);
  for (auto& t : out) t = static_cast<std::int32_t>(rng() % 96);
  return out;
}

// A prompt step, then single-token steps: every row of logits.
std::vector<float> run(Model& model, const std::vector<std::int32_t>& tokens, std::size_t prompt) {
  std::vector<float> out = model.logits(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + prompt));
  for (std::size_t i = prompt; i < tokens.size(); ++i) {
    const std::vector<float> step = model.eval({tokens[i]});
    out.insert(out.end(), step.begin(), step.end());
  }
  return out;
}

std::uint64_t minimum_budget(const std::string& path, const ModelOptions& base) {
  ModelOptions options = base;
  options.memory_budget = 1;
  try {
    Model::load(path, options);
  } catch (const BudgetError& e) {
    const std::string text = e.what();
    const std::size_t at = text.find("the minimum is ");
    const std::size_t open = text.find('(', at);
    if (at != std::string::npos && open != std::string::npos) return std::strtoull(text.c_str() + open + 1, nullptr, 10);
  }
  return 0;
}

}  // namespace

ZTEST(cache_logits_match_the_resident_run_for_every_budget_policy_and_setting) {
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kAuto);
  const std::vector<std::int32_t> tokens = token_sequence(40, 3);
  ModelOptions base;
  base.threads = 2;
  base.max_context = 64;
  base.batch = 16;
  base.precision = Precision::kExact;
  Model resident = Model::load(path, base);
  const std::vector<float> expected = run(resident, tokens, 20);
  const std::uint64_t everything = resident.memory().total + (std::uint64_t(1) << 20);

  const std::uint64_t minimum = minimum_budget(path, base);
  ZCHECK(minimum > 0);
  const std::uint64_t budgets[] = {minimum, minimum + 20000, minimum + 60000, minimum + 150000, everything};
  int runs = 0;
  for (std::uint64_t budget : budgets) {
    for (CachePolicy policy : {CachePolicy::kAffinity, CachePolicy::kLru, CachePolicy::kLfu}) {
      ModelOptions options = base;
      options.memory_budget = budget;
      options.cache_policy = policy;
      options.prefetch = runs % 2 == 0;
      options.threads = 1 + runs % 2;
      options.io_mode = runs % 3 == 0 ? IoMode::kPread : runs % 3 == 1 ? IoMode::kDirect : IoMode::kMmap;
      ++runs;
      Model model = Model::load(path, options);
      const std::vector<float> got = run(model, tokens, 20);
      ZCHECK(got == expected);
      const MemoryUse use = model.memory();
      ZCHECK(use.peak <= budget);
      const ExpertCacheStats s = model.stats();
      ZCHECK(s.enabled);
      std::uint64_t served = 0;
      for (int t = 0; t < kNumExpertTiers; ++t) served += s.total.served_from[t];
      ZCHECK_EQ(served, s.total.requests);
      ZCHECK_EQ(s.total.hits() + s.total.misses(), s.total.requests);
      std::uint64_t held = 0;
      for (int t = 0; t < kNumExpertTiers; ++t) {
        ZCHECK(s.tier_bytes[t] <= s.tier_capacity[t]);
        held += s.tier_bytes[t];
      }
      ZCHECK(held + s.working_set_bytes <= use.experts);
    }
  }
  // Restricted tier sets (the paper's FULL + SM, and each state alone).
  for (std::uint8_t mask : {std::uint8_t(expert_tier_bit(ExpertTier::kFull) | expert_tier_bit(ExpertTier::kSm)),
                            expert_tier_bit(ExpertTier::kCompressed), expert_tier_bit(ExpertTier::kE),
                            expert_tier_bit(ExpertTier::kSm), expert_tier_bit(ExpertTier::kFull)}) {
    ModelOptions options = base;
    options.memory_budget = minimum + 120000;
    options.allowed_tiers = mask;
    Model model = Model::load(path, options);
    ZCHECK(run(model, tokens, 20) == expected);
    const ExpertCacheStats s = model.stats();
    for (int t = 0; t < kNumExpertTiers - 1; ++t) {
      if (!(mask & (1u << t))) ZCHECK_EQ(s.experts_in[t] + s.tier_capacity[t], 0u);
    }
  }
}

ZTEST(cache_budget_error_states_the_minimum) {
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kHuffman);
  ModelOptions options;
  options.threads = 1;
  options.max_context = 64;
  const std::uint64_t minimum = minimum_budget(path, options);
  ZCHECK(minimum > 0);
  options.memory_budget = minimum - 1;
  bool refused = false;
  try {
    Model::load(path, options);
  } catch (const BudgetError& e) {
    refused = std::string(e.what()).find("minimum is") != std::string::npos;
  }
  ZCHECK(refused);
  options.memory_budget = minimum;
  Model model = Model::load(path, options);
  ZCHECK(model.memory().total <= minimum);
  const ExpertCacheStats s = model.stats();
  ZCHECK_EQ(s.decode_buffers, 2u);  // k
  ZCHECK_EQ(s.fetch_buffers, 1u);
  ZCHECK_EQ(s.tier_capacity[0] + s.tier_capacity[1] + s.tier_capacity[2] + s.tier_capacity[3], 0u);
  model.logits(token_sequence(10, 1));
}

ZTEST(cache_stats_count_bytes_read_per_request) {
  // Minimum budget, no prefetch: every request reads both planes of its expert,
  // and nothing is ever kept, so bytes read = sum over requests of the stored sizes.
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kRans);
  ModelOptions options;
  options.threads = 2;
  options.max_context = 64;
  options.prefetch = false;
  options.memory_budget = minimum_budget(path, options);
  Model model = Model::load(path, options);
  const ContainerReader reader = ContainerReader::open(path);
  const std::vector<std::int32_t> tokens = token_sequence(12, 9);
  for (std::int32_t t : tokens) model.eval({t});
  const ExpertCacheStats s = model.stats();
  ZCHECK_EQ(s.total.requests, 3u * 2u * tokens.size());
  ZCHECK_EQ(s.total.misses(), s.total.requests);
  // Which experts were asked for: the routing profile (one token per step).
  const std::string profile = model.routing_profile_json();
  RoutingProfile p;
  ZCHECK(RoutingProfile::from_json(profile, &p).ok());
  std::uint64_t expected = 0, chunks = 0;
  for (std::size_t m = 0; m < 3; ++m) {
    ZCHECK_EQ(p.tokens(m), tokens.size());
    for (std::uint32_t e = 0; e < 8; ++e) {
      for (const char* proj : {"gate", "up", "down"}) {
        const TensorInfo* t = reader.find_expert(static_cast<std::uint32_t>(m), e, proj);
        expected += p.count(m, e) * (reader.chunks()[t->exponent_chunk].stored_size + reader.chunks()[t->sm_chunk].stored_size);
        chunks += 2 * p.count(m, e);
      }
    }
  }
  ZCHECK_EQ(s.total.bytes_read, expected);
  ZCHECK_EQ(s.total.chunks_read, chunks);
  ZCHECK_EQ(s.total.prefetch_bytes_read, 0u);
  ZCHECK(s.total.decode_ns > 0);
  model.reset_stats();
  ZCHECK_EQ(model.stats().total.requests, 0u);
}

ZTEST(cache_file_damaged_under_a_running_model_fails_that_call_only) {
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kAuto);
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> original((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const std::vector<std::int32_t> tokens = token_sequence(8, 5);
  ModelOptions base;
  base.threads = 2;
  base.max_context = 64;
  Model resident = Model::load(path, base);
  const std::vector<float> expected = resident.logits(tokens);

  for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    ModelOptions options = base;
    options.io_mode = mode;
    options.memory_budget = minimum_budget(path, base);
    Model model = Model::load(path, options);
    ZCHECK(model.logits(tokens) == expected);
    // Truncated in place: a FormatError ("truncated"), not a crash.
    ZCHECK_EQ(::truncate(path.c_str(), 8192), 0);
    bool failed = false;
    try {
      model.logits(tokens);
    } catch (const FormatError& e) {
      failed = std::string(e.what()).find("truncated") != std::string::npos;
    }
    ZCHECK(failed);
    // Restored: the same model works again.
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(original.data(), static_cast<std::streamsize>(original.size()));
    }
    ZCHECK(model.logits(tokens) == expected);
    // Overwritten in place with other bytes: a ChecksumError naming the file.
    {
      std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
      std::vector<char> junk(original.size() - 8192, 0x5a);
      out.seekp(4096);
      out.write(junk.data(), static_cast<std::streamsize>(junk.size() - 4096 * 4));
    }
    bool checksum = false;
    try {
      model.logits(tokens);
    } catch (const ChecksumError& e) {
      checksum = std::string(e.what()).find(path) != std::string::npos;
    } catch (const FormatError&) {
      checksum = true;  // a coded plane whose damage the checksum of another chunk covers
    }
    ZCHECK(checksum);
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(original.data(), static_cast<std::streamsize>(original.size()));
    }
    model.reset();
    ZCHECK(model.logits(tokens) == expected);
  }
}

// ------------------------------------------------------------------ coded products

ZTEST(cache_coded_products_equal_products_over_the_decoded_weights) {
  // Segments of 1000 elements: rows of 64, 96 and 300 straddle them, rows of
  // 2100 elements span three; gate/up-like and down-like shapes, every dtype.
  struct Shape {
    std::uint64_t rows, cols;
    DType dtype;
  };
  const Shape shapes[] = {{96, 64, DType::kBF16}, {64, 96, DType::kBF16}, {37, 300, DType::kF16},
                          {40, 50, DType::kF32},  {7, 2100, DType::kBF16}, {16, 125, DType::kBF16}};
  TempDir dir;
  const std::string path = dir.file("weights.zmoe");
  {
    ContainerWriterOptions options;
    options.segment_symbols = 1000;
    ContainerWriter writer(path, "{}", options);
    std::uint32_t seed = 3;
    for (const Shape& s : shapes) {
      const std::vector<std::uint8_t> w = ztest::make_weights(s.dtype, s.rows * s.cols, seed++, 0.05, false);
      writer.add_tensor("w" + std::to_string(seed), w.data(), s.dtype, {s.rows, s.cols});
    }
    writer.finish();
  }
  std::unique_ptr<format::ContainerFile> file;
  ZCHECK(format::ContainerFile::open(path, IoMode::kPread, &file).ok());
  ThreadPool pool3(3);
  MemoryLedger ledger;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::size_t t = 0; t < file->tensors().size(); ++t) {
    const TensorInfo& tensor = file->tensors()[t];
    const std::size_t rows = tensor.shape[0], cols = tensor.shape[1];
    std::vector<std::uint8_t> chunks[2];
    for (int plane = 0; plane < 2; ++plane) {
      const std::uint32_t c = plane == 0 ? tensor.exponent_chunk : tensor.sm_chunk;
      chunks[plane].resize(file->chunk_buffer_size(c) + 4096);
      ZCHECK(file->read_chunk(c, chunks[plane].data(), chunks[plane].size()).ok());
    }
    std::vector<std::uint8_t> decoded(tensor.decoded_bytes());
    ZCHECK(file->decode_chunks(tensor, chunks[0].data(), file->chunks()[tensor.exponent_chunk].stored_size,
                               chunks[1].data(), file->chunks()[tensor.sm_chunk].stored_size, decoded.data(),
                               decoded.size(), nullptr, Isa::kScalar)
               .ok());
    CodedProductLimits limits;
    limits.threads = 3;
    limits.max_rows = 8;
    limits.cover(tensor, coded_segment_symbols(chunks[0].data(), chunks[0].size()));
    ZCHECK_EQ(coded_segment_symbols(chunks[0].data(), chunks[0].size()), 1000u);
    for (Isa isa : supported_isas()) {
      CodedProducts products;
      ZCHECK(products.allocate(&ledger, limits, isa).ok());
      ZCHECK_EQ(products.charged_bytes(), CodedProducts::bytes_for(limits, isa));
      ZCHECK_EQ(ledger.bytes(MemoryCategory::kExperts), products.charged_bytes());
      for (auto precision : {kernels::MatmulPrecision::kExact, kernels::MatmulPrecision::kFast}) {
        for (std::size_t m : {std::size_t(1), std::size_t(3), std::size_t(8)}) {
          for (int variant = 0; variant < 3; ++variant) {
            const bool bias = variant >= 1, accumulate = variant == 2;
            std::vector<float> x(m * (cols + 5)), b(rows), y0(m * rows);
            for (float& v : x) v = normal(rng);
            for (float& v : b) v = normal(rng);
            for (float& v : y0) v = normal(rng);
            kernels::LinearJob job;
            job.x = x.data();
            job.m = m;
            job.ldx = cols + 5;
            job.weight = {decoded.data(), tensor.dtype, rows, cols};
            if (bias) job.bias = {b.data(), DType::kF32, rows};
            job.accumulate = accumulate;
            std::vector<float> expected = y0, got1 = y0, got3 = y0;
            job.y = expected.data();
            kernels::Workspace workspace;
            kernels::linear(isa, job, &pool3, &workspace, precision);
            for (int threads : {1, 3}) {
              kernels::LinearJob coded = job;
              coded.weight.data = nullptr;
              coded.y = threads == 1 ? got1.data() : got3.data();
              std::uint64_t decode_ns = 0;
              ZCHECK(products
                         .multiply(*file, tensor, chunks[0].data(), chunks[1].data(), coded, precision, isa,
                                   threads == 1 ? nullptr : &pool3, &decode_ns)
                         .ok());
              ZCHECK(decode_ns > 0);
            }
            ZCHECK(std::memcmp(expected.data(), got1.data(), expected.size() * 4) == 0);
            ZCHECK(std::memcmp(expected.data(), got3.data(), expected.size() * 4) == 0);
          }
        }
      }
      // More rows than the scratch was sized for: refused, nothing written.
      std::vector<float> x(9 * cols), y(9 * rows, 7.0f);
      kernels::LinearJob job;
      job.x = x.data();
      job.m = 9;
      job.weight = {nullptr, tensor.dtype, rows, cols};
      job.y = y.data();
      ZCHECK(!products.multiply(*file, tensor, chunks[0].data(), chunks[1].data(), job,
                                kernels::MatmulPrecision::kExact, isa, nullptr, nullptr)
                  .ok());
    }
  }
}

ZTEST(cache_coded_delivery_matches_the_resident_run_on_every_path) {
  // Segments of 1000 elements: every projection has several, and rows straddle them.
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kAuto, 64, 96, 1000);
  const std::vector<std::int32_t> tokens = token_sequence(24, 4);
  for (Isa isa : supported_isas()) {
    for (Precision precision : {Precision::kExact, Precision::kFast}) {
      ModelOptions base;
      base.threads = 2;
      base.max_context = 64;
      base.batch = 8;
      base.isa = isa;
      base.precision = precision;
      const std::vector<float> expected = run(*std::make_unique<Model>(Model::load(path, base)), tokens, 8);
      const std::uint64_t minimum = minimum_budget(path, base);
      for (std::uint8_t mask : {expert_tier_bit(ExpertTier::kCompressed),
                                std::uint8_t(expert_tier_bit(ExpertTier::kCompressed) | expert_tier_bit(ExpertTier::kFull)),
                                kAllExpertTiers}) {
        for (int threads : {1, 2}) {
          ModelOptions options = base;
          options.threads = threads;
          options.memory_budget = minimum + 400000;
          options.allowed_tiers = mask;
          options.prefetch = threads == 2;
          // Given figures: nothing measured, COMPRESSED experts always multiplied coded.
          options.storage_bandwidth = 1e9;
          options.decode_throughput = 2e9;
          Model model = Model::load(path, options);
          ZCHECK(run(model, tokens, 8) == expected);
          const ExpertCacheStats s = model.stats();
          if (mask == expert_tier_bit(ExpertTier::kCompressed)) {
            // Single-token steps serve COMPRESSED experts coded.
            ZCHECK(s.total.served_from[static_cast<int>(ExpertTier::kCompressed)] > 0);
            ZCHECK(s.total.fused_decoded_bytes > 0);
          }
          ZCHECK(s.total.fused_decoded_bytes <= s.total.decoded_bytes);
        }
      }
    }
  }
}

ZTEST(cache_damaged_chunk_is_a_checksum_error_found_during_the_decode) {
  // One byte changed in every expert's exponent (or sign/mantissa) chunk of the
  // first MoE layer: the reads no longer verify chunks, the decode does, so the
  // request fails with ChecksumError (also when the damage breaks the coded
  // plane's framing), never with wrong logits, and the model works again once
  // the file is whole.
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kHuffman, 64, 96, 1000);
  std::ifstream in(path, std::ios::binary);
  const std::vector<char> original((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const std::vector<std::int32_t> tokens = token_sequence(6, 2);
  ModelOptions base;
  base.threads = 2;
  base.max_context = 64;
  const std::vector<float> expected = Model::load(path, base).logits(tokens);
  const ContainerReader reader = ContainerReader::open(path);
  for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    for (int plane = 0; plane < 2; ++plane) {
      for (std::size_t where : {std::size_t(2), std::size_t(0)}) {  // the plane's header; the middle
        ModelOptions options = base;
        options.io_mode = mode;
        options.prefetch = false;
        options.memory_budget = minimum_budget(path, base);
        Model model = Model::load(path, options);
        ZCHECK(model.logits(tokens) == expected);
        std::vector<char> damaged = original;
        for (std::uint32_t e = 0; e < 8; ++e) {
          for (const char* projection : {"gate", "up", "down"}) {
            const TensorInfo* t = reader.find_expert(0, e, projection);
            const ChunkInfo& c = reader.chunks()[plane == 0 ? t->exponent_chunk : t->sm_chunk];
            const std::size_t at = static_cast<std::size_t>(c.offset) + (where ? where : c.stored_size / 2);
            damaged[at] = static_cast<char>(damaged[at] ^ 0x5a);
          }
        }
        std::fstream out(path, std::ios::binary | std::ios::in | std::ios::out);
        out.write(damaged.data(), static_cast<std::streamsize>(damaged.size()));
        out.close();
        bool checksum = false;
        try {
          model.logits(tokens);
        } catch (const ChecksumError& e) {
          checksum = std::string(e.what()).find(path) != std::string::npos &&
                     std::string(e.what()).find("checksum mismatch") != std::string::npos;
        }
        ZCHECK(checksum);
        std::fstream restore(path, std::ios::binary | std::ios::in | std::ios::out);
        restore.write(original.data(), static_cast<std::streamsize>(original.size()));
        restore.close();
        model.reset();
        ZCHECK(model.logits(tokens) == expected);
      }
    }
  }
}

// ------------------------------------------------------------------ machine profiles

namespace {

// Points ZIPMOE_CACHE_DIR (where machine profiles are stored) at `dir` while alive.
class CacheDirOverride {
 public:
  explicit CacheDirOverride(const std::string& dir) {
    if (const char* old = std::getenv("ZIPMOE_CACHE_DIR")) {
      had_ = true;
      old_ = old;
    }
    ::setenv("ZIPMOE_CACHE_DIR", dir.c_str(), 1);
  }
  ~CacheDirOverride() {
    if (had_) {
      ::setenv("ZIPMOE_CACHE_DIR", old_.c_str(), 1);
    } else {
      ::unsetenv("ZIPMOE_CACHE_DIR");
    }
  }

 private:
  bool had_ = false;
  std::string old_;
};

std::vector<std::string> profile_files(const std::string& cache_dir) {
  std::vector<std::string> out;
  const std::string dir = cache_dir + "/machines";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) out.push_back(dir + "/" + name);
    }
    ::closedir(d);
  }
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Replaces the speeds stored in the profile at `path`, keeping its key.
void set_profile_speeds(const std::string& path, const MachineSpeeds& s) {
  json::Value root;
  ZCHECK(json::parse(read_text(path), &root).ok());
  std::vector<json::Value::Member> members;
  for (const json::Value::Member& m : root.members()) {
    if (m.first == "format" || m.first == "version" || m.first == "key") members.push_back(m);
  }
  members.emplace_back("storage_bandwidth", json::Value::number(s.storage_bandwidth));
  members.emplace_back("read_latency", json::Value::number(s.read_latency));
  members.emplace_back("decode_throughput", json::Value::number(s.decode_throughput));
  members.emplace_back("coded_decode_throughput", json::Value::number(s.coded_decode_throughput));
  members.emplace_back("matmul_throughput", json::Value::number(s.matmul_throughput));
  members.emplace_back("merge_throughput", json::Value::number(s.merge_throughput));
  write_text(path, json::serialize(json::Value::object(std::move(members))));
}

MachineSpeeds speeds(double storage, double latency, double decode, double coded, double matmul, double merge) {
  MachineSpeeds s;
  s.storage_bandwidth = storage;
  s.read_latency = latency;
  s.decode_throughput = decode;
  s.coded_decode_throughput = coded;
  s.matmul_throughput = matmul;
  s.merge_throughput = merge;
  return s;
}

ModelOptions streamed_options(const std::string& path) {
  ModelOptions options;
  options.threads = 2;
  options.max_context = 64;
  options.memory_budget = minimum_budget(path, options) + 400000;
  return options;
}

}  // namespace

ZTEST(cache_machine_profile_round_trips_and_ignores_other_keys) {
  TempDir dir;
  const CacheDirOverride cache_dir(dir.file("profiles"));
  const MachineSpeeds stored = speeds(1.25e9, 9e-5, 3.5e9, 7.25e9, 2.5e10, 1.5e10);
  MachineSpeeds read;
  ZCHECK(!load_machine_profile("machine a", &read));
  save_machine_profile("machine a", stored);
  ZCHECK(load_machine_profile("machine a", &read));
  ZCHECK(read.storage_bandwidth == stored.storage_bandwidth && read.read_latency == stored.read_latency &&
         read.decode_throughput == stored.decode_throughput &&
         read.coded_decode_throughput == stored.coded_decode_throughput &&
         read.matmul_throughput == stored.matmul_throughput && read.merge_throughput == stored.merge_throughput);
  ZCHECK(!load_machine_profile("machine b", &read));
  // A file whose name matches another key's hash still holds its own key.
  const std::vector<std::string> files = profile_files(dir.file("profiles"));
  ZCHECK_EQ(files.size(), 1u);
  // Implausible or damaged contents: measured again.
  set_profile_speeds(files[0], speeds(1.25e9, 9e-5, 0, 0, 2.5e10, 1.5e10));
  ZCHECK(!load_machine_profile("machine a", &read));
  write_text(files[0], "{\"format\": \"zipmoe-machine-profile\", ");
  ZCHECK(!load_machine_profile("machine a", &read));
  // Every key names the file (by inode and modification time), the ISA path, threads and I/O mode.
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kHuffman);
  std::unique_ptr<format::ContainerFile> file;
  ZCHECK(format::ContainerFile::open(path, IoMode::kPread, &file).ok());
  const std::string key = machine_profile_key(*file, Isa::kScalar, 2, IoMode::kPread);
  ZCHECK(key != machine_profile_key(*file, Isa::kScalar, 1, IoMode::kPread));
  ZCHECK(key != machine_profile_key(*file, Isa::kScalar, 2, IoMode::kDirect));
  ZCHECK(key.find("threads=2") != std::string::npos && key.find("file=") != std::string::npos);
}

ZTEST(cache_speeds_are_measured_once_per_machine_and_file) {
  TempDir dir;
  const CacheDirOverride cache_dir(dir.file("profiles"));
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kHuffman);
  ModelOptions options = streamed_options(path);
  const std::vector<std::int32_t> tokens = token_sequence(10, 3);
  PlannerReport first;
  std::vector<float> expected;
  {
    Model model = Model::load(path, options);
    first = model.stats().planner;
    expected = run(model, tokens, 4);
  }
  ZCHECK(first.source == "measured");
  ZCHECK(first.storage_bandwidth > 0 && first.decode_throughput > 0 && first.matmul_throughput > 0 &&
         first.merge_throughput > 0);
  // The layer's other CPU work is estimated from the start (it was 0 until measured while running).
  ZCHECK(first.other_cpu_seconds > 0);
  ZCHECK(first.raw_seconds_per_token > 0 && first.seconds_per_token > 0);
  ZCHECK(first.choice.find("of 24 experts") != std::string::npos);
  ZCHECK_EQ(profile_files(dir.file("profiles")).size(), 1u);
  {
    Model model = Model::load(path, options);
    const PlannerReport again = model.stats().planner;
    ZCHECK(again.source == "cached");
    ZCHECK(again.storage_bandwidth == first.storage_bandwidth && again.decode_throughput == first.decode_throughput &&
           again.matmul_throughput == first.matmul_throughput && again.merge_throughput == first.merge_throughput);
    ZCHECK(run(model, tokens, 4) == expected);
  }
  // The same file rewritten: measured again (a second profile).
  ::usleep(10000);
  write_moe(path, Codec::kHuffman);
  {
    Model model = Model::load(path, options);
    ZCHECK(model.stats().planner.source == "measured");
  }
  ZCHECK_EQ(profile_files(dir.file("profiles")).size(), 2u);
  options.storage_bandwidth = 1e9;
  options.decode_throughput = 2e9;
  {
    Model model = Model::load(path, options);
    const PlannerReport given = model.stats().planner;
    ZCHECK(given.source == "given");
    ZCHECK(given.storage_bandwidth == 1e9 && given.decode_throughput == 4e9);  // of 2 threads
  }
}

ZTEST(cache_planner_warns_when_an_uncompressed_container_would_be_faster) {
  TempDir dir;
  const CacheDirOverride cache_dir(dir.file("profiles"));
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kHuffman);
  const ModelOptions options = streamed_options(path);
  const std::vector<std::int32_t> tokens = token_sequence(10, 5);
  std::vector<float> expected;
  {
    Model model = Model::load(path, options);  // measures the machine and stores its speeds
    expected = run(model, tokens, 4);
  }
  const std::vector<std::string> files = profile_files(dir.file("profiles"));
  ZCHECK_EQ(files.size(), 1u);
  // A fast drive and a slow decoder: reading raw bytes beats decoding fewer.
  set_profile_speeds(files[0], speeds(1e11, 1e-6, 2e7, 0, 1e10, 1e10));
  {
    Model model = Model::load(path, options);
    const PlannerReport r = model.stats().planner;
    ZCHECK(r.source == "cached");
    ZCHECK(r.compressed_slower_than_raw);
    ZCHECK(r.seconds_per_token > r.raw_seconds_per_token);
    ZCHECK(r.warning.find("zipmoe convert --codec raw") != std::string::npos);
    ZCHECK(r.warning.find("decoding 0.02 GB/s") != std::string::npos);
    ZCHECK(run(model, tokens, 4) == expected);  // a warning, nothing else changes
  }
  // A slow drive and a fast decoder: fewer bytes win, no warning.
  set_profile_speeds(files[0], speeds(1e7, 1e-4, 1e10, 0, 1e10, 1e10));
  {
    Model model = Model::load(path, options);
    const PlannerReport r = model.stats().planner;
    ZCHECK(r.source == "cached");
    ZCHECK(!r.compressed_slower_than_raw && r.warning.empty());
    ZCHECK(r.seconds_per_token < r.raw_seconds_per_token);
    ZCHECK(r.choice.find("read-bound") != std::string::npos);
  }
}

ZTEST(cache_replans_only_for_a_clearly_better_plan) {
  // Room for every expert decoded: every plan holds them all FULL, so no re-plan
  // replaces the plan in force (re-planning drops what the states hold).
  TempDir dir;
  const std::string path = dir.file("moe.zmoe");
  write_moe(path, Codec::kHuffman);
  ModelOptions options;
  options.threads = 2;
  options.max_context = 64;
  options.prefetch = false;
  options.storage_bandwidth = 1e9;
  options.decode_throughput = 2e9;
  options.memory_budget = minimum_budget(path, options) + (std::uint64_t(8) << 20);
  Model model = Model::load(path, options);
  for (std::int32_t t : token_sequence(20, 4)) model.eval({t});
  const ExpertCacheStats s = model.stats();
  ZCHECK_EQ(s.steps, 20u);  // past the re-plans of steps 8 and 16
  ZCHECK_EQ(s.experts_in[tier_index(ExpertTier::kFull)], 24u);
  ZCHECK_EQ(s.replans, 0u);
  ZCHECK_EQ(s.replan_dropped_bytes, 0u);
  ZCHECK_EQ(s.total.bytes_read, 0u);
}
