#include "cache/tiers.h"

#include <string>

namespace zipmoe {

const char* cache_policy_name(CachePolicy policy) {
  switch (policy) {
    case CachePolicy::kAffinity: return "affinity";
    case CachePolicy::kLru: return "lru";
    case CachePolicy::kLfu: return "lfu";
  }
  return "unknown";
}

bool parse_cache_policy(const std::string& name, CachePolicy* policy) {
  for (CachePolicy p : {CachePolicy::kAffinity, CachePolicy::kLru, CachePolicy::kLfu}) {
    if (name == cache_policy_name(p)) {
      *policy = p;
      return true;
    }
  }
  return false;
}

const char* expert_tier_name(ExpertTier tier) {
  switch (tier) {
    case ExpertTier::kFull: return "full";
    case ExpertTier::kCompressed: return "compressed";
    case ExpertTier::kSm: return "sm";
    case ExpertTier::kE: return "e";
    case ExpertTier::kAbsent: return "absent";
  }
  return "unknown";
}

bool parse_expert_tier(const std::string& name, ExpertTier* tier) {
  for (ExpertTier t : cache::kTiersFullestFirst) {
    if (name == expert_tier_name(t)) {
      *tier = t;
      return true;
    }
  }
  return false;
}

}  // namespace zipmoe
