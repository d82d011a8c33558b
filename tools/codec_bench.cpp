// codec_bench: native micro-benchmark of the exponent coders.
//
//   codec_bench [--dtype bf16|f16|f32] [--elements N] [--sigma S] [--input FILE]
//               [--codec auto|huffman|rans|raw] [--isa ISA|all] [--threads T] [--runs R]
//
// Compresses N(0, sigma) weights (or the raw little-endian elements of FILE),
// checks that every ISA decodes them bit-exactly, and prints the ratio, the
// order-0 bound and decode throughput (GB/s of output, median of R runs) for the
// decode kernel alone and for decompress() (checksum included).
#include <algorithm>
#include <chrono>
#include <cmath>
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
#include "zipmoe/codec.h"

using namespace zipmoe;

namespace {

std::uint16_t to_bf16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double time_median(int runs, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int r = 0; r < runs; ++r) {
    const auto a = std::chrono::steady_clock::now();
    f();
    const auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double>(b - a).count());
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dtype_s = "bf16", codec_s = "auto", isa_s = "all", input;
  std::size_t n = 64u << 20;
  double sigma = 0.02;
  int threads = 1, runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--dtype") dtype_s = v;
    else if (k == "--elements") n = std::stoull(v);
    else if (k == "--sigma") sigma = std::stod(v);
    else if (k == "--input") input = v;
    else if (k == "--codec") codec_s = v;
    else if (k == "--isa") isa_s = v;
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--runs") runs = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  DType dtype;
  Codec codec;
  if (!parse_dtype(dtype_s, &dtype) || !parse_codec(codec_s, &codec)) {
    std::fprintf(stderr, "bad --dtype or --codec\n");
    return 2;
  }
  const std::size_t esize = dtype_size(dtype);
  std::vector<std::uint8_t> data;
  if (!input.empty()) {
    std::ifstream f(input, std::ios::binary);
    data.assign(std::istreambuf_iterator<char>(f), {});
    n = data.size() / esize;
    data.resize(n * esize);
  } else {
    data.resize(n * esize);
    std::mt19937_64 rng(1);
    std::normal_distribution<float> normal(0.f, float(sigma));
    for (std::size_t i = 0; i < n; ++i) {
      const float v = normal(rng);
      if (dtype == DType::kF32) {
        std::memcpy(&data[4 * i], &v, 4);
      } else {
        const std::uint16_t b = to_bf16(v);  // F16 runs reuse BF16 bits: the benchmark only times the codec
        std::memcpy(&data[2 * i], &b, 2);
      }
    }
  }
  ThreadPool pool(threads);
  ThreadPool* p = threads > 1 ? &pool : nullptr;

  CompressOptions options;
  options.codec = codec;
  std::vector<std::uint8_t> blob;
  const double encode_s = time_median(1, [&] { blob = compress(data.data(), dtype, {n}, options, p); });
  const BlobInfo info = read_blob_info(blob.data(), blob.size());

  // Order-0 bound: entropy-coded exponent plane + raw SM plane.
  std::vector<std::uint8_t> symbols(n), sm(n * codec::sm_bytes_per_element(dtype));
  codec::split_planes(dtype, data.data(), n, symbols.data(), sm.data());
  const double h = codec::entropy_bits(codec::compute_histogram(symbols.data(), n));
  const double bound = (h / 8.0 * n + sm.size()) / double(data.size());
  std::printf("dtype=%s elements=%zu codec=%s threads=%d\n", dtype_name(dtype), n, codec_name(info.codec), threads);
  std::printf("ratio %.4f of input (%.3fx), order-0 bound %.4f (entropy %.3f bits), excess %.3f%%, encode %.1f MB/s\n",
              double(blob.size()) / data.size(), double(data.size()) / blob.size(), bound, h,
              100.0 * (double(blob.size()) / data.size() / bound - 1.0), data.size() / encode_s / 1e6);

  // The blob's coded plane sits after magic/version/dtype/ndim/shape/sizes.
  const std::uint8_t* plane_bytes = blob.data() + 8 + 8 * 1 + 16;
  codec::CodedPlane plane;
  throw_if_error(codec::CodedPlane::parse(plane_bytes, info.coded_plane_bytes, &plane));
  const std::uint8_t* sm_plane = plane_bytes + info.coded_plane_bytes;

  std::vector<std::uint8_t> out(data.size());
  for (Isa isa : supported_isas()) {
    if (isa_s != "all" && isa_s != isa_name(isa)) continue;
    std::memset(out.data(), 0, out.size());
    const auto target = codec::make_merge_target(dtype, sm_plane, n, out.data());
    const double kernel_s = time_median(runs, [&] { throw_if_error(plane.decode(target, p, isa)); });
    const bool exact = out == data;
    const double full_s =
        time_median(runs, [&] { decompress(blob.data(), blob.size(), out.data(), out.size(), p, isa); });
    std::printf("  %-7s decode %6.2f GB/s   decompress() %6.2f GB/s   %s\n", isa_name(isa),
                data.size() / kernel_s / 1e9, data.size() / full_s / 1e9, exact ? "bit-exact" : "MISMATCH");
    if (!exact) return 1;
  }
  return 0;
}
