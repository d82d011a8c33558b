// Golden results of MatmulPrecision::kExact: outputs computed once on x86-64 by
// the scalar path, committed as fingerprints (tests/cpp/golden/*.inc), and
// checked on every path of every machine the tests run on (x86 scalar, AVX2,
// AVX-512; aarch64 scalar and NEON under qemu in CI). Inputs come from an
// integer generator and exactly representable values, so they are the same bits
// everywhere (std:: distributions go through the C library's log and differ).
//
// To regenerate after a deliberate change of the canonical order, on x86-64:
//   ZIPMOE_WRITE_GOLDEN=1 build/dev/tests/cpp/zipmoe_tests golden
// which rewrites the .inc files in the source tree from the scalar path.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "test_framework.h"

namespace ztest {

// One committed fingerprint: FNV-1a over the output bytes, the element count,
// and the first element's bits (a hint when the hash differs).
struct GoldenEntry {
  const char* name;
  std::uint64_t hash;
  std::uint32_t count;
  std::uint32_t first_bits;
};

inline std::uint64_t fnv1a(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

// splitmix64: the same stream on every platform.
struct GoldenRandom {
  std::uint64_t state;
  explicit GoldenRandom(std::uint64_t seed) : state(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-scale, scale), in steps of scale * 2^-23 (one rounding of an
  // exact integer: the same float on every IEEE machine).
  float uniform(float scale) {
    const auto units = static_cast<std::int32_t>(next() >> 40) - (1 << 23);
    return static_cast<float>(units) * (scale * 0x1p-23f);
  }
};

inline std::vector<float> golden_floats(std::size_t n, std::uint64_t seed, float scale) {
  GoldenRandom rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(scale);
  return v;
}

inline bool writing_golden() {
  const char* v = std::getenv("ZIPMOE_WRITE_GOLDEN");
  return v && *v && std::strcmp(v, "0") != 0;
}

// Collects the results of one group of golden cases. check() compares each path's
// results with the committed entries; in writing mode the scalar path's results
// replace them (file `file` under tests/cpp/golden/).
class GoldenSet {
 public:
  GoldenSet(const char* file, const GoldenEntry* entries, std::size_t count)
      : file_(file), entries_(entries, entries + count), used_(count, false) {}

  // Results of case `name` on path `isa`.
  void check(zipmoe::Isa isa, const std::string& name, const std::vector<float>& values) {
    const std::uint64_t hash = fnv1a(values.data(), values.size() * sizeof(float));
    std::uint32_t first = 0;
    if (!values.empty()) std::memcpy(&first, values.data(), 4);
    if (writing_golden()) {
      if (isa == zipmoe::Isa::kScalar) {
        written_.push_back({name, hash, static_cast<std::uint32_t>(values.size()), first});
      }
      return;
    }
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const GoldenEntry& e = entries_[i];
      if (name != e.name) continue;
      if (e.hash != hash || e.count != values.size()) {
        report_failure(__FILE__, __LINE__,
                       std::string(zipmoe::isa_name(isa)) + " " + name +
                           ": exact-mode results differ from the golden x86 scalar ones (first element " + hex(first) +
                           ", golden " + hex(e.first_bits) + ")");
      }
      used_[i] = true;
      return;
    }
    report_failure(__FILE__, __LINE__, name + " has no golden entry (regenerate: see tests/cpp/golden.h)");
  }

  // Writes the collected entries (writing mode) or checks that every committed
  // entry was compared at least once.
  void finish() {
    if (!writing_golden()) {
      for (std::size_t i = 0; i < entries_.size(); ++i) {
        if (!used_[i]) report_failure(__FILE__, __LINE__, std::string(file_) + ": no case " + entries_[i].name);
      }
      return;
    }
#if !defined(__x86_64__)
    report_failure(__FILE__, __LINE__, "golden values are generated on x86-64 only");
    return;
#else
    const std::string path = std::string(ZIPMOE_TEST_SOURCE_DIR) + "/golden/" + file_;
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (!f) {
      report_failure(__FILE__, __LINE__, "cannot write " + path);
      return;
    }
    std::fprintf(f, "// Generated on x86-64 by the scalar path: ZIPMOE_WRITE_GOLDEN=1 zipmoe_tests golden\n");
    std::fprintf(f, "// (tests/cpp/golden.h). name, FNV-1a of the output bytes, count, first element's bits.\n");
    for (const Written& w : written_) {
      std::fprintf(f, "{\"%s\", 0x%016llxull, %u, 0x%08xu},\n", w.name.c_str(),
                   static_cast<unsigned long long>(w.hash), w.count, w.first_bits);
    }
    std::fclose(f);
    std::fprintf(stderr, "  wrote %zu golden entries to %s\n", written_.size(), path.c_str());
#endif
  }

 private:
  struct Written {
    std::string name;
    std::uint64_t hash;
    std::uint32_t count;
    std::uint32_t first_bits;
  };
  static std::string hex(std::uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof(b), "0x%08x", v);
    return b;
  }
  const char* file_;
  std::vector<GoldenEntry> entries_;
  std::vector<Written> written_;
  std::vector<bool> used_;
};

}  // namespace ztest
