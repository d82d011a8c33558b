#include "common/checksum.h"

#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

namespace zipmoe {

namespace {

constexpr std::uint32_t kPolyReflected = 0x82F63B78u;

struct Tables {
  std::uint32_t t[8][256];
  Tables() {
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolyReflected : c >> 1;
      t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
    }
  }
};

const Tables& tables() {
  static const Tables tab;
  return tab;
}

inline std::uint64_t load_u64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Raw register update (no pre/post inversion): the linear map the combine step relies on.
std::uint32_t raw_portable(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  const Tables& tb = tables();
  while (n && (reinterpret_cast<std::uintptr_t>(p) & 7)) {
    crc = (crc >> 8) ^ tb.t[0][(crc ^ *p++) & 0xff];
    --n;
  }
  while (n >= 8) {
    std::uint64_t v = load_u64(p) ^ crc;
    crc = tb.t[7][v & 0xff] ^ tb.t[6][(v >> 8) & 0xff] ^ tb.t[5][(v >> 16) & 0xff] ^
          tb.t[4][(v >> 24) & 0xff] ^ tb.t[3][(v >> 32) & 0xff] ^ tb.t[2][(v >> 40) & 0xff] ^
          tb.t[1][(v >> 48) & 0xff] ^ tb.t[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = (crc >> 8) ^ tb.t[0][(crc ^ *p++) & 0xff];
  return crc;
}

// a * b modulo the CRC polynomial, both in the reflected bit order.
std::uint32_t multiply_mod_poly(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if (a & 0x80000000u) product ^= b;
    a <<= 1;
    b = (b & 1) ? (b >> 1) ^ kPolyReflected : b >> 1;
  }
  return product;
}

// Three lanes of kLaneBytes each are hashed independently and then combined:
// raw(s, A||B) = raw(s, A) * x^(8|B|) xor raw(0, B).
constexpr std::size_t kLaneBytes = 4096;

std::uint32_t lane_shift_constant() {
  // raw(x^0, zeros(n)) == x^(8n); x^0 is 0x80000000 in reflected order.
  static const std::uint32_t k = [] {
    static const unsigned char zeros[kLaneBytes] = {};
    return raw_portable(0x80000000u, zeros, kLaneBytes);
  }();
  return k;
}

#if defined(__x86_64__)
bool have_hw() {
  static const bool hw = [] {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 20));
  }();
  return hw;
}

__attribute__((target("sse4.2"))) inline std::uint64_t hw_step(std::uint64_t crc, std::uint64_t v) {
  return _mm_crc32_u64(crc, v);
}
__attribute__((target("sse4.2"))) inline std::uint32_t hw_byte(std::uint32_t crc, unsigned char v) {
  return _mm_crc32_u8(crc, v);
}
#define ZIPMOE_HW_TARGET __attribute__((target("sse4.2")))
#elif defined(__aarch64__)
bool have_hw() {
  static const bool hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
  return hw;
}
__attribute__((target("+crc"))) inline std::uint64_t hw_step(std::uint64_t crc, std::uint64_t v) {
  return __crc32cd(static_cast<std::uint32_t>(crc), v);
}
__attribute__((target("+crc"))) inline std::uint32_t hw_byte(std::uint32_t crc, unsigned char v) {
  return __crc32cb(crc, v);
}
#define ZIPMOE_HW_TARGET __attribute__((target("+crc")))
#endif

#ifdef ZIPMOE_HW_TARGET
ZIPMOE_HW_TARGET std::uint32_t raw_hw(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  while (n && (reinterpret_cast<std::uintptr_t>(p) & 7)) {
    crc = hw_byte(crc, *p++);
    --n;
  }
  const std::uint32_t shift = lane_shift_constant();
  while (n >= 3 * kLaneBytes) {
    std::uint64_t c0 = crc, c1 = 0, c2 = 0;
    const unsigned char* p1 = p + kLaneBytes;
    const unsigned char* p2 = p + 2 * kLaneBytes;
    for (std::size_t i = 0; i < kLaneBytes; i += 8) {
      c0 = hw_step(c0, load_u64(p + i));
      c1 = hw_step(c1, load_u64(p1 + i));
      c2 = hw_step(c2, load_u64(p2 + i));
    }
    crc = multiply_mod_poly(static_cast<std::uint32_t>(c0), shift) ^ static_cast<std::uint32_t>(c1);
    crc = multiply_mod_poly(crc, shift) ^ static_cast<std::uint32_t>(c2);
    p += 3 * kLaneBytes;
    n -= 3 * kLaneBytes;
  }
  std::uint64_t c = crc;
  while (n >= 8) {
    c = hw_step(c, load_u64(p));
    p += 8;
    n -= 8;
  }
  crc = static_cast<std::uint32_t>(c);
  while (n--) crc = hw_byte(crc, *p++);
  return crc;
}
#endif

}  // namespace

std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc) {
  return ~raw_portable(~crc, static_cast<const unsigned char*>(data), size);
}

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) {
#ifdef ZIPMOE_HW_TARGET
  if (have_hw()) return ~raw_hw(~crc, static_cast<const unsigned char*>(data), size);
#endif
  return crc32c_portable(data, size, crc);
}

}  // namespace zipmoe
