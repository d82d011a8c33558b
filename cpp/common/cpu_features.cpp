#include "common/cpu_features.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define ZIPMOE_X86 1
#endif

namespace zipmoe {

namespace {

#if ZIPMOE_X86
std::uint64_t read_xcr0() {
  std::uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
#if ZIPMOE_X86
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27);
  const bool fma = ecx & (1u << 12);
  const bool f16c = ecx & (1u << 29);
  if (!osxsave) return f;
  const std::uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;
  const bool zmm_state = (xcr0 & 0xe6) == 0xe6;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx2 = ebx & (1u << 5);
  const bool bmi2 = ebx & (1u << 8);
  const bool avx512f = ebx & (1u << 16);
  const bool avx512dq = ebx & (1u << 17);
  const bool avx512bw = ebx & (1u << 30);
  const bool avx512vl = ebx & (1u << 31);
  const bool avx512vbmi = ecx & (1u << 1);
  f.avx2 = ymm_state && avx2 && bmi2 && fma && f16c;
  f.avx512 = f.avx2 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_vbmi = f.avx512 && avx512vbmi;
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  f.avx512_bf16 = f.avx512 && (a1 & (1u << 5));
#elif defined(__aarch64__)
  f.neon = true;  // Advanced SIMD is mandatory on AArch64
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kNeon: return "neon";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* isa) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (int i = 0; i < kNumIsas; ++i) {
    if (lower == isa_name(static_cast<Isa>(i))) {
      *isa = static_cast<Isa>(i);
      return true;
    }
  }
  return false;
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kScalar: return true;
#if ZIPMOE_X86
    case Isa::kAvx2: return f.avx2;
    case Isa::kAvx512: return f.avx512;
#endif
#if defined(__aarch64__)
    case Isa::kNeon: return f.neon;
#endif
    default: return false;
  }
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (int i = 0; i < kNumIsas; ++i) {
    if (isa_supported(static_cast<Isa>(i))) out.push_back(static_cast<Isa>(i));
  }
  return out;
}

Isa best_isa() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  if (isa_supported(Isa::kNeon)) return Isa::kNeon;
  return Isa::kScalar;
}

Status check_isa(Isa isa) {
  if (isa_supported(isa)) return Status::Ok();
  std::string supported;
  for (Isa s : supported_isas()) supported += std::string(supported.empty() ? "" : ", ") + isa_name(s);
  return Status::InvalidArgument(std::string("instruction set '") + isa_name(isa) +
                                 "' is not available on this CPU/build (available: " + supported + ")");
}

Status default_isa(Isa* isa) {
  struct Resolved {
    Isa isa = Isa::kScalar;
    Status status;
  };
  static const Resolved resolved = [] {
    Resolved r;
    r.isa = best_isa();
    const char* env = std::getenv("ZIPMOE_ISA");
    if (env && *env) {
      Isa forced;
      if (!parse_isa(env, &forced)) {
        r.status = Status::InvalidArgument(std::string("ZIPMOE_ISA='") + env +
                                           "' is not one of scalar, avx2, avx512, neon");
      } else {
        r.status = check_isa(forced).with_context("ZIPMOE_ISA");
        if (r.status.ok()) r.isa = forced;
      }
    }
    return r;
  }();
  *isa = resolved.isa;
  return resolved.status;
}

Isa default_isa() {
  Isa isa = Isa::kScalar;
  throw_if_error(default_isa(&isa));
  return isa;
}

}  // namespace zipmoe
