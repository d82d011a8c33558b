// kernel_bench: throughput of the CPU math kernels (cpp/kernels) next to the
// machine's own memory bandwidth.
//
//   kernel_bench [--isa all|scalar|avx2|avx512|neon] [--threads 1,2] [--runs R]
//                [--dtype bf16|f16|f32] [--sections bandwidth,matvec,prefill,attention]
//                [--precision fast|exact|fast,exact] [--clock wall|cpu]
//
// bandwidth  read (sum of every 8-byte word) and memcpy over 384 MiB: the ceiling
//            for streaming weights.
// matvec     M = 1 (decode), weights streamed from DRAM: a dense 5632x2048 and
//            2048x5632 layer (16 copies cycled, more than the caches hold) and 60
//            experts of 1408x2048 in a row (346 MB in BF16), as 60 linear() calls
//            and as one linear_batch(). Reported as GB/s of weights read and as a
//            fraction of the read bandwidth with the same thread count.
// prefill    M = 128 rows: GFLOP/s (2 M N K per layer) for kExact and kFast.
// attention  one decode step over a 4096-position cache (32 query heads, 4 kv
//            heads, dim 128) with F32 and BF16 caches: microseconds and GB/s of KV.
// --precision picks the MatmulPrecision of matvec and attention (default fast);
// prefill always shows both. --clock cpu times with the process's CPU time
// instead of the wall clock: with --threads 1, a measure that other processes
// on a busy machine disturb less (they still share the caches and memory).
//
// Every figure is the median of R runs after a warm-up run.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "kernels/kernels.h"
#include "zipmoe/thread_pool.h"

using namespace zipmoe;
namespace k = zipmoe::kernels;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool g_cpu_clock = false;

double now_seconds() {
  if (g_cpu_clock) {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
double time_median(int runs, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int r = 0; r < runs; ++r) {
    const double a = now_seconds();
    f();
    t.push_back(now_seconds() - a);
  }
  return median(t);
}

std::vector<int> parse_int_list(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
  return out;
}

// Weights drawn from N(0, 0.02), stored in `dtype`.
std::vector<std::uint8_t> make_weights(DType dtype, std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> chunk(1 << 16);
  std::vector<std::uint8_t> out(n * dtype_size(dtype));
  for (std::size_t i = 0; i < n; i += chunk.size()) {
    const std::size_t count = std::min(chunk.size(), n - i);
    for (std::size_t j = 0; j < count; ++j) chunk[j] = normal(rng);
    k::convert_from_f32(Isa::kScalar, dtype, chunk.data(), out.data() + i * dtype_size(dtype), count);
  }
  return out;
}

std::vector<float> make_activations(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Sum of all 8-byte words of [data, data + bytes), split over the pool: a read
// stream with no arithmetic to speak of.
std::uint64_t read_all(const std::uint8_t* data, std::size_t bytes, ThreadPool* pool) {
  const std::size_t pieces = 64;
  const std::size_t piece = bytes / pieces / 64 * 64;
  std::vector<std::uint64_t> sums(pieces, 0);
  parallel_for(pool, pieces, [&](std::size_t p) {
    const std::uint64_t* w = reinterpret_cast<const std::uint64_t*>(data + p * piece);
    std::uint64_t a = 0, b = 0, c = 0, d = 0;
    for (std::size_t i = 0; i + 4 <= piece / 8; i += 4) {
      a += w[i];
      b += w[i + 1];
      c += w[i + 2];
      d += w[i + 3];
    }
    sums[p] = a ^ b ^ c ^ d;
  });
  std::uint64_t s = 0;
  for (std::uint64_t v : sums) s ^= v;
  return s;
}

struct Options {
  std::vector<Isa> isas;
  std::vector<int> threads{1, 2};
  int runs = 7;
  DType dtype = DType::kBF16;
  std::string sections = "bandwidth,matvec,prefill,attention";
  std::vector<k::MatmulPrecision> precisions{k::MatmulPrecision::kFast};
};

const char* precision_name(k::MatmulPrecision p) { return p == k::MatmulPrecision::kFast ? "fast" : "exact"; }

bool wants(const Options& o, const char* section) { return o.sections.find(section) != std::string::npos; }

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string isa_s = "all", dtype_s = "bf16", threads_s = "1,2", precision_s = "fast";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--isa") isa_s = value;
    else if (key == "--threads") threads_s = value;
    else if (key == "--runs") o.runs = std::stoi(value);
    else if (key == "--dtype") dtype_s = value;
    else if (key == "--sections") o.sections = value;
    else if (key == "--precision") precision_s = value;
    else if (key == "--clock" && (value == "wall" || value == "cpu")) g_cpu_clock = value == "cpu";
    else {
      std::fprintf(stderr, "unknown option %s\n", key.c_str());
      return 2;
    }
  }
  if (!parse_dtype(dtype_s, &o.dtype)) {
    std::fprintf(stderr, "bad --dtype\n");
    return 2;
  }
  o.threads = parse_int_list(threads_s);
  o.precisions.clear();
  {
    std::stringstream ss(precision_s);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item == "fast") {
        o.precisions.push_back(k::MatmulPrecision::kFast);
      } else if (item == "exact") {
        o.precisions.push_back(k::MatmulPrecision::kExact);
      } else {
        std::fprintf(stderr, "bad --precision %s (fast, exact)\n", item.c_str());
        return 2;
      }
    }
  }
  if (isa_s == "all") {
    o.isas = supported_isas();
  } else {
    Isa isa;
    if (!parse_isa(isa_s, &isa) || !isa_supported(isa)) {
      std::fprintf(stderr, "isa %s is not available here\n", isa_s.c_str());
      return 2;
    }
    o.isas = {isa};
  }
  std::printf("kernel_bench: dtype %s, runs %d (median, %s time), avx512_bf16 %s\n", dtype_name(o.dtype), o.runs,
              g_cpu_clock ? "CPU" : "wall", cpu_features().avx512_bf16 ? "yes" : "no");

  // Shapes of Qwen1.5-MoE-A2.7B: hidden 2048, dense/shared intermediate 5632, 60
  // experts of intermediate 1408.
  const std::size_t hidden = 2048, dense = 5632, expert = 1408, n_experts = 60, dense_copies = 16;
  const std::size_t esize = dtype_size(o.dtype);
  const std::size_t expert_elements = expert * hidden;

  std::vector<std::uint8_t> experts;
  if (wants(o, "bandwidth") || wants(o, "matvec")) experts = make_weights(o.dtype, expert_elements * n_experts, 1);

  // ---------------------------------------------------------------------------
  std::vector<double> read_gbs(16, 0.0);
  if (wants(o, "bandwidth") || wants(o, "matvec")) {
    std::printf("\n== memory bandwidth (384 MiB buffer)\n");
    const std::size_t bytes = std::size_t(384) << 20;
    std::vector<std::uint8_t> src(bytes, 1), dst(bytes, 0);
    for (int t : o.threads) {
      ThreadPool pool(t);
      volatile std::uint64_t sink = 0;
      const double read_s = time_median(o.runs, [&] { sink = sink + read_all(src.data(), bytes, &pool); });
      const std::size_t pieces = 64, piece = bytes / pieces;
      const double copy_s = time_median(o.runs, [&] {
        parallel_for(&pool, pieces, [&](std::size_t p) { std::memcpy(dst.data() + p * piece, src.data() + p * piece, piece); });
      });
      read_gbs[t] = bytes / read_s / 1e9;
      std::printf("threads %d: read %.1f GB/s, memcpy %.1f GB/s read (+ the same written)\n", t, read_gbs[t],
                  bytes / copy_s / 1e9);
    }
  }

  // ---------------------------------------------------------------------------
  if (wants(o, "matvec")) {
    std::printf("\n== matvec (M = 1), %s weights, GB/s of weights (fraction of read bandwidth)\n", dtype_name(o.dtype));
    std::vector<std::vector<std::uint8_t>> up(dense_copies), down(dense_copies);
    for (std::size_t c = 0; c < dense_copies; ++c) {
      up[c] = make_weights(o.dtype, dense * hidden, 100 + static_cast<std::uint32_t>(c));
      down[c] = make_weights(o.dtype, dense * hidden, 200 + static_cast<std::uint32_t>(c));
    }
    const std::vector<float> x_hidden = make_activations(hidden, 7), x_dense = make_activations(dense, 8);
    std::vector<float> y(dense * n_experts);
    std::printf("%-8s %-3s %-6s %-22s %-22s %-22s %-22s\n", "isa", "thr", "prec", "5632x2048 (up)",
                "2048x5632 (down)", "60x1408x2048 calls", "60x1408x2048 batch");
    for (Isa isa : o.isas) {
      for (int t : o.threads) {
        for (k::MatmulPrecision precision : o.precisions) {
          if (isa == Isa::kScalar && t > 1) continue;
          ThreadPool pool(t);
          k::Workspace ws;
          const int runs = isa == Isa::kScalar ? 3 : o.runs;
          auto layer = [&](const std::vector<std::uint8_t>& w, std::size_t rows, std::size_t cols, const float* x) {
            k::LinearJob job;
            job.x = x;
            job.weight = {w.data(), o.dtype, rows, cols};
            job.y = y.data();
            k::linear(isa, job, &pool, &ws, precision);
          };
          const double up_s = time_median(runs, [&] {
            for (std::size_t c = 0; c < dense_copies; ++c) layer(up[c], dense, hidden, x_hidden.data());
          });
          const double down_s = time_median(runs, [&] {
            for (std::size_t c = 0; c < dense_copies; ++c) layer(down[c], hidden, dense, x_dense.data());
          });
          const double calls_s = time_median(runs, [&] {
            for (std::size_t e = 0; e < n_experts; ++e) {
              k::LinearJob job;
              job.x = x_hidden.data();
              job.weight = {experts.data() + e * expert_elements * esize, o.dtype, expert, hidden};
              job.y = y.data() + e * expert;
              k::linear(isa, job, &pool, &ws, precision);
            }
          });
          std::vector<k::LinearJob> jobs(n_experts);
          for (std::size_t e = 0; e < n_experts; ++e) {
            jobs[e].x = x_hidden.data();
            jobs[e].weight = {experts.data() + e * expert_elements * esize, o.dtype, expert, hidden};
            jobs[e].y = y.data() + e * expert;
          }
          const double batch_s =
              time_median(runs, [&] { k::linear_batch(isa, jobs.data(), n_experts, &pool, &ws, precision); });
          const double dense_bytes = double(dense_copies) * dense * hidden * esize;
          const double expert_bytes = double(n_experts) * expert_elements * esize;
          auto cell = [&](double bytes, double seconds) {
            static char buffer[8][64];
            static int next = 0;
            char* b = buffer[next++ % 8];
            const double gbs = bytes / seconds / 1e9;
            if (read_gbs[t] > 0) {
              std::snprintf(b, 64, "%6.1f (%.2fx)", gbs, gbs / read_gbs[t]);
            } else {
              std::snprintf(b, 64, "%6.1f", gbs);
            }
            return b;
          };
          std::printf("%-8s %-3d %-6s %-22s %-22s %-22s %-22s\n", isa_name(isa), t, precision_name(precision),
                      cell(dense_bytes, up_s), cell(dense_bytes, down_s), cell(expert_bytes, calls_s),
                      cell(expert_bytes, batch_s));
          std::printf("%-8s %-3s %-6s per call: up %.0f us, down %.0f us, expert %.0f us\n", "", "", "",
                      up_s / dense_copies * 1e6, down_s / dense_copies * 1e6, calls_s / n_experts * 1e6);
        }
      }
    }
  }

  // ---------------------------------------------------------------------------
  if (wants(o, "prefill")) {
    const std::size_t m = 128;
    std::printf("\n== prefill (M = %zu), %s weights, GFLOP/s\n", m, dtype_name(o.dtype));
    struct Shape {
      std::size_t n, kdim;
      const char* name;
    };
    const Shape shapes[] = {{2048, 2048, "2048x2048 (attn)"}, {1408, 2048, "1408x2048 (expert)"},
                            {2048, 1408, "2048x1408 (down)"}, {5632, 2048, "5632x2048 (dense)"}};
    std::printf("%-8s %-3s %-6s", "isa", "thr", "prec");
    for (const Shape& s : shapes) std::printf(" %-20s", s.name);
    std::printf("\n");
    std::vector<std::vector<std::uint8_t>> weights;
    for (const Shape& s : shapes) weights.push_back(make_weights(o.dtype, s.n * s.kdim, 300 + s.n + s.kdim));
    const std::vector<float> x = make_activations(m * 5632, 9);
    std::vector<float> y(m * 5632);
    for (Isa isa : o.isas) {
      if (isa == Isa::kScalar) continue;  // minutes per run
      for (int t : o.threads) {
        for (k::MatmulPrecision precision : {k::MatmulPrecision::kExact, k::MatmulPrecision::kFast}) {
          ThreadPool pool(t);
          k::Workspace ws;
          std::printf("%-8s %-3d %-6s", isa_name(isa), t, precision == k::MatmulPrecision::kFast ? "fast" : "exact");
          for (std::size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); ++i) {
            k::LinearJob job;
            job.x = x.data();
            job.m = m;
            job.weight = {weights[i].data(), o.dtype, shapes[i].n, shapes[i].kdim};
            job.y = y.data();
            const double s = time_median(o.runs, [&] { k::linear(isa, job, &pool, &ws, precision); });
            std::printf(" %-20.1f", 2.0 * m * shapes[i].n * shapes[i].kdim / s / 1e9);
          }
          std::printf("\n");
        }
      }
    }
  }

  // ---------------------------------------------------------------------------
  if (wants(o, "attention")) {
    const std::size_t context = 4096, heads = 32, kv_heads = 4, dim = 128;
    std::printf("\n== attention decode: %zu positions, %zu heads / %zu kv heads, dim %zu\n", context, heads, kv_heads,
                dim);
    const std::vector<float> q = make_activations(heads * dim, 10);
    const std::vector<float> keys = make_activations(context * kv_heads * dim, 11);
    const std::vector<float> values = make_activations(context * kv_heads * dim, 12);
    std::vector<float> out(heads * dim);
    for (DType cache_dtype : {DType::kF32, DType::kBF16}) {
      const std::size_t bytes = k::kv_cache_bytes(cache_dtype, kv_heads, dim, dim, context);
      std::vector<std::uint8_t> storage(bytes);
      const k::KvCacheView view = k::make_kv_cache_view(cache_dtype, kv_heads, dim, dim, context, storage.data(),
                                                        storage.data() + bytes / 2);
      k::kv_cache_store(Isa::kScalar, view, 0, context, keys.data(), 0, values.data(), 0);
      k::AttentionParams params;
      params.n_heads = heads;
      params.scale = 1.0f / std::sqrt(static_cast<float>(dim));
      for (Isa isa : o.isas) {
        for (int t : o.threads) {
          for (k::MatmulPrecision precision : o.precisions) {
            ThreadPool pool(t);
            const double s = time_median(isa == Isa::kScalar ? 3 : o.runs, [&] {
              k::attention(isa, q.data(), 1, 0, context - 1, view, params, out.data(), 0, &pool, precision);
            });
            std::printf("%-4s cache  %-8s %-6s threads %d: %8.1f us, %.1f GB/s of KV\n", dtype_name(cache_dtype),
                        isa_name(isa), precision_name(precision), t, s * 1e6, bytes / s / 1e9);
          }
        }
      }
    }
  }
  return 0;
}
