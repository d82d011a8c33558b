// GPU decoding benchmark and exactness check (run by tools/device_check.sh).
//
//   cuda_bench [--elements N] [--runs R] [--experts E] [--file PATH] [--max-file-elements N]
//
// For Huffman and rANS: encodes N(0, 0.02) BF16 weights (64 Mi elements by
// default) on the CPU, decodes them with the CPU scalar decoder (the
// reference) and on the GPU, checks that the two are bit-identical, and times
// the GPU decode: device time between CUDA events around Decoder::launch
// (descriptor upload, kernels and the error words; the planes are already in
// device memory and the host-side staging is outside the timed span),
// median of R runs, reported as GB/s of BF16 output. Then the same for a batch
// of E expert tensors of 2048 x 1408 decoded in one call, for raw BF16 weights
// read from PATH (little-endian bytes) when given, and for corrupt planes (the
// GPU must reject exactly what the CPU rejects). Prints a PASS/FAIL line per
// check and exits non-zero on any failure.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/cpu_features.h"
#include "cuda/cuda_decode.h"
#include "zipmoe/thread_pool.h"
#include "zipmoe/types.h"

namespace {

using zipmoe::Codec;
using zipmoe::DType;
using zipmoe::Status;
namespace codec = zipmoe::codec;
namespace cuda = zipmoe::cuda;

int g_failures = 0;

void report(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "PASS" : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  report(false, std::string(what) + ": " + cudaGetErrorString(e));
  return false;
}

std::uint16_t bf16_from_float(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// n BF16 weights from N(0, sigma), generated in fixed pieces (thread-count independent).
std::vector<std::uint16_t> gaussian_bf16(std::size_t n, std::uint64_t seed, zipmoe::ThreadPool* pool) {
  std::vector<std::uint16_t> out(n);
  constexpr std::size_t kPiece = 1 << 20;
  zipmoe::parallel_for(pool, (n + kPiece - 1) / kPiece, [&](std::size_t p) {
    std::mt19937_64 rng(seed * 1000003 + p);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (std::size_t i = p * kPiece; i < std::min(n, (p + 1) * kPiece); ++i) out[i] = bf16_from_float(normal(rng));
  });
  return out;
}

struct HostPlanes {
  std::vector<std::uint8_t> plane;  // coded exponent plane
  std::vector<std::uint8_t> sm;
  std::size_t n = 0;
  Codec codec = Codec::kRaw;
};

bool encode(const std::uint16_t* elements, std::size_t n, Codec codec, zipmoe::ThreadPool* pool, HostPlanes* out) {
  std::vector<std::uint8_t> symbols(n);
  out->sm.resize(n);
  out->n = n;
  codec::split_planes(DType::kBF16, elements, n, symbols.data(), out->sm.data());
  codec::EncodeOptions options;
  options.codec = codec;
  codec::PlaneEncodeResult result;
  out->plane.clear();
  const Status st = codec::encode_plane(symbols.data(), n, options, pool, &out->plane, &result);
  out->codec = result.codec;
  if (!st.ok()) report(false, "encode: " + st.message());
  return st.ok();
}

// The reference: the CPU scalar decoder (threads decode different segments).
Status cpu_reference(const HostPlanes& h, std::vector<std::uint16_t>* out, zipmoe::ThreadPool* pool) {
  out->assign(h.n, 0);
  codec::CodedPlane parsed;
  ZIPMOE_RETURN_IF_ERROR(codec::CodedPlane::parse(h.plane.data(), h.plane.size(), &parsed));
  return parsed.decode(codec::make_merge_target(DType::kBF16, h.sm.data(), h.n, out->data()), pool,
                       zipmoe::Isa::kScalar);
}

struct DevicePlanes {
  cuda::DeviceBuffer plane, sm, out;
  cuda::PreparedPlane prepared;
};

Status upload_planes(const HostPlanes& h, DevicePlanes* d) {
  ZIPMOE_RETURN_IF_ERROR(cuda::PreparedPlane::prepare(h.plane.data(), h.plane.size(), &d->prepared));
  ZIPMOE_RETURN_IF_ERROR(cuda::DeviceBuffer::allocate(h.plane.size(), &d->plane));
  ZIPMOE_RETURN_IF_ERROR(d->plane.upload(h.plane.data(), h.plane.size()));
  ZIPMOE_RETURN_IF_ERROR(cuda::DeviceBuffer::allocate(h.sm.size(), &d->sm));
  ZIPMOE_RETURN_IF_ERROR(d->sm.upload(h.sm.data(), h.sm.size()));
  ZIPMOE_RETURN_IF_ERROR(cuda::DeviceBuffer::allocate(2 * h.n, &d->out));
  // Poisoned, so that an element the kernels never write is a mismatch.
  return d->out.upload(std::vector<std::uint8_t>(2 * h.n, 0xA5).data(), 2 * h.n);
}

bool upload(const HostPlanes& h, DevicePlanes* d) {
  const Status st = upload_planes(h, d);
  if (!st.ok()) report(false, "upload: " + st.message());
  return st.ok();
}

cuda::DecodeJob job_of(DevicePlanes& d) {
  cuda::DecodeJob job;
  job.plane = &d.prepared;
  job.device_plane = static_cast<const std::uint8_t*>(d.plane.data());
  job.device_sm = static_cast<const std::uint8_t*>(d.sm.data());
  job.dtype = DType::kBF16;
  job.device_out = d.out.data();
  return job;
}

// Median device time (ms) of `runs` decodes of the batch; negative on error.
double time_decode(cuda::Decoder& decoder, const std::vector<cuda::DecodeJob>& jobs, int runs) {
  cudaEvent_t start, stop;
  if (!check_cuda(cudaEventCreate(&start), "event") || !check_cuda(cudaEventCreate(&stop), "event")) return -1;
  std::vector<double> ms;
  for (int r = 0; r < runs + 1; ++r) {  // the first run warms up
    const Status staged = decoder.stage(jobs.data(), jobs.size());  // host work, not timed
    cudaEventRecord(start, nullptr);
    const Status launched = staged.ok() ? decoder.launch(nullptr) : staged;
    cudaEventRecord(stop, nullptr);
    const Status st = launched.ok() ? decoder.wait() : launched;
    if (!st.ok()) {
      report(false, "GPU decode: " + st.message());
      return -1;
    }
    float elapsed = 0;
    cudaEventElapsedTime(&elapsed, start, stop);
    if (r > 0) ms.push_back(elapsed);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

bool same_as_reference(DevicePlanes& d, const std::vector<std::uint16_t>& reference, std::size_t* first_mismatch) {
  std::vector<std::uint16_t> got(reference.size());
  const Status st = d.out.download(got.data(), 2 * got.size());
  if (!st.ok()) {
    report(false, "download: " + st.message());
    return false;
  }
  *first_mismatch = 0;
  while (*first_mismatch < got.size() && got[*first_mismatch] == reference[*first_mismatch]) ++*first_mismatch;
  return *first_mismatch == got.size();
}

// One tensor: encode, CPU reference, GPU exactness, GPU timing.
void bench_tensor(const std::string& name, const std::vector<std::uint16_t>& weights, int runs,
                  zipmoe::ThreadPool* pool) {
  for (Codec codec : {Codec::kHuffman, Codec::kRans}) {
    const std::string label = name + " " + zipmoe::codec_name(codec);
    HostPlanes h;
    auto t0 = std::chrono::steady_clock::now();
    if (!encode(weights.data(), weights.size(), codec, pool, &h)) continue;
    const double encode_s = seconds_since(t0);
    std::vector<std::uint16_t> reference;
    t0 = std::chrono::steady_clock::now();
    const Status cpu = cpu_reference(h, &reference, pool);
    const double cpu_s = seconds_since(t0);
    report(cpu.ok() && reference == weights, label + ": CPU scalar decoder round trip");
    DevicePlanes d;
    if (!upload(h, &d)) continue;
    cuda::Decoder decoder;
    const std::vector<cuda::DecodeJob> jobs{job_of(d)};
    const double ms = time_decode(decoder, jobs, runs);
    if (ms < 0) continue;
    std::size_t mismatch = 0;
    const bool exact = same_as_reference(d, reference, &mismatch);
    report(exact, label + ": GPU output bit-identical to the CPU scalar decoder" +
                      (exact ? std::string() : " (first difference at element " + std::to_string(mismatch) + ")"));
    const double bytes = 2.0 * double(weights.size());
    std::printf("  %-28s codec %-8s n=%zu  size %.4f of bf16  GPU %.3f ms = %.1f GB/s  "
                "(CPU scalar, %d threads: %.1f GB/s; encode %.2f s)\n",
                label.c_str(), zipmoe::codec_name(h.codec), weights.size(),
                double(h.plane.size() + h.sm.size()) / bytes, ms, bytes / (ms * 1e6), pool->num_threads(),
                bytes / (cpu_s * 1e9), encode_s);
    std::fflush(stdout);
  }
}

void bench_batch(int experts, int runs, zipmoe::ThreadPool* pool) {
  constexpr std::size_t kRows = 2048, kCols = 1408;
  const std::size_t n = kRows * kCols;
  std::vector<std::vector<std::uint16_t>> tensors;
  for (int e = 0; e < experts; ++e) tensors.push_back(gaussian_bf16(n, 1000 + e, pool));
  for (Codec codec : {Codec::kHuffman, Codec::kRans}) {
    const std::string label = std::to_string(experts) + " experts 2048x1408 " + zipmoe::codec_name(codec);
    std::vector<HostPlanes> hosts(experts);
    std::vector<DevicePlanes> devices(experts);
    std::vector<std::vector<std::uint16_t>> references(experts);
    bool ok = true;
    std::size_t coded = 0;
    for (int e = 0; e < experts && ok; ++e) {
      ok = encode(tensors[e].data(), n, codec, pool, &hosts[e]) && cpu_reference(hosts[e], &references[e], pool).ok() &&
           upload(hosts[e], &devices[e]);
      coded += hosts[e].plane.size() + hosts[e].sm.size();
    }
    if (!ok) {
      report(false, label + ": setup");
      continue;
    }
    std::vector<cuda::DecodeJob> jobs;
    for (auto& d : devices) jobs.push_back(job_of(d));
    cuda::Decoder decoder;
    const double ms = time_decode(decoder, jobs, runs);
    if (ms < 0) continue;
    bool exact = true;
    for (int e = 0; e < experts; ++e) {
      std::size_t mismatch = 0;
      exact = exact && same_as_reference(devices[e], references[e], &mismatch) && references[e] == tensors[e];
    }
    report(exact, label + ": one batched call, every tensor bit-identical to the CPU scalar decoder");
    const double bytes = 2.0 * double(n) * experts;
    std::printf("  %-28s size %.4f of bf16  GPU %.3f ms = %.1f GB/s (%.1f us per expert)\n", label.c_str(),
                double(coded) / bytes, ms, bytes / (ms * 1e6), 1000.0 * ms / experts);
    std::fflush(stdout);
  }
}

// Corrupt planes: the GPU must fail exactly when the CPU fails, and agree otherwise.
void check_corruption(zipmoe::ThreadPool* pool) {
  const auto weights = gaussian_bf16(300000, 77, pool);
  std::mt19937_64 rng(5);
  cuda::Decoder decoder;
  for (Codec codec : {Codec::kHuffman, Codec::kRans}) {
    HostPlanes clean;
    if (!encode(weights.data(), weights.size(), codec, pool, &clean)) continue;
    int disagreements = 0, rejected = 0;
    constexpr int kTrials = 150;
    for (int t = 0; t < kTrials; ++t) {
      HostPlanes h = clean;
      const std::size_t at = h.plane.size() / 16 + rng() % (h.plane.size() - h.plane.size() / 16);
      if (t % 3 == 2) {
        for (std::size_t i = at; i < std::min(h.plane.size(), at + 32); ++i) h.plane[i] = std::uint8_t(rng());
      } else {
        h.plane[at] ^= std::uint8_t(1u << (rng() % 8));
      }
      std::vector<std::uint16_t> reference;
      const Status cpu = cpu_reference(h, &reference, pool);
      rejected += !cpu.ok();
      DevicePlanes d;
      const Status prepared = cuda::PreparedPlane::prepare(h.plane.data(), h.plane.size(), &d.prepared);
      if (prepared.ok() && !upload(h, &d)) return;
      const cuda::DecodeJob job = job_of(d);
      const Status gpu = prepared.ok() ? decoder.decode(&job, 1) : prepared;
      std::size_t mismatch = 0;
      if (cpu.ok() != gpu.ok() || (cpu.ok() && !same_as_reference(d, reference, &mismatch))) {
        ++disagreements;
        if (disagreements <= 3) {
          std::printf("  corrupt %s trial %d: CPU '%s', GPU '%s'\n", zipmoe::codec_name(codec), t,
                      cpu.ok() ? "ok" : cpu.message().c_str(), gpu.ok() ? "ok" : gpu.message().c_str());
        }
      }
    }
    report(disagreements == 0, std::string("corrupt ") + zipmoe::codec_name(codec) + " planes: GPU agrees with the CPU (" +
                                   std::to_string(rejected) + " of " + std::to_string(kTrials) + " rejected)");
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t elements = std::size_t(64) << 20;
  std::size_t max_file_elements = std::size_t(512) << 20;
  int runs = 10, experts = 60;
  std::string file;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--elements") {
      elements = std::stoull(next());
    } else if (a == "--runs") {
      runs = std::max(1, std::stoi(next()));
    } else if (a == "--experts") {
      experts = std::max(1, std::stoi(next()));
    } else if (a == "--file") {
      file = next();
    } else if (a == "--max-file-elements") {
      max_file_elements = std::stoull(next());
    } else {
      std::fprintf(stderr,
                   "usage: cuda_bench [--elements N] [--runs R] [--experts E] [--file PATH] "
                   "[--max-file-elements N]\n");
      return 2;
    }
  }
  if (!cuda::cuda_available()) {
    report(false, "no CUDA GPU on this machine");
    return 1;
  }
  cudaDeviceProp props;
  if (check_cuda(cudaGetDeviceProperties(&props, 0), "device properties")) {
    std::printf("device: %s, %d SMs, compute capability %d.%d, %.1f GiB\n", props.name, props.multiProcessorCount,
                props.major, props.minor, double(props.totalGlobalMem) / (1u << 30));
  }
  zipmoe::ThreadPool pool(0);
  std::printf("host: %d threads; CPU reference = scalar decoder\n", pool.num_threads());

  auto t0 = std::chrono::steady_clock::now();
  bench_tensor("synthetic N(0,0.02)", gaussian_bf16(elements, 1, &pool), runs, &pool);
  bench_batch(experts, runs, &pool);
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary | std::ios::ate);
    if (!in) {
      report(false, "cannot open " + file);
    } else {
      const std::size_t bytes = static_cast<std::size_t>(in.tellg());
      const std::size_t n = std::min(bytes / 2, max_file_elements);
      std::vector<std::uint16_t> weights(n);
      in.seekg(0);
      in.read(reinterpret_cast<char*>(weights.data()), std::streamsize(2 * n));
      if (!in || n == 0) {
        report(false, "cannot read " + file);
      } else {
        bench_tensor("file (" + std::to_string(n) + " bf16)", weights, runs, &pool);
      }
    }
  }
  check_corruption(&pool);
  std::printf("total %.1f s; %s\n", seconds_since(t0), g_failures == 0 ? "ALL PASS" : "FAILURES");
  return g_failures == 0 ? 0 : 1;
}
