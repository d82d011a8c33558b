// Expert states of the tiered cache (public enums in zipmoe/cache.h) and what
// each one holds in RAM.
//
//   state        holds                         a request needs
//   FULL         decoded gate|up|down          nothing
//   COMPRESSED   coded exponents + SM planes   decode
//   SM           SM planes                     read the exponent chunks, decode
//   E            coded exponents               read the SM chunks, decode
//   ABSENT       nothing                       read both, decode
//
// Decoding is fused with the merge of the two planes, so E and SM differ only
// in what is read. The states are exclusive: an expert rests in exactly one.
#pragma once

#include <cstdint>

#include "zipmoe/cache.h"

namespace zipmoe::cache {

constexpr int tier_index(ExpertTier tier) { return static_cast<int>(tier); }

constexpr bool tier_holds_exponents(ExpertTier tier) {
  return tier == ExpertTier::kCompressed || tier == ExpertTier::kE;
}
constexpr bool tier_holds_sm(ExpertTier tier) { return tier == ExpertTier::kCompressed || tier == ExpertTier::kSm; }

constexpr bool tier_allowed(std::uint8_t mask, ExpertTier tier) {
  return tier == ExpertTier::kAbsent || (mask & expert_tier_bit(tier)) != 0;
}

// The states in the order admissions try them (fullest first).
constexpr ExpertTier kTiersFullestFirst[kNumExpertTiers] = {ExpertTier::kFull, ExpertTier::kCompressed,
                                                            ExpertTier::kSm, ExpertTier::kE, ExpertTier::kAbsent};

}  // namespace zipmoe::cache
