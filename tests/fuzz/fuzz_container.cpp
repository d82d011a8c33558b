// Fuzzes the .zmoe container reader: open (header, sections, index, chunk table,
// metadata), then reading and decoding every tensor, in the pread or mmap mode.
// Any outcome but success or a zipmoe::Error (crash, sanitizer report, hang, other
// exception) is a bug.
//
// Input: a control byte, then the file. Control bits:
//   bit 0  recompute the three section checksums and the header checksum before
//          writing the file, so that mutations reach the parsers behind them;
//   bit 1  recompute every chunk's checksum in the chunk table as well;
//   bit 2  open in mmap mode instead of pread;
//   bit 3  decode on a 2-thread pool.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"
#include "zipmoe/container.h"

namespace {

constexpr std::size_t kHeader = 4096;
constexpr std::size_t kChunkEntry = 40;

bool section(const std::vector<std::uint8_t>& file, std::size_t field, std::uint64_t* offset, std::uint64_t* size) {
  *offset = zipmoe::load_le64(file.data() + field);
  *size = zipmoe::load_le64(file.data() + field + 8);
  return *offset <= file.size() && *size <= file.size() - *offset;
}

void fix_checksums(std::vector<std::uint8_t>& file, bool chunks_too) {
  if (file.size() < kHeader) return;
  std::uint64_t offset = 0, size = 0;
  if (chunks_too && section(file, 64, &offset, &size)) {
    // Chunk table entry (40 bytes): offset u64 at 8, stored size u64 at 16, CRC-32C
    // of the stored bytes u32 at 32.
    for (std::uint64_t at = offset; at + kChunkEntry <= offset + size; at += kChunkEntry) {
      const std::uint64_t chunk_offset = zipmoe::load_le64(file.data() + at + 8);
      const std::uint64_t stored = zipmoe::load_le64(file.data() + at + 16);
      if (chunk_offset <= file.size() && stored <= file.size() - chunk_offset) {
        zipmoe::store_le32(file.data() + at + 32, zipmoe::crc32c(file.data() + chunk_offset, stored));
      }
    }
  }
  const std::size_t sections[3][2] = {{48, 96}, {64, 100}, {80, 104}};
  for (const auto& s : sections) {
    if (section(file, s[0], &offset, &size)) {
      zipmoe::store_le32(file.data() + s[1], zipmoe::crc32c(file.data() + offset, size));
    }
  }
  zipmoe::store_le32(file.data() + kHeader - 4, zipmoe::crc32c(file.data(), kHeader - 4));
}

const std::string& scratch_path() {
  static const std::string path = "/tmp/zipmoe-fuzz-container-" + std::to_string(getpid()) + ".zmoe";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  std::vector<std::uint8_t> file(data + 1, data + size);
  if (control & 1) fix_checksums(file, (control & 2) != 0);
  {
    std::FILE* f = std::fopen(scratch_path().c_str(), "wb");
    if (!f) __builtin_trap();
    if (!file.empty() && std::fwrite(file.data(), 1, file.size(), f) != file.size()) __builtin_trap();
    std::fclose(f);
  }
  static zipmoe::ThreadPool pool(2);
  try {
    const auto reader = zipmoe::ContainerReader::open(
        scratch_path(), (control & 4) ? zipmoe::IoMode::kMmap : zipmoe::IoMode::kPread);
    (void)reader.metadata();
    for (const auto& tensor : reader.tensors()) {
      // The file bounds what a valid tensor may decode to (at most 8 bits of
      // exponent saved per element), but cap what the fuzzer allocates.
      if (tensor.decoded_bytes() > (std::uint64_t(16) << 20)) continue;
      std::vector<std::uint8_t> out(tensor.decoded_bytes());
      try {
        reader.decode_tensor(tensor, out.data(), out.size(), (control & 8) ? &pool : nullptr);
      } catch (const zipmoe::Error&) {
        // A damaged tensor must not stop the others from being tried.
      }
    }
  } catch (const zipmoe::Error&) {
  }
  return 0;
}
