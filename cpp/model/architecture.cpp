#include "model/architecture.h"

namespace zipmoe::model {

namespace {

using N = NormKind;
using A = AttentionKind;
using Q = QkNormKind;
using R = RouterKind;
using F = ActivationKind;
using S = SharedExpertKind;
using P = kernels::RopeStyle;

// clang-format off
constexpr FamilySpec kFamilies[] = {
  // family               name           moe    norm           attention    qk_norm               router            activation     shared            sinks  rbias  ebias  corr   nbias  exact  rope           xin    mtp
  {Family::kLlama,      "llama",       false, N::kRms,       A::kGrouped, Q::kNone,             R::kSoftmaxTopK,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kQwen2,      "qwen2",       false, N::kRms,       A::kGrouped, Q::kNone,             R::kSoftmaxTopK,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kQwen2Moe,   "qwen2_moe",   true,  N::kRms,       A::kGrouped, Q::kNone,             R::kSoftmaxTopK,  F::kSiluMul,   S::kSigmoidGated, false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kQwen3Moe,   "qwen3_moe",   true,  N::kRms,       A::kGrouped, Q::kPerHead,          R::kSoftmaxTopK,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kMixtral,    "mixtral",     true,  N::kRms,       A::kGrouped, Q::kNone,             R::kSoftmaxTopK,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kOlmoe,      "olmoe",       true,  N::kRms,       A::kGrouped, Q::kWholeProjection,  R::kSoftmaxTopK,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kDeepseekV2, "deepseek_v2", true,  N::kRms,       A::kLatent,  Q::kNone,             R::kDeepseekV2,   F::kSiluMul,   S::kPlain,        false, false, false, false, false, false, P::kInterleaved, false, false},
  {Family::kDeepseekV3, "deepseek_v3", true,  N::kRms,       A::kLatent,  Q::kNone,             R::kDeepseekV3,   F::kSiluMul,   S::kPlain,        false, false, false, true,  false, false, P::kInterleaved, false, true },
  {Family::kGptOss,     "gpt_oss",     true,  N::kRms,       A::kGrouped, Q::kNone,             R::kTopKSoftmax,  F::kSwigluOai, S::kNone,         true,  true,  true,  false, false, false, P::kNeox,      false, false},
  {Family::kGraniteMoe, "granitemoe",  true,  N::kRms,       A::kGrouped, Q::kNone,             R::kTopKSoftmax,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,      false, false},
  {Family::kPhiMoe,     "phimoe",      true,  N::kLayerNorm, A::kGrouped, Q::kNone,             R::kSparseMixer,  F::kSiluMul,   S::kNone,         false, false, false, false, true, true , P::kNeox,      false, false},
  {Family::kGlm4Moe,    "glm4_moe",    true,  N::kRms,       A::kGrouped, Q::kPerHead,          R::kDeepseekV3,   F::kSiluMul,   S::kPlain,        false, false, false, true,  false, false, P::kNeox,        false, true },
  {Family::kDots1,      "dots1",       true,  N::kRms,       A::kGrouped, Q::kPerHead,          R::kDeepseekV3,   F::kSiluMul,   S::kPlain,        false, false, false, true,  false, false, P::kNeox,        false, false},
  {Family::kMinimaxM2,  "minimax_m2",  true,  N::kRms,       A::kGrouped, Q::kWholeProjection,  R::kDeepseekV3,   F::kSiluMul,   S::kNone,         false, false, false, true,  false, false, P::kNeox,        false, false},
  {Family::kHunyuanV1Moe, "hunyuan_v1_moe", true, N::kRms,   A::kGrouped, Q::kPerHeadAfterRope, R::kSoftmaxTopK,  F::kSiluMul,   S::kPlain,        false, false, false, false, false, false, P::kNeox,        false, false},
  {Family::kErnie45Moe, "ernie4_5_moe", true, N::kRms,       A::kGrouped, Q::kNone,             R::kSoftmaxBiasedTopK, F::kSiluMul, S::kPlain,     false, false, false, true,  false, false, P::kInterleaved, false, false},
  {Family::kDbrx,       "dbrx",        true,  N::kLayerNorm, A::kGrouped, Q::kNone,             R::kSoftmaxTopK,  F::kSiluMul,   S::kNone,         false, false, false, false, false, false, P::kNeox,        false, false},
  {Family::kLlama4Text, "llama4_text", true,  N::kRms,       A::kGrouped, Q::kUnitPerHeadAfterRope, R::kSigmoidTopK, F::kSiluMul, S::kPlain,      false, false, false, false, false, false, P::kInterleaved, true , false},
};
// clang-format on

}  // namespace

const FamilySpec* find_family(std::string_view name) {
  for (const FamilySpec& spec : kFamilies) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

const FamilySpec& family_spec(Family family) {
  for (const FamilySpec& spec : kFamilies) {
    if (spec.family == family) return spec;
  }
  return kFamilies[0];
}

std::string supported_family_names() {
  std::string out;
  for (const FamilySpec& spec : kFamilies) {
    if (!out.empty()) out += ", ";
    out += spec.name;
  }
  return out;
}

}  // namespace zipmoe::model
