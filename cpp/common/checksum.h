// CRC-32C (Castagnoli), the checksum of every zipmoe blob and container chunk.
//
// Hardware-accelerated where the CPU has it (SSE4.2 on x86-64, the CRC extension
// on AArch64), three independent lanes combined for throughput (by a carry-less
// multiply where the CPU has one); a table-driven fallback elsewhere. Every path
// returns the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zipmoe {

// The standard CRC-32C of data[0, size), continuing from `crc` (the value returned
// for the preceding bytes; 0 for a fresh start). crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

// The table-driven reference path (for tests).
std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc = 0);

// Continues four independent CRC-32Cs at once: crc[k] = crc32c(data[k], size[k], crc[k])
// for k = 0..3 (sizes may differ, and be 0). Their dependency chains overlap, so
// four short buffers cost about what one buffer of their total size does, where
// four crc32c() calls would each wait on their own chain.
void crc32c_x4(const void* const data[4], const std::size_t size[4], std::uint32_t crc[4]);

// The CRC-32C of A followed by B, from crc_a = crc32c(A), crc_b = crc32c(B) and B's
// size in bytes: pieces checksummed apart (on different threads, or while each is
// hot in cache) give the checksum of the whole. Costs one 32-bit carry-less
// multiply per set bit of size_b / 8 (PCLMULQDQ on x86-64, PMULL on AArch64,
// a bit loop elsewhere). Thread-safe.
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b);

// The reference path of crc32c_combine (for tests).
std::uint32_t crc32c_combine_portable(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b);

}  // namespace zipmoe
