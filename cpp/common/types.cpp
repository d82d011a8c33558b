#include <algorithm>
#include <cctype>

#include "zipmoe/types.h"

namespace zipmoe {

namespace {
std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}
}  // namespace

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
    case DType::kF16: return 2;
    case DType::kF32: return 4;
    case DType::kU8: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kF32: return "f32";
    case DType::kU8: return "u8";
  }
  return "unknown";
}

bool parse_dtype(const std::string& name, DType* dtype) {
  const std::string s = lowercase(name);
  if (s == "bf16" || s == "bfloat16") {
    *dtype = DType::kBF16;
  } else if (s == "f16" || s == "float16" || s == "fp16" || s == "half") {
    *dtype = DType::kF16;
  } else if (s == "f32" || s == "float32" || s == "fp32" || s == "float") {
    *dtype = DType::kF32;
  } else if (s == "u8" || s == "uint8") {
    *dtype = DType::kU8;
  } else {
    return false;
  }
  return true;
}

bool is_valid_dtype(std::uint8_t value) { return value >= 1 && value <= 4; }

bool is_float_dtype(DType dtype) { return dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32; }

const char* codec_name(Codec codec) {
  switch (codec) {
    case Codec::kRaw: return "raw";
    case Codec::kHuffman: return "huffman";
    case Codec::kRans: return "rans";
    case Codec::kConstant: return "constant";
    case Codec::kLz4hc: return "lz4hc";
    case Codec::kAuto: return "auto";
  }
  return "unknown";
}

bool parse_codec(const std::string& name, Codec* codec) {
  const std::string s = lowercase(name);
  for (Codec c : {Codec::kRaw, Codec::kHuffman, Codec::kRans, Codec::kConstant, Codec::kLz4hc, Codec::kAuto}) {
    if (s == codec_name(c)) {
      *codec = c;
      return true;
    }
  }
  return false;
}

}  // namespace zipmoe
