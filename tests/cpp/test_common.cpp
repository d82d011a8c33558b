#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/cpu_features.h"
#include "common/system_memory.h"
#include "test_framework.h"
#include "zipmoe/error.h"
#include "zipmoe/thread_pool.h"

ZTEST(crc32c_known_vectors) {
  ZCHECK_EQ(zipmoe::crc32c("123456789", 9), 0xE3069283u);
  ZCHECK_EQ(zipmoe::crc32c_portable("123456789", 9), 0xE3069283u);
  ZCHECK_EQ(zipmoe::crc32c("", 0), 0u);
  std::vector<std::uint8_t> zeros(32, 0);
  ZCHECK_EQ(zipmoe::crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);  // RFC 3720 B.4
}

ZTEST(crc32c_hardware_matches_portable_at_every_length_and_alignment) {
  std::mt19937 rng(7);
  std::vector<std::uint8_t> data(3 * 4096 * 3 + 123);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  for (std::size_t len : {0, 1, 7, 8, 9, 63, 4096, 3 * 4096 - 1, 3 * 4096, 3 * 4096 + 5, 9 * 4096, 9 * 4096 + 100}) {
    for (std::size_t off = 0; off < 8; ++off) {
      if (off + len > data.size()) continue;
      ZCHECK_EQ(zipmoe::crc32c(data.data() + off, len), zipmoe::crc32c_portable(data.data() + off, len));
    }
  }
  // Incremental == one shot.
  const std::uint32_t whole = zipmoe::crc32c(data.data(), data.size());
  std::uint32_t part = zipmoe::crc32c(data.data(), 1000);
  part = zipmoe::crc32c(data.data() + 1000, data.size() - 1000, part);
  ZCHECK_EQ(whole, part);
}

// crc(A||B) from crc(A), crc(B) and |B|, for every split of a buffer that covers the
// byte-by-byte sizes (0..7), every power of two up to the lane size and odd sizes
// around them, on the hardware path and the portable one.
ZTEST(crc32c_combine_matches_one_shot_at_every_split) {
  std::mt19937 rng(11);
  std::vector<std::uint8_t> data(5 * 4096 + 77);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  std::vector<std::size_t> sizes;
  for (std::size_t s = 0; s < 64; ++s) sizes.push_back(s);
  for (std::size_t p = 64; p <= 4 * 4096; p *= 2) {
    for (std::size_t s : {p - 1, p, p + 1, p + 13}) sizes.push_back(s);
  }
  sizes.push_back(data.size());
  for (std::size_t size_b : sizes) {
    for (std::size_t size_a : {std::size_t(0), std::size_t(1), std::size_t(37), std::size_t(4096)}) {
      if (size_a + size_b > data.size()) continue;
      const std::uint32_t whole = zipmoe::crc32c(data.data(), size_a + size_b);
      const std::uint32_t a = zipmoe::crc32c(data.data(), size_a);
      const std::uint32_t b = zipmoe::crc32c(data.data() + size_a, size_b);
      ZCHECK_EQ(zipmoe::crc32c_combine(a, b, size_b), whole);
      ZCHECK_EQ(zipmoe::crc32c_combine_portable(a, b, size_b), whole);
    }
  }
  // Sizes far beyond any buffer: the hardware factors agree with the portable ones,
  // including past 2^60 bytes where the hardware path borrows the portable factors.
  for (std::uint64_t size : {std::uint64_t(1) << 33, (std::uint64_t(1) << 40) + 12345, ~std::uint64_t(0),
                             (std::uint64_t(1) << 61) + 8, std::uint64_t(0x5a5a5a5a5a5a5a5aull)}) {
    for (std::uint32_t a : {0u, 1u, 0x80000000u, 0xdeadbeefu}) {
      ZCHECK_EQ(zipmoe::crc32c_combine(a, 0x12345678u, size), zipmoe::crc32c_combine_portable(a, 0x12345678u, size));
    }
  }
}

// Four CRCs continued at once equal four one-at-a-time CRCs, for every mix of
// sizes (equal, one empty, each the longest, tails of 1-7 bytes) and offsets.
ZTEST(crc32c_x4_matches_four_single_crcs) {
  std::mt19937 rng(13);
  std::vector<std::uint8_t> data(4 * 5000);
  for (auto& b : data) b = static_cast<std::uint8_t>(rng());
  const std::size_t shapes[][4] = {{0, 0, 0, 0},     {1, 2, 3, 4},         {8, 8, 8, 8},       {0, 100, 200, 300},
                                   {4999, 7, 64, 0}, {1130, 1121, 1139, 1127}, {365, 360, 371, 355}, {17, 4096, 9, 2047}};
  for (const auto& shape : shapes) {
    for (std::size_t offset : {0, 3}) {
      const void* ptr[4];
      std::size_t size[4];
      std::uint32_t crc[4], want[4];
      for (int k = 0; k < 4; ++k) {
        ptr[k] = data.data() + 5000 * k + offset;
        size[k] = shape[k];
        crc[k] = static_cast<std::uint32_t>(rng());  // continuing from earlier bytes
        want[k] = zipmoe::crc32c(ptr[k], size[k], crc[k]);
        ZCHECK_EQ(want[k], zipmoe::crc32c_portable(ptr[k], size[k], crc[k]));
      }
      zipmoe::crc32c_x4(ptr, size, crc);
      for (int k = 0; k < 4; ++k) ZCHECK_EQ(crc[k], want[k]);
    }
  }
}

ZTEST(thread_pool_runs_every_index_once) {
  for (int threads : {1, 2, 4}) {
    zipmoe::ThreadPool pool(threads);
    ZCHECK_EQ(pool.num_threads(), threads);
    for (std::size_t n : {0, 1, 3, 1000}) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, [&](std::size_t i) { hits[i]++; });
      for (std::size_t i = 0; i < n; ++i) ZCHECK_EQ(hits[i].load(), 1);
    }
  }
}

ZTEST(thread_pool_rethrows_lowest_index_and_survives) {
  zipmoe::ThreadPool pool(3);
  std::string message;
  try {
    pool.parallel_for(100, [](std::size_t i) {
      if (i == 17 || i == 60) throw std::runtime_error("boom " + std::to_string(i));
    });
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  ZCHECK_EQ(message, std::string("boom 17"));
  std::atomic<int> count{0};
  pool.parallel_for(50, [&](std::size_t) { count++; });
  ZCHECK_EQ(count.load(), 50);
}

ZTEST(thread_pool_nested_calls_run_inline) {
  zipmoe::ThreadPool pool(2);
  std::atomic<int> count{0};
  pool.parallel_for(4, [&](std::size_t) { pool.parallel_for(5, [&](std::size_t) { count++; }); });
  ZCHECK_EQ(count.load(), 20);
}

ZTEST(thread_pool_refuses_more_than_the_maximum) {
  // (A thread the system refuses to start is tested from Python, under an address-space limit.)
  ZCHECK_THROWS(zipmoe::ThreadPool(zipmoe::ThreadPool::kMaxThreads + 1), zipmoe::InvalidArgumentError);
  ZCHECK_THROWS(zipmoe::ThreadPool(1 << 30), zipmoe::InvalidArgumentError);
  zipmoe::ThreadPool pool(-1);  // one per hardware thread, within the maximum
  ZCHECK(pool.num_threads() >= 1 && pool.num_threads() <= zipmoe::ThreadPool::kMaxThreads);
}

ZTEST(isa_parsing_and_support) {
  zipmoe::Isa isa;
  ZCHECK(zipmoe::parse_isa("AVX512", &isa) && isa == zipmoe::Isa::kAvx512);
  ZCHECK(zipmoe::parse_isa("scalar", &isa) && isa == zipmoe::Isa::kScalar);
  ZCHECK(!zipmoe::parse_isa("sse9", &isa));
  ZCHECK(zipmoe::isa_supported(zipmoe::Isa::kScalar));
  ZCHECK(zipmoe::isa_supported(zipmoe::best_isa()));
#if defined(__aarch64__)
  ZCHECK(zipmoe::isa_supported(zipmoe::Isa::kNeon));
  ZCHECK(!zipmoe::isa_supported(zipmoe::Isa::kAvx2));
#else
  ZCHECK(!zipmoe::isa_supported(zipmoe::Isa::kNeon));
#endif
}

ZTEST(thread_pool_survives_many_short_jobs) {
  // Batch-1 decoding issues thousands of tiny parallel sections: every one must
  // run each index exactly once and return only when all are done.
  for (int threads : {2, 3}) {
    zipmoe::ThreadPool pool(threads);
    std::vector<int> slots(7, 0);
    long long total = 0;
    for (int round = 0; round < 20000; ++round) {
      const std::size_t n = 1 + round % 7;
      pool.parallel_for(n, [&](std::size_t i) { slots[i] += 1; });
      for (std::size_t i = 0; i < n; ++i) total += slots[i];
      std::fill(slots.begin(), slots.end(), 0);
    }
    long long expected = 0;
    for (int round = 0; round < 20000; ++round) expected += 1 + round % 7;
    ZCHECK_EQ(total, expected);
  }
}

// ---------------------------------------------------------------------------- available memory

ZTEST(available_memory_is_meminfo_lowered_to_a_cgroup_headroom) {
  const std::string meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\n"
                              "MemAvailable:    2000000 kB\nBuffers:           100 kB\n";
  // no cgroup limit: MemAvailable, in bytes
  zipmoe::AvailableMemory a = zipmoe::available_memory_from(meminfo, 0, 0, 0, "");
  ZCHECK(a.known);
  ZCHECK_EQ(a.bytes, std::uint64_t(2000000) * 1024);
  ZCHECK(a.source.find("MemAvailable") != std::string::npos);
  // a cgroup limit of 1 GB holding 600 MB, 200 MB of it reclaimable file cache: 600 MB of headroom
  a = zipmoe::available_memory_from(meminfo, 1000000000, 600000000, 200000000, "/sys/fs/cgroup/job");
  ZCHECK_EQ(a.bytes, std::uint64_t(600000000));
  ZCHECK(a.source.find("/sys/fs/cgroup/job") != std::string::npos);
  // a cgroup over its limit has none; one far above MemAvailable changes nothing
  ZCHECK_EQ(zipmoe::available_memory_from(meminfo, 1000, 5000, 0, "x").bytes, std::uint64_t(0));
  ZCHECK_EQ(zipmoe::available_memory_from(meminfo, std::uint64_t(1) << 40, 0, 0, "x").bytes,
            std::uint64_t(2000000) * 1024);
  // keys match whole (MemAvailableX is not MemAvailable); no figure at all: unknown
  ZCHECK(!zipmoe::available_memory_from("MemAvailableX: 5 kB\n", 0, 0, 0, "").known);
  ZCHECK(!zipmoe::available_memory_from("", 0, 0, 0, "").known);
#if defined(__linux__)
  const zipmoe::AvailableMemory here = zipmoe::available_memory();
  ZCHECK(here.known && here.bytes > 0);
#endif
}
