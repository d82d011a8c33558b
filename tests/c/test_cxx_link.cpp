// The public C++ API (include/zipmoe/*.h) linked from the shared library
// libzipmoe, as an application built against an install would use it: calls
// resolve to the library's exported symbols, and a zipmoe::Error thrown inside
// the library is caught here by its class.
//
//   zipmoe_cxx_link_tests MODEL.zmoe
#include <cstdint>
#include <cstdio>
#include <vector>

#include "zipmoe.h"
#include "zipmoe/codec.h"
#include "zipmoe/error.h"
#include "zipmoe/model.h"

namespace {

int failures = 0;

void check(bool condition, const char* what) {
  if (!condition) {
    ++failures;
    std::fprintf(stderr, "CHECK failed: %s\n", what);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL.zmoe\n", argv[0]);
    return 2;
  }
  std::vector<std::uint16_t> weights(4096);
  for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = static_cast<std::uint16_t>(0x3C00 + (i * 37) % 911);
  const std::vector<std::uint8_t> blob = zipmoe::compress(weights.data(), zipmoe::DType::kBF16, {64, 64});
  std::vector<std::uint16_t> back(weights.size());
  zipmoe::decompress(blob.data(), blob.size(), back.data(), back.size() * 2);
  check(back == weights, "compress/decompress round trip");

  bool caught = false;
  try {
    std::vector<std::uint8_t> damaged = blob;
    damaged[damaged.size() / 2] ^= 0x55;
    zipmoe::decompress(damaged.data(), damaged.size(), back.data(), back.size() * 2);
  } catch (const zipmoe::FormatError&) {  // ChecksumError is a FormatError
    caught = true;
  }
  check(caught, "a damaged blob throws zipmoe::FormatError across the library boundary");

  zipmoe::ModelOptions options;
  options.threads = 2;
  zipmoe::Model model = zipmoe::Model::load(argv[1], options);
  check(model.info().architecture == "qwen3_moe", "Model::load through the shared library");
  const std::vector<float> logits = model.logits({1, 2, 3});
  check(logits.size() == 3 * model.info().vocab_size, "logits");

  // The C API in the same program.
  check(zipmoe_api_version() == ZIPMOE_API_VERSION, "zipmoe_api_version");
  std::printf("%s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
