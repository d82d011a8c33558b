#include "cache/planner.h"

#include <algorithm>

namespace zipmoe::cache {

double expert_io_seconds(const ExpertCosts& expert, ExpertTier tier, const CostModel& model) {
  const int t = tier_index(tier);
  return expert.reads[t] * model.read_latency_seconds +
         double(expert.read_bytes[t]) / std::max(model.storage_bytes_per_second, 1.0);
}

double expert_decode_seconds(const ExpertCosts& expert, ExpertTier tier, const CostModel& model) {
  if (tier == ExpertTier::kFull) return 0.0;
  const double rate = tier == ExpertTier::kCompressed && model.coded_decode_bytes_per_second > 0
                          ? model.coded_decode_bytes_per_second
                          : model.decode_bytes_per_second;
  return double(expert.decoded_bytes) / std::max(rate, 1.0);
}

double layer_seconds(double io, double cpu, std::size_t experts_per_token) {
  const double k = double(std::max<std::size_t>(experts_per_token, 1));
  return std::max(io, cpu) + std::min(io, cpu) / k;
}

PlanTotals plan_totals(const std::vector<ExpertCosts>& experts, const std::vector<ExpertTier>& tiers,
                       std::size_t num_groups, std::size_t experts_per_token, const CostModel& model) {
  std::vector<double> io(num_groups, 0.0), decode(num_groups, 0.0);
  for (std::size_t i = 0; i < experts.size() && i < tiers.size(); ++i) {
    const ExpertCosts& e = experts[i];
    if (e.group >= num_groups) continue;
    io[e.group] += e.probability * expert_io_seconds(e, tiers[i], model);
    decode[e.group] += e.probability * expert_decode_seconds(e, tiers[i], model);
  }
  PlanTotals totals;
  const double other = std::max(model.other_cpu_seconds, 0.0);
  for (std::size_t g = 0; g < num_groups; ++g) {
    totals.seconds += layer_seconds(io[g], decode[g] + other, experts_per_token);
    totals.io += io[g];
    totals.decode += decode[g];
    totals.other += other;
  }
  return totals;
}

namespace {

struct Move {
  std::size_t expert = 0;
  ExpertTier to = ExpertTier::kAbsent;
  std::uint64_t added_bytes = 0;
  double saved = 0;
  double density = -1;  // saved seconds per byte; < 0: no move
};

bool better(const Move& a, const Move& b) {
  if (a.density != b.density) return a.density > b.density;
  if (a.expert != b.expert) return a.expert < b.expert;
  return tier_index(a.to) < tier_index(b.to);
}

}  // namespace

TierPlan plan_tiers(const std::vector<ExpertCosts>& experts, std::size_t num_groups, std::size_t experts_per_token,
                    std::uint8_t allowed, std::uint64_t budget, const CostModel& model) {
  TierPlan plan;
  plan.tiers.assign(experts.size(), ExpertTier::kAbsent);
  // decode[g] holds the layer's whole CPU time: decoding plus the rest.
  std::vector<double> io(num_groups, 0.0), decode(num_groups, std::max(model.other_cpu_seconds, 0.0));
  std::vector<std::vector<std::size_t>> members(num_groups);
  for (std::size_t i = 0; i < experts.size(); ++i) {
    const ExpertCosts& e = experts[i];
    if (e.group >= num_groups) continue;
    members[e.group].push_back(i);
    io[e.group] += e.probability * expert_io_seconds(e, ExpertTier::kAbsent, model);
    decode[e.group] += e.probability * expert_decode_seconds(e, ExpertTier::kAbsent, model);
  }
  for (std::size_t g = 0; g < num_groups; ++g) {
    plan.seconds_per_token_empty += layer_seconds(io[g], decode[g], experts_per_token);
  }

  std::uint64_t remaining = budget;
  auto best_move = [&](std::size_t g) {
    Move best;
    const double now = layer_seconds(io[g], decode[g], experts_per_token);
    for (std::size_t i : members[g]) {
      const ExpertCosts& e = experts[i];
      const ExpertTier from = plan.tiers[i];
      const std::uint64_t held = e.bytes[tier_index(from)];
      const double io_from = expert_io_seconds(e, from, model), dec_from = expert_decode_seconds(e, from, model);
      for (ExpertTier to : kTiersFullestFirst) {
        if (to == ExpertTier::kAbsent || !tier_allowed(allowed, to)) continue;
        const std::uint64_t bytes = e.bytes[tier_index(to)];
        if (bytes <= held || bytes - held > remaining) continue;
        const double new_io = io[g] - e.probability * (io_from - expert_io_seconds(e, to, model));
        const double new_dec = decode[g] - e.probability * (dec_from - expert_decode_seconds(e, to, model));
        const double saved = now - layer_seconds(new_io, new_dec, experts_per_token);
        if (!(saved > 0)) continue;
        Move m;
        m.expert = i;
        m.to = to;
        m.added_bytes = bytes - held;
        m.saved = saved;
        m.density = saved / double(m.added_bytes);
        if (best.density < 0 || better(m, best)) best = m;
      }
    }
    return best;
  };

  std::vector<Move> best(num_groups);
  for (std::size_t g = 0; g < num_groups; ++g) best[g] = best_move(g);
  for (;;) {
    std::size_t pick = num_groups;
    for (std::size_t g = 0; g < num_groups; ++g) {
      if (best[g].density < 0) continue;
      if (best[g].added_bytes > remaining) {
        best[g] = best_move(g);  // what fitted before may not fit the budget left
        if (best[g].density < 0) continue;
      }
      if (pick == num_groups || better(best[g], best[pick])) pick = g;
    }
    if (pick == num_groups) break;
    const Move m = best[pick];
    const ExpertCosts& e = experts[m.expert];
    const ExpertTier from = plan.tiers[m.expert];
    io[pick] -= e.probability * (expert_io_seconds(e, from, model) - expert_io_seconds(e, m.to, model));
    decode[pick] -= e.probability * (expert_decode_seconds(e, from, model) - expert_decode_seconds(e, m.to, model));
    plan.tiers[m.expert] = m.to;
    remaining -= m.added_bytes;
    best[pick] = best_move(pick);
  }

  for (std::size_t i = 0; i < experts.size(); ++i) {
    const int t = tier_index(plan.tiers[i]);
    plan.capacity[t] += experts[i].bytes[t];
    plan.bytes += experts[i].bytes[t];
  }
  for (std::size_t g = 0; g < num_groups; ++g) {
    plan.seconds_per_token += layer_seconds(io[g], decode[g], experts_per_token);
  }
  return plan;
}

}  // namespace zipmoe::cache
