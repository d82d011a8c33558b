// The inference engine in C++: config parsing, the memory ledger, the resident
// expert provider, and whole models built here from random weights (a Qwen3-MoE
// like one with a dense and a MoE layer, and a DeepSeek-V2 like one with latent
// attention and a shared expert): results independent of threads and codecs,
// eval() in pieces equal to one call, every ISA path close to the scalar one.
// Parity with transformers is tested in tests/python/test_engine.py.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cache/resident_experts.h"
#include "common/cpu_features.h"
#include "common/json.h"
#include "common/memory_ledger.h"
#include "format/container_file.h"
#include "model/config.h"
#include "model/load_plan.h"
#include "golden.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/container.h"
#include "zipmoe/model.h"

using namespace zipmoe;

namespace {

struct ModelDir {
  std::string path;
  ModelDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/zipmoe-model-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = buf.data();
  }
  ~ModelDir() {
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
          ::unlink((path + "/" + e->d_name).c_str());
        }
      }
      ::closedir(d);
    }
    ::rmdir(path.c_str());
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

struct TensorSpec {
  std::string name;
  std::vector<std::uint64_t> shape;
  DType dtype = DType::kBF16;
  TensorRole role;
  bool norm = false;  // values near 1
};

struct ModelSpec {
  std::string metadata;
  std::vector<TensorSpec> tensors;
};

// Normal values (the C library's log inside std::normal_distribution), or with
// `golden` uniform ones from an integer generator: the same bits on every platform.
std::vector<std::uint8_t> random_tensor(const TensorSpec& t, std::uint32_t seed, bool golden) {
  std::size_t n = 1;
  for (std::uint64_t d : t.shape) n *= d;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  ztest::GoldenRandom uniform(seed);
  std::vector<std::uint8_t> out(n * dtype_size(t.dtype));
  for (std::size_t i = 0; i < n; ++i) {
    const float r = golden ? uniform.uniform(1.75f) : normal(rng);
    const float v = t.norm ? 1.0f + 0.1f * r : 0.15f * r;
    if (t.dtype == DType::kF32) {
      std::memcpy(out.data() + 4 * i, &v, 4);
    } else if (t.dtype == DType::kBF16) {
      const std::uint16_t b = ztest::f32_to_bf16_rne(v);
      std::memcpy(out.data() + 2 * i, &b, 2);
    } else {
      // F16 via BF16-exact values that F16 also holds exactly (|v| < 65504, 8 mantissa bits).
      const std::uint16_t b = ztest::f32_to_bf16_rne(v);
      std::uint32_t bits = std::uint32_t(b) << 16;
      float r;
      std::memcpy(&r, &bits, 4);
      // float -> half, round to nearest (exact here): sign, exponent rebias, mantissa.
      std::uint32_t x;
      std::memcpy(&x, &r, 4);
      const std::uint32_t sign = (x >> 16) & 0x8000u;
      const int exponent = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
      std::uint16_t h;
      if ((x & 0x7fffffffu) == 0 || exponent <= 0) {
        h = static_cast<std::uint16_t>(sign);  // tiny values flush to zero (rare at sigma 0.15)
      } else {
        h = static_cast<std::uint16_t>(sign | (std::uint32_t(exponent) << 10) | ((x >> 13) & 0x3ffu));
      }
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

void write_model(const ModelSpec& spec, const std::string& path, Codec codec, bool golden = false) {
  ContainerWriter writer(path, spec.metadata);
  std::uint32_t seed = 1;
  for (const TensorSpec& t : spec.tensors) {
    const std::vector<std::uint8_t> data = random_tensor(t, seed++, golden);
    writer.add_tensor(t.name, data.data(), t.dtype, t.shape, t.role, codec);
  }
  writer.finish();
}

void add(ModelSpec* spec, const std::string& name, std::vector<std::uint64_t> shape, DType dtype = DType::kBF16,
         bool norm = false) {
  spec->tensors.push_back({name, std::move(shape), dtype, TensorRole(), norm});
}

void add_experts(ModelSpec* spec, std::uint32_t layer, std::uint32_t experts, std::uint64_t inner,
                 std::uint64_t hidden) {
  for (std::uint32_t e = 0; e < experts; ++e) {
    const std::string p = "blk." + std::to_string(layer) + ".ffn_";
    const std::string s = "_exps." + std::to_string(e) + ".weight";
    spec->tensors.push_back({p + "gate" + s, {inner, hidden}, DType::kBF16,
                             TensorRole::expert_projection(layer, e, "gate"), false});
    spec->tensors.push_back({p + "up" + s, {inner, hidden}, DType::kBF16,
                             TensorRole::expert_projection(layer, e, "up"), false});
    spec->tensors.push_back({p + "down" + s, {hidden, inner}, DType::kBF16,
                             TensorRole::expert_projection(layer, e, "down"), false});
  }
}

// Qwen3-MoE-like: q/k norms, layer 0 dense (mlp_only_layers), layer 1 MoE; an F16
// attention output and an F32 router exercise every weight dtype.
ModelSpec qwen3_like() {
  ModelSpec s;
  s.metadata = R"({"architecture": "qwen3_moe", "config": {"vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "intermediate_size": 48, "moe_intermediate_size": 16, "num_experts": 4, "num_experts_per_tok": 2,
    "norm_topk_prob": true, "mlp_only_layers": [0], "rms_norm_eps": 1e-6, "max_position_embeddings": 64,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "hidden_act": "silu"}})";
  add(&s, "token_embd.weight", {64, 32});
  add(&s, "output_norm.weight", {32}, DType::kBF16, true);
  add(&s, "output.weight", {64, 32});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(&s, p + "attn_norm.weight", {32}, DType::kBF16, true);
    add(&s, p + "ffn_norm.weight", {32}, DType::kBF16, true);
    add(&s, p + "attn_q.weight", {32, 32});
    add(&s, p + "attn_k.weight", {16, 32});
    add(&s, p + "attn_v.weight", {16, 32});
    add(&s, p + "attn_output.weight", {32, 32}, DType::kF16);
    add(&s, p + "attn_q_norm.weight", {8}, DType::kBF16, true);
    add(&s, p + "attn_k_norm.weight", {8}, DType::kBF16, true);
  }
  add(&s, "blk.0.ffn_gate.weight", {48, 32});
  add(&s, "blk.0.ffn_up.weight", {48, 32});
  add(&s, "blk.0.ffn_down.weight", {32, 48});
  add(&s, "blk.1.ffn_gate_inp.weight", {4, 32}, DType::kF32);
  add_experts(&s, 1, 4, 16, 32);
  return s;
}

// DeepSeek-V2-like: latent attention without q LoRA, layer 0 dense, layer 1 MoE
// with a shared expert and group-limited routing.
ModelSpec deepseek_like() {
  ModelSpec s;
  s.metadata = R"({"architecture": "deepseek_v2", "config": {"vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 48,
    "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
    "first_k_dense_replace": 1, "q_lora_rank": null, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 4, "v_head_dim": 8, "topk_method": "group_limited_greedy", "n_group": 2, "topk_group": 1,
    "routed_scaling_factor": 1.5, "max_position_embeddings": 64, "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                     "mscale": 0.707, "mscale_all_dim": 0.707}}})";
  add(&s, "token_embd.weight", {64, 32});
  add(&s, "output_norm.weight", {32}, DType::kBF16, true);
  add(&s, "output.weight", {64, 32});
  for (int i = 0; i < 2; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(&s, p + "attn_norm.weight", {32}, DType::kBF16, true);
    add(&s, p + "ffn_norm.weight", {32}, DType::kBF16, true);
    add(&s, p + "attn_q.weight", {4 * 12, 32});
    add(&s, p + "attn_kv_a_mqa.weight", {16 + 4, 32});
    add(&s, p + "attn_kv_a_norm.weight", {16}, DType::kBF16, true);
    add(&s, p + "attn_kv_b.weight", {4 * (8 + 8), 16});
    add(&s, p + "attn_output.weight", {32, 4 * 8});
  }
  add(&s, "blk.0.ffn_gate.weight", {48, 32});
  add(&s, "blk.0.ffn_up.weight", {48, 32});
  add(&s, "blk.0.ffn_down.weight", {32, 48});
  add(&s, "blk.1.ffn_gate_inp.weight", {4, 32}, DType::kF32);
  add(&s, "blk.1.ffn_gate_shexp.weight", {16, 32});
  add(&s, "blk.1.ffn_up_shexp.weight", {16, 32});
  add(&s, "blk.1.ffn_down_shexp.weight", {32, 16});
  add_experts(&s, 1, 4, 16, 32);
  return s;
}

std::vector<std::int32_t> tokens(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> out(n);
  for (auto& t : out) t = static_cast<std::int32_t>(rng() % 64);
  return out;
}

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

ModelOptions options(int threads, Precision precision = Precision::kExact, std::optional<Isa> isa = std::nullopt) {
  ModelOptions o;
  o.threads = threads;
  o.precision = precision;
  o.isa = isa;
  o.batch = 8;  // several steps per prompt
  return o;
}

model::ModelConfig parse_config(const std::string& metadata, Status* status) {
  model::ModelConfig config;
  *status = model::parse_model_config(metadata, &config);
  return config;
}

}  // namespace

// ---------------------------------------------------------------------------- config

ZTEST(model_config_reads_both_rope_spellings_and_per_layer_plans) {
  Status status;
  model::ModelConfig c = parse_config(qwen3_like().metadata, &status);
  ZCHECK(status.ok());
  ZCHECK(c.family->family == model::Family::kQwen3Moe);
  ZCHECK_EQ(c.head_dim, std::size_t(8));
  ZCHECK(!c.is_moe_layer(0) && c.is_moe_layer(1));
  ZCHECK_EQ(c.num_moe_layers(), std::size_t(1));
  ZCHECK_EQ(c.rope.config.rotary_dim, std::size_t(8));
  ZCHECK(std::fabs(c.attention_scale - 1.0f / std::sqrt(8.0f)) < 1e-7f);

  model::ModelConfig d = parse_config(deepseek_like().metadata, &status);
  ZCHECK(status.ok());
  ZCHECK(d.rope.config.scaling == kernels::RopeScaling::kYarn);
  ZCHECK_EQ(d.rope.config.factor, 4.0);
  ZCHECK(d.group_limited && d.num_groups == 2 && d.topk_groups == 1);
  ZCHECK_EQ(d.shared_intermediate_size, std::size_t(16));
  ZCHECK(d.rope.style == kernels::RopeStyle::kInterleaved);
  // softmax scale: 1/sqrt(12) * (0.1 * 0.707 * ln 4 + 1)^2
  const double mscale = 0.1 * 0.707 * std::log(4.0) + 1.0;
  ZCHECK(std::fabs(d.attention_scale - static_cast<float>(mscale * mscale / std::sqrt(12.0))) < 1e-6f);
}

ZTEST(model_config_rejects_unknown_architectures_and_bad_values) {
  Status status;
  parse_config(R"({"architecture": "mamba", "config": {}})", &status);
  ZCHECK(status.code() == StatusCode::kUnsupported);
  ZCHECK(status.message().find("mamba") != std::string::npos);
  ZCHECK(status.message().find("qwen2_moe") != std::string::npos);
  parse_config(R"({"config": {}})", &status);
  ZCHECK(status.code() == StatusCode::kUnsupported);
  parse_config(R"({"architecture": "llama"})", &status);
  ZCHECK(status.code() == StatusCode::kFormat);
  parse_config(R"([1, 2])", &status);
  ZCHECK(status.code() == StatusCode::kFormat);
  parse_config(R"({"architecture": "llama", "config": {"hidden_size": 32,}})", &status);
  ZCHECK(status.code() == StatusCode::kFormat && status.message().find("JSON") != std::string::npos);

  const std::string base = qwen3_like().metadata;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string m = base;
    const std::size_t at = m.find(from);
    if (at != std::string::npos) m.replace(at, from.size(), to);
    return m;
  };
  const struct {
    std::string from, to;
    StatusCode code;
    const char* mentions;
  } cases[] = {
      {R"("hidden_size": 32)", R"("hidden_size": "32")", StatusCode::kFormat, "hidden_size"},
      {R"("hidden_size": 32)", R"("hidden_size": 0)", StatusCode::kFormat, "hidden_size"},
      {R"("hidden_size": 32)", R"("hidden_size": 1e30)", StatusCode::kFormat, "hidden_size"},
      {R"("num_key_value_heads": 2)", R"("num_key_value_heads": 3)", StatusCode::kFormat, "num_key_value_heads"},
      {R"("num_experts_per_tok": 2)", R"("num_experts_per_tok": 5)", StatusCode::kFormat, "num_experts_per_tok"},
      {R"("rms_norm_eps": 1e-6)", R"("rms_norm_eps": -1)", StatusCode::kFormat, "rms_norm_eps"},
      {R"("mlp_only_layers": [0])", R"("mlp_only_layers": 0)", StatusCode::kFormat, "mlp_only_layers"},
      {R"("hidden_act": "silu")", R"("hidden_act": "gelu")", StatusCode::kUnsupported, "gelu"},
      {R"("rope_type": "default")", R"("rope_type": "dynamic")", StatusCode::kUnsupported, "dynamic"},
      {R"("rope_theta": 10000.0,)", R"("rope_theta": true,)", StatusCode::kFormat, "rope_theta"},
      {R"("vocab_size": 64,)", "", StatusCode::kFormat, "vocab_size"},
  };
  for (const auto& c : cases) {
    parse_config(with(c.from, c.to), &status);
    ZCHECK(status.code() == c.code);
    if (status.message().find(c.mentions) == std::string::npos) {
      std::fprintf(stderr, "    message without '%s': %s\n", c.mentions, status.message().c_str());
    }
    ZCHECK(status.message().find(c.mentions) != std::string::npos);
  }
}

// ---------------------------------------------------------------------------- ledger

ZTEST(memory_ledger_counts_by_category_and_enforces_a_limit) {
  MemoryLedger ledger;
  {
    LedgerBuffer a, b;
    ZCHECK(a.allocate(&ledger, MemoryCategory::kExperts, 1000).ok());
    ZCHECK(b.allocate(&ledger, MemoryCategory::kKvCache, 24).ok());
    ZCHECK_EQ(ledger.bytes(MemoryCategory::kExperts), std::uint64_t(1000));
    ZCHECK_EQ(ledger.total(), std::uint64_t(1024));
    LedgerBuffer moved(std::move(a));
    ZCHECK_EQ(ledger.total(), std::uint64_t(1024));
    ledger.set_limit(1100);
    LedgerBuffer c;
    const Status refused = c.allocate(&ledger, MemoryCategory::kScratch, 100);
    ZCHECK(refused.code() == StatusCode::kBudget);
    ZCHECK(refused.message().find("scratch") != std::string::npos);
    ZCHECK_EQ(ledger.total(), std::uint64_t(1024));
    ZCHECK(c.allocate(&ledger, MemoryCategory::kScratch, 76).ok());
    ZCHECK_EQ(ledger.total(), std::uint64_t(1100));
  }
  ZCHECK_EQ(ledger.total(), std::uint64_t(0));
  ZCHECK_EQ(ledger.bytes(MemoryCategory::kExperts), std::uint64_t(0));
  ZCHECK_EQ(ledger.peak(), std::uint64_t(1100));
}

// ------------------------------------------------------------------------- provider

ZTEST(resident_expert_provider_delivers_every_expert_once) {
  ModelDir dir;
  const std::string path = dir.file("q.zmoe");
  write_model(qwen3_like(), path, Codec::kAuto);
  ContainerReader reader = ContainerReader::open(path);
  Status status;
  model::ModelConfig config = parse_config(reader.metadata(), &status);
  ZCHECK(status.ok());
  MemoryLedger ledger;
  ThreadPool pool(2);
  std::unique_ptr<cache::ResidentExpertProvider> provider;
  std::unique_ptr<format::ContainerFile> file;
  ZCHECK(format::ContainerFile::open(path, IoMode::kPread, &file).ok());
  ZCHECK(cache::ResidentExpertProvider::create(*file, model::expert_shapes(config), &pool, &ledger, default_isa(),
                                               &provider)
             .ok());
  ZCHECK_EQ(provider->resident_bytes(), ledger.bytes(MemoryCategory::kExperts));
  ZCHECK_EQ(provider->resident_bytes(), std::uint64_t(4 * 3 * 16 * 32 * 2));

  cache::ExpertRequest request;
  request.layer = 1;
  request.experts = {3, 0};
  ZCHECK(provider->acquire(&request).ok());
  std::uint32_t ready[2];
  std::size_t count = 0;
  ZCHECK(provider->wait_ready(&request, ready, &count).ok());
  ZCHECK_EQ(count, std::size_t(2));
  ZCHECK_EQ(request.weights[0].gate.rows, std::size_t(16));
  ZCHECK_EQ(request.weights[0].down.rows, std::size_t(32));
  // the delivered weights are the container's, bit for bit
  std::vector<std::uint8_t> expected(16 * 32 * 2);
  reader.decode_tensor("blk.1.ffn_up_exps.3.weight", expected.data(), expected.size());
  ZCHECK(std::memcmp(request.weights[0].up.data, expected.data(), expected.size()) == 0);
  ZCHECK(provider->wait_ready(&request, ready, &count).ok());
  ZCHECK_EQ(count, std::size_t(0));
  provider->release(&request);

  request.layer = 0;  // a dense layer
  ZCHECK(provider->acquire(&request).code() == StatusCode::kInvalidArgument);
  request.layer = 1;
  request.experts = {4};
  ZCHECK(provider->acquire(&request).code() == StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------- models

ZTEST(model_results_do_not_depend_on_threads_codec_or_steps) {
  ModelDir dir;
  for (const ModelSpec& spec : {qwen3_like(), deepseek_like()}) {
    const std::vector<std::int32_t> prompt = tokens(21, 7);
    std::vector<float> reference;
    for (Codec codec : {Codec::kRaw, Codec::kHuffman, Codec::kRans}) {
      const std::string path = dir.file(std::string("m-") + codec_name(codec) + ".zmoe");
      write_model(spec, path, codec);
      for (int threads : {1, 2, 3}) {
        for (Precision precision : {Precision::kExact, Precision::kFast}) {
          Model model = Model::load(path, options(threads, precision));
          const std::vector<float> logits = model.logits(prompt);
          ZCHECK_EQ(logits.size(), prompt.size() * 64);
          ZCHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
          if (precision == Precision::kExact) {
            if (reference.empty()) reference = logits;
            ZCHECK(logits == reference);
            // The same sequence in pieces, across step boundaries (batch 8).
            model.reset();
            std::vector<float> pieces;
            for (auto [first, last] : {std::pair<int, int>{0, 3}, {3, 4}, {4, 15}, {15, 21}}) {
              const std::vector<std::int32_t> part(prompt.begin() + first, prompt.begin() + last);
              const std::vector<float> out = model.eval(part);
              pieces.insert(pieces.end(), out.begin(), out.end());
            }
            ZCHECK(pieces == reference);
            ZCHECK_EQ(model.position(), prompt.size());
          } else {
            ZCHECK(max_diff(logits, reference) <= 1e-2f * max_abs(reference));
          }
        }
      }
    }
    ::unlink(dir.file("m-raw.zmoe").c_str());
    ::unlink(dir.file("m-huffman.zmoe").c_str());
    ::unlink(dir.file("m-rans.zmoe").c_str());
  }
}

ZTEST(model_every_isa_path_agrees_with_scalar) {
  ModelDir dir;
  for (const ModelSpec& spec : {qwen3_like(), deepseek_like()}) {
    const std::string path = dir.file("m.zmoe");
    write_model(spec, path, Codec::kAuto);
    const std::vector<std::int32_t> prompt = tokens(19, 3);
    const std::vector<float> scalar = Model::load(path, options(2, Precision::kExact, Isa::kScalar)).logits(prompt);
    for (Isa isa : supported_isas()) {
      for (Precision precision : {Precision::kExact, Precision::kFast}) {
        Model model = Model::load(path, options(2, precision, isa));
        ZCHECK(model.isa() == isa);
        const std::vector<float> logits = model.logits(prompt);
        const float tolerance = (precision == Precision::kExact ? 1e-4f : 1e-2f) * max_abs(scalar);
        if (max_diff(logits, scalar) > tolerance) {
          std::fprintf(stderr, "    %s: max diff %g > %g\n", isa_name(isa), max_diff(logits, scalar), tolerance);
        }
        ZCHECK(max_diff(logits, scalar) <= tolerance);
      }
    }
    ::unlink(path.c_str());
  }
}

ZTEST(model_exact_logits_are_bit_identical_on_every_isa_path_and_step_split) {
  // Precision::kExact: every path gives the scalar path's bits, for any thread
  // count, and a token's logits do not depend on how many tokens share its step.
  ModelDir dir;
  for (const ModelSpec& spec : {qwen3_like(), deepseek_like()}) {
    const std::string path = dir.file("m.zmoe");
    write_model(spec, path, Codec::kAuto);
    const std::vector<std::int32_t> prompt = tokens(19, 4);
    const std::vector<float> scalar = Model::load(path, options(1, Precision::kExact, Isa::kScalar)).logits(prompt);
    for (Isa isa : supported_isas()) {
      for (int threads : {1, 3}) {
        Model model = Model::load(path, options(threads, Precision::kExact, isa));
        const std::vector<float> logits = model.logits(prompt);
        if (logits != scalar) {
          std::fprintf(stderr, "    %s, %d threads: exact logits differ from scalar (max diff %g)\n", isa_name(isa),
                       threads, max_diff(logits, scalar));
        }
        ZCHECK(logits == scalar);
        // Token by token: each step holds one token.
        model.reset();
        std::vector<float> single;
        for (std::int32_t token : prompt) {
          const std::vector<float> out = model.eval({token});
          single.insert(single.end(), out.begin(), out.end());
        }
        ZCHECK(single == scalar);
      }
    }
    ::unlink(path.c_str());
  }
}

const ztest::GoldenEntry kModelGolden[] = {
#include "golden/exact_model.inc"
};

ZTEST(golden_exact_model_logits_give_the_x86_scalar_bits_on_every_path) {
  // Whole models (grouped attention with q/k norms and a MoE layer; latent
  // attention with a shared expert and group-limited routing) with weights that
  // are the same bits everywhere: their exact-mode logits, against x86's scalar path.
  ztest::GoldenSet golden("exact_model.inc", kModelGolden, sizeof(kModelGolden) / sizeof(kModelGolden[0]));
  ModelDir dir;
  const std::pair<const char*, ModelSpec> specs[] = {{"qwen3_moe", qwen3_like()}, {"deepseek_v2", deepseek_like()}};
  for (const auto& [name, spec] : specs) {
    const std::string path = dir.file("golden.zmoe");
    write_model(spec, path, Codec::kHuffman, true);
    const std::vector<std::int32_t> prompt = tokens(13, 11);
    for (Isa isa : supported_isas()) {
      for (DType kv : {DType::kF32, DType::kBF16}) {
        ModelOptions o = options(2, Precision::kExact, isa);
        o.kv_cache_dtype = kv;
        Model model = Model::load(path, o);
        golden.check(isa, std::string(name) + " kv " + dtype_name(kv), model.logits(prompt));
      }
    }
    ::unlink(path.c_str());
  }
  golden.finish();
}

ZTEST(model_reports_memory_and_rejects_bad_input) {
  ModelDir dir;
  const std::string path = dir.file("m.zmoe");
  write_model(qwen3_like(), path, Codec::kAuto);
  ModelOptions o = options(1);
  o.max_context = 16;
  Model model = Model::load(path, o);
  const ModelInfo& info = model.info();
  ZCHECK_EQ(info.architecture, std::string("qwen3_moe"));
  ZCHECK_EQ(info.max_context, std::size_t(16));
  ZCHECK(info.config_json.find("\"mlp_only_layers\":[0]") != std::string::npos);
  const MemoryUse use = model.memory();
  ZCHECK_EQ(use.experts, std::uint64_t(4 * 3 * 16 * 32 * 2));
  ZCHECK_EQ(use.kv_cache, std::uint64_t(2 * 2 * 16 * 2 * 8 * 4));  // layers x K,V x positions x heads x dim x f32
  ZCHECK_EQ(use.total, use.dense_weights + use.experts + use.kv_cache + use.scratch);
  ZCHECK(use.dense_weights > 0 && use.scratch > 0);

  std::vector<float> out(64 * 20);
  const std::vector<std::int32_t> bad = {1, 64};
  ZCHECK_THROWS(model.eval(bad.data(), bad.size(), out.data()), InvalidArgumentError);
  ZCHECK_THROWS(model.eval(bad.data(), 0, out.data()), InvalidArgumentError);
  const std::vector<std::int32_t> negative = {-1};
  ZCHECK_THROWS(model.eval(negative.data(), 1, out.data()), InvalidArgumentError);
  const std::vector<std::int32_t> ten = tokens(10, 1);
  model.eval(ten.data(), ten.size(), out.data());
  ZCHECK_THROWS(model.eval(ten.data(), 7, out.data()), InvalidArgumentError);
  ZCHECK_EQ(model.position(), std::size_t(10));
  model.eval(ten.data(), 6, out.data(), /*last_only=*/true);
  ZCHECK_EQ(model.position(), std::size_t(16));
  model.reset();
  ZCHECK_EQ(model.position(), std::size_t(0));

  ModelOptions bad_options = options(1);
  bad_options.kv_cache_dtype = static_cast<DType>(9);
  ZCHECK_THROWS(Model::load(path, bad_options), InvalidArgumentError);
}

ZTEST(model_load_rejects_inconsistent_containers) {
  ModelDir dir;
  // a tensor shape that disagrees with the config
  ModelSpec spec = qwen3_like();
  for (TensorSpec& t : spec.tensors) {
    if (t.name == "blk.1.attn_k.weight") t.shape = {8, 32};
  }
  write_model(spec, dir.file("shape.zmoe"), Codec::kAuto);
  ZCHECK_THROWS(Model::load(dir.file("shape.zmoe"), options(1)), FormatError);
  // a missing expert
  spec = qwen3_like();
  spec.tensors.pop_back();
  write_model(spec, dir.file("expert.zmoe"), Codec::kAuto);
  try {
    Model::load(dir.file("expert.zmoe"), options(1));
    ZCHECK(false);
  } catch (const FormatError& e) {
    ZCHECK(std::string(e.what()).find("expert 3 of layer 1") != std::string::npos);
  }
  // an expert stored as a dense tensor where the engine wants an expert role
  spec = qwen3_like();
  spec.tensors.back().role = TensorRole();
  write_model(spec, dir.file("role.zmoe"), Codec::kAuto);
  ZCHECK_THROWS(Model::load(dir.file("role.zmoe"), options(1)), FormatError);
  // an unsupported architecture
  spec = qwen3_like();
  spec.metadata = R"({"architecture": "generic", "config": {}})";
  write_model(spec, dir.file("generic.zmoe"), Codec::kAuto);
  ZCHECK_THROWS(Model::load(dir.file("generic.zmoe"), options(1)), UnsupportedModelError);
}

// ---------------------------------------------------------------------------- load plan

namespace {

model::MemoryPlan plan_for(const std::string& path, const ModelOptions& o, std::size_t context) {
  std::unique_ptr<format::ContainerFile> reader;
  ZCHECK(format::ContainerFile::open(path, IoMode::kPread, &reader).ok());
  model::ModelConfig config;
  ZCHECK(model::parse_model_config(reader->metadata(), &config).ok());
  model::ForwardOptions forward;
  forward.isa = o.isa ? *o.isa : default_isa();
  forward.precision = kernels::MatmulPrecision::kExact;
  forward.batch = o.batch;
  forward.gate_ahead = o.prefetch && o.memory_budget > 0;
  model::MemoryPlan plan;
  ZCHECK(model::plan_memory(*reader, config, context, o.kv_cache_dtype, forward, o.memory_budget > 0, &plan).ok());
  return plan;
}

}  // namespace

// The plan that refuses a load before anything is read must be what the load
// then holds, to the byte, or it refuses loads that fit (or admits ones that do not).
ZTEST(load_plan_is_what_the_load_charges) {
  ModelDir dir;
  for (const ModelSpec& spec : {qwen3_like(), deepseek_like()}) {
    const std::string path = dir.file("m.zmoe");
    write_model(spec, path, Codec::kAuto);
    for (std::uint64_t budget : {std::uint64_t(0), std::uint64_t(1) << 26}) {
      ModelOptions o = options(1);
      o.max_context = 48;
      o.memory_budget = budget;
      const model::MemoryPlan plan = plan_for(path, o, 48);
      const MemoryUse use = Model::load(path, o).memory();
      ZCHECK_EQ(plan.dense_weights, use.dense_weights);
      ZCHECK_EQ(plan.kv_cache, use.kv_cache);
      ZCHECK_EQ(plan.scratch, use.scratch);
      if (budget == 0) ZCHECK_EQ(plan.experts, use.experts);  // streamed: the cache takes what the budget leaves
      ZCHECK(plan.experts > 0 && plan.minimum() <= use.total);
    }
  }
}

// A context of a million positions costs KV cache (allocated, untouched), not
// scratch: RoPE angles are computed per step, for the step's positions (a table
// of every position was written at load, 32 MB here), to the same bits.
ZTEST(scratch_does_not_grow_with_the_context) {
  ModelDir dir;
  for (const ModelSpec& spec : {qwen3_like(), deepseek_like()}) {
    const std::string path = dir.file("m.zmoe");
    write_model(spec, path, Codec::kAuto);
    ModelOptions o = options(1);
    o.max_context = 16;
    Model small = Model::load(path, o);
    o.max_context = std::size_t(1) << 20;
    Model large = Model::load(path, o);
    ZCHECK_EQ(small.memory().scratch, large.memory().scratch);
    const std::vector<std::int32_t> prompt = tokens(12, 5);
    std::vector<float> a(12 * 64), b(12 * 64);
    small.eval(prompt.data(), prompt.size(), a.data());
    large.eval(prompt.data(), prompt.size(), b.data());
    ZCHECK(a == b);
  }
}

// A tensor the architecture never reads means the container is not what its
// metadata says (relabelled, or a config edited): refused, naming the tensor.
ZTEST(model_load_refuses_tensors_its_architecture_does_not_use) {
  ModelDir dir;
  ModelSpec spec = qwen3_like();
  add(&spec, "blk.1.ffn_gate_shexp.weight", {16, 32});  // a shared expert: qwen2_moe's, not qwen3_moe's
  write_model(spec, dir.file("extra.zmoe"), Codec::kAuto);
  try {
    Model::load(dir.file("extra.zmoe"), options(1));
    ZCHECK(false);
  } catch (const FormatError& e) {
    ZCHECK(std::string(e.what()).find("blk.1.ffn_gate_shexp.weight") != std::string::npos);
    ZCHECK(std::string(e.what()).find("not part of a qwen3_moe model") != std::string::npos);
  }
}

ZTEST(check_memory_refuses_a_budget_or_machine_below_the_minimum) {
  model::MemoryPlan plan;
  plan.dense_weights = 1000;
  plan.kv_cache = 1 << 20;
  plan.scratch = 500;
  plan.experts = 2000;
  plan.streamed = true;
  plan.context = 4096;
  plan.batch = 8;
  const std::uint64_t minimum = plan.minimum();
  ZCHECK_EQ(minimum, std::uint64_t(1000 + (1 << 20) + 500 + 2000));
  AvailableMemory unknown, plenty, scarce;
  plenty.known = scarce.known = true;
  plenty.bytes = minimum;
  scarce.bytes = minimum - 1;
  scarce.source = "the limit of memory cgroup /x";
  ZCHECK(model::check_memory(plan, minimum, plenty, "m.zmoe").ok());
  ZCHECK(model::check_memory(plan, 0, unknown, "m.zmoe").ok());
  const Status small_budget = model::check_memory(plan, minimum - 1, unknown, "m.zmoe");
  ZCHECK(small_budget.code() == StatusCode::kBudget);
  ZCHECK(small_budget.message().find("KV cache 1.0 MB (1048576 bytes) for 4096 positions") != std::string::npos);
  const Status small_machine = model::check_memory(plan, 0, scarce, "m.zmoe");
  ZCHECK(small_machine.code() == StatusCode::kBudget);
  ZCHECK(small_machine.message().find("memory cgroup /x") != std::string::npos);
  ZCHECK(small_machine.message().find("memory_budget streams") == std::string::npos);  // the KV cache is in the way
  plan.streamed = false;
  plan.kv_cache = 0;
  scarce.bytes = plan.minimum() - 1;
  ZCHECK(model::check_memory(plan, 0, scarce, "m.zmoe").message().find("memory_budget streams") != std::string::npos);
  plan.kv_cache = 1 << 20;
  plan.streamed = true;
  // saturating: a context no machine holds is refused, never wrapped around to a small figure
  plan.kv_cache = ~std::uint64_t(0);
  ZCHECK_EQ(plan.minimum(), ~std::uint64_t(0));
  ZCHECK(model::check_memory(plan, 0, plenty, "m.zmoe").code() == StatusCode::kBudget);
}

// DeepSeek-V3's multi-token-prediction layers (blk.<num_layers>.*, experts
// included) are kept in the container for export and never computed: carried,
// as many as num_nextn_predict_layers says, and refused beyond that.
ZTEST(model_load_carries_deepseek_v3_prediction_layers_its_config_counts) {
  ModelDir dir;
  for (int counted : {1, 0}) {
    ModelSpec spec = deepseek_like();
    const std::string v2 = R"("architecture": "deepseek_v2", "config": {)";
    spec.metadata.replace(spec.metadata.find(v2), v2.size(),
                          R"("architecture": "deepseek_v3", "config": {"num_nextn_predict_layers": )" +
                              std::to_string(counted) + ", ");
    add(&spec, "blk.1.exp_probs_b.bias", {4}, DType::kF32);
    add(&spec, "blk.2.nextn.enorm.weight", {32}, DType::kBF16, true);
    add(&spec, "blk.2.attn_norm.weight", {32}, DType::kBF16, true);
    add_experts(&spec, 2, 4, 16, 32);
    write_model(spec, dir.file("v3.zmoe"), Codec::kAuto);
    if (counted) {
      ZCHECK_EQ(Model::load(dir.file("v3.zmoe"), options(1)).info().num_layers, std::size_t(2));
      continue;
    }
    try {
      Model::load(dir.file("v3.zmoe"), options(1));
      ZCHECK(false);
    } catch (const FormatError& e) {
      ZCHECK(std::string(e.what()).find("14 tensors are not part of a deepseek_v3 model") != std::string::npos);
      ZCHECK(std::string(e.what()).find("blk.2.nextn.enorm.weight") != std::string::npos);
    }
  }
}
