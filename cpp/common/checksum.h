// CRC-32C (Castagnoli), the checksum of every zipmoe blob and container chunk.
//
// Hardware-accelerated where the CPU has it (SSE4.2 on x86-64, the CRC extension
// on AArch64), three independent lanes combined for throughput; a table-driven
// fallback elsewhere. Every path returns the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zipmoe {

// The standard CRC-32C of data[0, size), continuing from `crc` (the value returned
// for the preceding bytes; 0 for a fresh start). crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

// The table-driven reference path (for tests).
std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc = 0);

}  // namespace zipmoe
