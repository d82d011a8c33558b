// decode_icount: the driver of tools/count_decode_instructions.py, which counts the
// instructions the exponent decoders execute per output symbol.
//
//   decode_icount make BLOB --codec huffman|rans [--elements N]   writes a BF16 blob of
//                                                                 N(0, 0.02) weights
//   decode_icount decode BLOB --isa ISA [--checksummed]           decodes it once
//
// `decode` does nothing but read the blob, parse its plane and call decode_region()
// once; the counter brackets that call (callgrind's --toggle-collect, or the
// translation blocks executed between the two marker calls under qemu).
#include <cstdio>
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

// Empty, out-of-line functions whose execution marks the counted region under qemu.
extern "C" __attribute__((noinline)) void zipmoe_icount_begin() { __asm__ volatile(""); }
extern "C" __attribute__((noinline)) void zipmoe_icount_end() { __asm__ volatile(""); }

extern "C" __attribute__((noinline)) int decode_region(const codec::CodedPlane& plane,
                                                       const codec::MergeTarget& target, Isa isa, bool checksummed) {
  zipmoe_icount_begin();
  Status status;
  if (checksummed) {
    codec::CodedPlane::Checksums sums;
    status = plane.decode_checksummed(target, nullptr, isa, &sums);
  } else {
    status = plane.decode(target, nullptr, isa);
  }
  zipmoe_icount_end();
  return status.ok() ? 0 : 1;
}

namespace {

std::uint16_t to_bf16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

int usage() {
  std::fprintf(stderr,
               "usage: decode_icount make BLOB --codec huffman|rans [--elements N]\n"
               "       decode_icount decode BLOB --isa ISA [--checksummed]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string command = argv[1], path = argv[2];
  std::string codec_name_ = "huffman", isa_name_ = "scalar";
  std::size_t n = std::size_t(1) << 20;
  bool checksummed = false;
  for (int i = 3; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--checksummed") checksummed = true;
    else if (k == "--codec" && i + 1 < argc) codec_name_ = argv[++i];
    else if (k == "--isa" && i + 1 < argc) isa_name_ = argv[++i];
    else if (k == "--elements" && i + 1 < argc) n = std::stoull(argv[++i]);
    else return usage();
  }
  if (command == "make") {
    Codec codec;
    if (!parse_codec(codec_name_, &codec)) return usage();
    std::vector<std::uint16_t> data(n);
    std::mt19937_64 rng(1);
    std::normal_distribution<float> normal(0.f, 0.02f);
    for (auto& v : data) v = to_bf16(normal(rng));
    CompressOptions options;
    options.codec = codec;
    const std::vector<std::uint8_t> blob = compress(data.data(), DType::kBF16, {n}, options, nullptr);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(blob.data()), blob.size());
    return 0;
  }
  if (command != "decode") return usage();
  Isa isa;
  if (!parse_isa(isa_name_, &isa) || !isa_supported(isa)) return usage();
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<std::uint8_t> blob(static_cast<std::size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
  const BlobInfo info = read_blob_info(blob.data(), blob.size());
  if (info.dtype != DType::kBF16 || info.shape.size() != 1) return usage();
  const std::uint8_t* plane_bytes = blob.data() + 8 + 8 + 16;  // magic..ndim, one dimension, the two sizes
  codec::CodedPlane plane;
  throw_if_error(codec::CodedPlane::parse(plane_bytes, info.coded_plane_bytes, &plane));
  std::vector<std::uint16_t> out(info.num_elements);
  const auto target = codec::make_merge_target(DType::kBF16, plane_bytes + info.coded_plane_bytes,
                                               static_cast<std::size_t>(info.num_elements), out.data());
  if (decode_region(plane, target, isa, checksummed) != 0) return 1;
  std::printf("%llu\n", static_cast<unsigned long long>(info.num_elements));
  return 0;
}
