// CPU feature detection and the instruction-set paths zipmoe can dispatch to.
//
// Every kernel family (codecs, math) has one implementation per Isa. The
// process-wide default is the best path this CPU supports, or the one forced with
// the environment variable ZIPMOE_ISA=scalar|avx2|avx512|neon. Functions that
// dispatch also accept an explicit Isa so that tests can run every path in one
// process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "zipmoe/types.h"

namespace zipmoe {


struct CpuFeatures {
  bool avx2 = false;         // AVX2 + FMA + BMI2 + F16C, with OS support for YMM state
  bool avx512 = false;       // AVX-512 F/BW/VL/DQ + the above, with OS support for ZMM state
  bool avx512_bf16 = false;  // AVX512_BF16 (vdpbf16ps)
  bool avx512_vbmi = false;  // AVX512_VBMI (vpermb)
  bool neon = false;         // AArch64 Advanced SIMD
};

// Features of the CPU this process runs on (detected once).
const CpuFeatures& cpu_features();

const char* isa_name(Isa isa);
// Parses "scalar", "avx2", "avx512", "neon" (case-insensitive). Returns false otherwise.
bool parse_isa(const std::string& name, Isa* isa);
// True when the path is compiled into this build and the CPU can run it.
bool isa_supported(Isa isa);
// Every supported path, scalar first.
std::vector<Isa> supported_isas();
// The best supported path.
Isa best_isa();
// The process default: ZIPMOE_ISA when set, else best_isa(). Resolved once.
// Status::InvalidArgument when ZIPMOE_ISA names an unknown or unsupported path.
Status default_isa(Isa* isa);
// The same for the public API and the kernels' overloads without an Isa: throws
// InvalidArgumentError instead.
Isa default_isa();
// Checks that `isa` can run here; the message names the path and what is supported.
Status check_isa(Isa isa);

}  // namespace zipmoe
