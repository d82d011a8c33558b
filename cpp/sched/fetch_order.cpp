#include "sched/fetch_order.h"

#include <algorithm>
#include <numeric>

namespace zipmoe::sched {

std::vector<std::size_t> johnson_order(const std::vector<FetchJob>& jobs) {
  std::vector<std::size_t> first, second;
  for (std::size_t i = 0; i < jobs.size(); ++i) (jobs[i].io_seconds < jobs[i].decode_seconds ? first : second).push_back(i);
  std::stable_sort(first.begin(), first.end(),
                   [&](std::size_t a, std::size_t b) { return jobs[a].io_seconds < jobs[b].io_seconds; });
  std::stable_sort(second.begin(), second.end(),
                   [&](std::size_t a, std::size_t b) { return jobs[a].decode_seconds > jobs[b].decode_seconds; });
  first.insert(first.end(), second.begin(), second.end());
  return first;
}

double flow_shop_makespan(const std::vector<FetchJob>& jobs, const std::vector<std::size_t>& order) {
  double io_done = 0, decode_done = 0;
  for (std::size_t i : order) {
    io_done += jobs[i].io_seconds;
    decode_done = std::max(decode_done, io_done) + jobs[i].decode_seconds;
  }
  return decode_done;
}

}  // namespace zipmoe::sched
