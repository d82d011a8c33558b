#include "common/checksum.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#include <nmmintrin.h>
#include <wmmintrin.h>
#elif defined(__aarch64__)
#include <arm_acle.h>
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#ifndef HWCAP_PMULL
#define HWCAP_PMULL (1 << 4)
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

// a * b modulo the CRC polynomial, both in the reflected bit order (bit i holds
// the coefficient of x^(31-i)).
std::uint32_t multiply_mod_poly(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (int i = 0; i < 32; ++i) {
    if (a & 0x80000000u) product ^= b;
    a <<= 1;
    b = (b & 1) ? (b >> 1) ^ kPolyReflected : b >> 1;
  }
  return product;
}

constexpr std::uint32_t kXPower0 = 0x80000000u;  // the polynomial 1 in reflected order

std::uint32_t x_power(unsigned e) {
  std::uint32_t p = kXPower0;
  for (unsigned i = 0; i < e; ++i) p = (p & 1) ? (p >> 1) ^ kPolyReflected : p >> 1;
  return p;
}

// Shifting a raw register over n zero bytes multiplies it by x^(8n): the step
// that both the lane combine and crc32c_combine take, one factor per set bit of n.
//   portable[j] = x^(8 * 2^j) mod P, for the bit-loop multiply;
//   hardware[j] = x^(8 * 2^j - 33) mod P for j >= 3: a carry-less product of two
//     reflected 32-bit values is their product times x, and reducing it with the
//     CRC instruction multiplies by x^32 more, so these factors come out exact.
// hardware[] stops at 2^60 bytes, where 8 * 2^j - 33 would overflow; larger sizes
// take the portable factors.
constexpr int kPowers = 64;
constexpr int kFirstHardwarePower = 3;
constexpr int kLastHardwarePower = 60;
struct Powers {
  std::uint32_t portable[kPowers];
  std::uint32_t hardware[kPowers];
  Powers() {
    portable[0] = x_power(8);
    for (int j = 1; j < kPowers; ++j) portable[j] = multiply_mod_poly(portable[j - 1], portable[j - 1]);
    const std::uint32_t x33 = x_power(33);
    for (int j = 0; j < kFirstHardwarePower; ++j) hardware[j] = 0;  // unused: sizes below 8 go byte by byte
    hardware[kFirstHardwarePower] = x_power(8 * 8 - 33);
    for (int j = kFirstHardwarePower + 1; j <= kLastHardwarePower; ++j) {
      hardware[j] = multiply_mod_poly(multiply_mod_poly(hardware[j - 1], hardware[j - 1]), x33);
    }
    for (int j = kLastHardwarePower + 1; j < kPowers; ++j) hardware[j] = 0;
  }
};

const Powers& powers() {
  static const Powers p;
  return p;
}

std::uint32_t shift_portable(std::uint32_t crc, std::uint64_t size) {
  const Powers& pw = powers();
  for (int j = 0; size != 0; ++j, size >>= 1) {
    if (size & 1) crc = multiply_mod_poly(crc, pw.portable[j]);
  }
  return crc;
}

// Three lanes of kLaneBytes each are hashed independently and then combined:
// raw(s, A||B) = raw(s, A) * x^(8|B|) xor raw(0, B).
constexpr std::size_t kLaneBytes = 4096;
constexpr int kLanePower = 12;  // kLaneBytes == 2^kLanePower
static_assert(std::size_t(1) << kLanePower == kLaneBytes, "kLanePower");

#if defined(__x86_64__)
bool have_hw() {
  static const bool hw = [] {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 20));
  }();
  return hw;
}
bool have_clmul() {
  static const bool clmul = [] {
    unsigned a, b, c, d;
    return have_hw() && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 1));
  }();
  return clmul;
}

__attribute__((target("sse4.2"))) inline std::uint64_t hw_step(std::uint64_t crc, std::uint64_t v) {
  return _mm_crc32_u64(crc, v);
}
__attribute__((target("sse4.2"))) inline std::uint32_t hw_byte(std::uint32_t crc, unsigned char v) {
  return _mm_crc32_u8(crc, v);
}
__attribute__((target("sse4.2"))) inline std::uint32_t hw_half(std::uint32_t crc, std::uint16_t v) {
  return _mm_crc32_u16(crc, v);
}
__attribute__((target("sse4.2"))) inline std::uint32_t hw_word(std::uint32_t crc, std::uint32_t v) {
  return _mm_crc32_u32(crc, v);
}
// a * b * x^33 mod P (see Powers).
__attribute__((target("sse4.2,pclmul"))) inline std::uint32_t hw_multiply(std::uint32_t a, std::uint32_t b) {
  const __m128i product = _mm_clmulepi64_si128(_mm_cvtsi32_si128(static_cast<int>(a)),
                                               _mm_cvtsi32_si128(static_cast<int>(b)), 0);
  return static_cast<std::uint32_t>(_mm_crc32_u64(0, static_cast<std::uint64_t>(_mm_cvtsi128_si64(product))));
}
#define ZIPMOE_HW_TARGET __attribute__((target("sse4.2")))
#define ZIPMOE_CLMUL_TARGET __attribute__((target("sse4.2,pclmul")))
#elif defined(__aarch64__)
bool have_hw() {
  static const bool hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
  return hw;
}
bool have_clmul() {
  static const bool clmul = have_hw() && (getauxval(AT_HWCAP) & HWCAP_PMULL) != 0;
  return clmul;
}
__attribute__((target("+crc"))) inline std::uint64_t hw_step(std::uint64_t crc, std::uint64_t v) {
  return __crc32cd(static_cast<std::uint32_t>(crc), v);
}
__attribute__((target("+crc"))) inline std::uint32_t hw_byte(std::uint32_t crc, unsigned char v) {
  return __crc32cb(crc, v);
}
__attribute__((target("+crc"))) inline std::uint32_t hw_half(std::uint32_t crc, std::uint16_t v) {
  return __crc32ch(crc, v);
}
__attribute__((target("+crc"))) inline std::uint32_t hw_word(std::uint32_t crc, std::uint32_t v) {
  return __crc32cw(crc, v);
}
// a * b * x^33 mod P (see Powers).
__attribute__((target("+crc+crypto"))) inline std::uint32_t hw_multiply(std::uint32_t a, std::uint32_t b) {
  const poly128_t product = vmull_p64(a, b);
  return __crc32cd(0, vgetq_lane_u64(vreinterpretq_u64_p128(product), 0));
}
#define ZIPMOE_HW_TARGET __attribute__((target("+crc")))
#define ZIPMOE_CLMUL_TARGET __attribute__((target("+crc+crypto")))
#endif

#ifdef ZIPMOE_HW_TARGET
// The last n < 8 bytes in at most three steps (the bytes in order: little-endian loads).
ZIPMOE_HW_TARGET inline std::uint32_t hw_tail(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  if (n & 4) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    crc = hw_word(crc, v);
    p += 4;
  }
  if (n & 2) {
    std::uint16_t v;
    std::memcpy(&v, p, 2);
    crc = hw_half(crc, v);
    p += 2;
  }
  if (n & 1) crc = hw_byte(crc, *p);
  return crc;
}

ZIPMOE_CLMUL_TARGET std::uint32_t shift_hw(std::uint32_t crc, std::uint64_t size) {
  for (unsigned i = 0; i < (size & 7); ++i) crc = hw_byte(crc, 0);
  const Powers& pw = powers();
  size >>= kFirstHardwarePower;
  for (int j = kFirstHardwarePower; size != 0; ++j, size >>= 1) {
    if (size & 1) {
      crc = j <= kLastHardwarePower ? hw_multiply(crc, pw.hardware[j]) : multiply_mod_poly(crc, pw.portable[j]);
    }
  }
  return crc;
}

// Below this a single CRC chain is as fast as four lanes and their shifts.
constexpr std::size_t kSplitMinBytes = 1024;

// The lane loop, with the combine step as a template parameter so that the
// carry-less multiply is inlined where the CPU has it.
template <bool kClmul>
ZIPMOE_CLMUL_TARGET std::uint32_t raw_hw(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  const Powers& pw = powers();
  const std::uint32_t shift = kClmul ? pw.hardware[kLanePower] : pw.portable[kLanePower];
  while (n >= 3 * kLaneBytes) {
    std::uint64_t c0 = crc, c1 = 0, c2 = 0;
    const unsigned char* p1 = p + kLaneBytes;
    const unsigned char* p2 = p + 2 * kLaneBytes;
    for (std::size_t i = 0; i < kLaneBytes; i += 8) {
      c0 = hw_step(c0, load_u64(p + i));
      c1 = hw_step(c1, load_u64(p1 + i));
      c2 = hw_step(c2, load_u64(p2 + i));
    }
    if (kClmul) {
      crc = hw_multiply(static_cast<std::uint32_t>(c0), shift) ^ static_cast<std::uint32_t>(c1);
      crc = hw_multiply(crc, shift) ^ static_cast<std::uint32_t>(c2);
    } else {
      crc = multiply_mod_poly(static_cast<std::uint32_t>(c0), shift) ^ static_cast<std::uint32_t>(c1);
      crc = multiply_mod_poly(crc, shift) ^ static_cast<std::uint32_t>(c2);
    }
    p += 3 * kLaneBytes;
    n -= 3 * kLaneBytes;
  }
  if (kClmul && n >= kSplitMinBytes) {
    // What the lanes above leave (or a short buffer): four lanes of a quarter
    // each, so that four CRC chains overlap, shifted into place independently.
    const std::size_t lane = (n / 4) & ~std::size_t(7);
    std::uint64_t c0 = crc, c1 = 0, c2 = 0, c3 = 0;
    const unsigned char* p1 = p + lane;
    const unsigned char* p2 = p + 2 * lane;
    const unsigned char* p3 = p + 3 * lane;
    for (std::size_t i = 0; i < lane; i += 8) {
      c0 = hw_step(c0, load_u64(p + i));
      c1 = hw_step(c1, load_u64(p1 + i));
      c2 = hw_step(c2, load_u64(p2 + i));
      c3 = hw_step(c3, load_u64(p3 + i));
    }
    crc = shift_hw(static_cast<std::uint32_t>(c0), 3 * lane) ^ shift_hw(static_cast<std::uint32_t>(c1), 2 * lane) ^
          shift_hw(static_cast<std::uint32_t>(c2), lane) ^ static_cast<std::uint32_t>(c3);
    p += 4 * lane;
    n -= 4 * lane;
  }
  std::uint64_t c = crc;
  while (n >= 8) {
    c = hw_step(c, load_u64(p));
    p += 8;
    n -= 8;
  }
  return hw_tail(static_cast<std::uint32_t>(c), p, n);
}
#endif

#ifdef ZIPMOE_HW_TARGET
// Raw registers. The length all four have, interleaved without checks; then the
// rest of each in whole words, still interleaved, each chain stopping at its end
// (a branch that changes once per buffer); then the last bytes.
ZIPMOE_HW_TARGET void raw_hw_x4(const unsigned char* const data[4], const std::size_t size[4], std::uint32_t crc[4]) {
  const std::size_t common = std::min(std::min(size[0], size[1]), std::min(size[2], size[3])) & ~std::size_t(7);
  const unsigned char *p0 = data[0], *p1 = data[1], *p2 = data[2], *p3 = data[3];
  std::uint64_t c0 = crc[0], c1 = crc[1], c2 = crc[2], c3 = crc[3];
  std::size_t i = 0;
  for (; i < common; i += 8) {
    c0 = hw_step(c0, load_u64(p0 + i));
    c1 = hw_step(c1, load_u64(p1 + i));
    c2 = hw_step(c2, load_u64(p2 + i));
    c3 = hw_step(c3, load_u64(p3 + i));
  }
  for (bool any = true; any; i += 8) {
    any = false;
    if (i + 8 <= size[0]) c0 = hw_step(c0, load_u64(p0 + i)), any = true;
    if (i + 8 <= size[1]) c1 = hw_step(c1, load_u64(p1 + i)), any = true;
    if (i + 8 <= size[2]) c2 = hw_step(c2, load_u64(p2 + i)), any = true;
    if (i + 8 <= size[3]) c3 = hw_step(c3, load_u64(p3 + i)), any = true;
  }
  const std::uint64_t c[4] = {c0, c1, c2, c3};
  for (int k = 0; k < 4; ++k) {
    const std::size_t whole = size[k] & ~std::size_t(7);
    crc[k] = hw_tail(static_cast<std::uint32_t>(c[k]), data[k] + whole, size[k] - whole);
  }
}
#endif

}  // namespace

void crc32c_x4(const void* const data[4], const std::size_t size[4], std::uint32_t crc[4]) {
#ifdef ZIPMOE_HW_TARGET
  if (have_hw()) {
    const unsigned char* bytes[4];
    for (int k = 0; k < 4; ++k) {
      bytes[k] = static_cast<const unsigned char*>(data[k]);
      crc[k] = ~crc[k];
    }
    raw_hw_x4(bytes, size, crc);
    for (int k = 0; k < 4; ++k) crc[k] = ~crc[k];
    return;
  }
#endif
  for (int k = 0; k < 4; ++k) crc[k] = crc32c_portable(data[k], size[k], crc[k]);
}

std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc) {
  return ~raw_portable(~crc, static_cast<const unsigned char*>(data), size);
}

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) {
#ifdef ZIPMOE_HW_TARGET
  if (have_clmul()) return ~raw_hw<true>(~crc, static_cast<const unsigned char*>(data), size);
  if (have_hw()) return ~raw_hw<false>(~crc, static_cast<const unsigned char*>(data), size);
#endif
  return crc32c_portable(data, size, crc);
}

// crc32c is linear: crc(A||B) = crc(A) * x^(8|B|) xor crc(B), the pre- and
// post-inversions of the two sides cancelling out.
std::uint32_t crc32c_combine_portable(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b) {
  return shift_portable(crc_a, size_b) ^ crc_b;
}

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t size_b) {
#ifdef ZIPMOE_HW_TARGET
  if (have_clmul()) return shift_hw(crc_a, size_b) ^ crc_b;
#endif
  return crc32c_combine_portable(crc_a, crc_b, size_b);
}

}  // namespace zipmoe
