// zipmoe/types.h - element types and codec identifiers shared by the public API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "zipmoe/export.h"

ZIPMOE_PUBLIC_BEGIN
namespace zipmoe {

// Element types zipmoe stores losslessly. The numeric values are part of the
// on-disk formats (docs/FORMAT.md). The engine computes with the float types;
// U8 holds any other tensor as its raw bytes (integer buffers, masks, quantized
// blocks of a --generic conversion), its one byte per element coded like an
// exponent plane.
enum class DType : std::uint8_t {
  kBF16 = 1,
  kF16 = 2,
  kF32 = 3,
  kU8 = 4,
};

// Bytes per element.
std::size_t dtype_size(DType dtype);
// "bf16", "f16", "f32", "u8".
const char* dtype_name(DType dtype);
// Accepts "bf16"/"bfloat16", "f16"/"float16"/"fp16"/"half", "f32"/"float32"/"fp32"/"float", "u8"/"uint8".
bool parse_dtype(const std::string& name, DType* dtype);
// True for a value that names a DType (for validating stored bytes).
bool is_valid_dtype(std::uint8_t value);
// True for BF16, F16 and F32: the types the engine computes with.
bool is_float_dtype(DType dtype);

// How an exponent plane is coded. The numeric values are part of the on-disk
// formats. kAuto is a request only ("pick the smallest"), never stored.
enum class Codec : std::uint8_t {
  kRaw = 0,       // symbols stored as they are
  kHuffman = 1,   // canonical, length-limited Huffman, interleaved streams
  kRans = 2,      // static rANS, interleaved lanes
  kConstant = 3,  // every symbol equal: only the symbol is stored
  kLz4hc = 4,     // LZ4HC blocks (needs a build with liblz4; the ZipMoE paper's codec)
  kAuto = 255,
};

// "raw", "huffman", "rans", "constant", "lz4hc", "auto".
const char* codec_name(Codec codec);
bool parse_codec(const std::string& name, Codec* codec);

// Instruction-set paths of the CPU kernels (see ZIPMOE_ISA in README.md).
enum class Isa : std::uint8_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kNeon = 3 };
constexpr int kNumIsas = 4;

}  // namespace zipmoe
ZIPMOE_PUBLIC_END
