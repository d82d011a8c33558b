// Fuzzes zipmoe::decompress over arbitrary bytes, with the ISA path and thread
// count chosen by the input. Any outcome but a clean result or a zipmoe::Error
// (crash, sanitizer report, hang, other exception) is a bug. The checksum is
// recomputed before decoding on every other input so that the decoders behind
// it are reached too.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/cpu_features.h"
#include "zipmoe/codec.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  std::vector<std::uint8_t> blob(data + 1, data + size);
  if ((control & 1) && blob.size() >= 4) {
    zipmoe::store_le32(blob.data() + blob.size() - 4, zipmoe::crc32c(blob.data(), blob.size() - 4));
  }
  const auto isas = zipmoe::supported_isas();
  const zipmoe::Isa isa = isas[(control >> 1) % isas.size()];
  static zipmoe::ThreadPool pool(2);
  zipmoe::ThreadPool* p = (control & 0x40) ? &pool : nullptr;
  try {
    const zipmoe::BlobInfo info = zipmoe::read_blob_info(blob.data(), blob.size());
    const std::uint64_t bytes = info.num_elements * zipmoe::dtype_size(info.dtype);
    if (bytes > (std::uint64_t(64) << 20)) return 0;  // a valid header may promise more than the fuzzer should allocate
    std::vector<std::uint8_t> out(bytes);
    zipmoe::decompress(blob.data(), blob.size(), out.data(), out.size(), p, isa);
  } catch (const zipmoe::Error&) {
  }
  return 0;
}
