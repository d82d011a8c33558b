#include "runtime/stop_strings.h"

#include <algorithm>
#include <utility>

namespace zipmoe::runtime {

StopStrings::StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {}

std::size_t StopStrings::first_stop() const {
  std::size_t first = held_.size();
  for (const std::string& stop : stops_) first = std::min(first, held_.find(stop));
  return first;
}

std::size_t StopStrings::possible_start() const {
  std::size_t keep = 0;
  for (const std::string& stop : stops_) {
    for (std::size_t k = std::min(stop.size() - 1, held_.size()); k > keep; --k) {
      if (held_.compare(held_.size() - k, k, stop, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  return keep;
}

bool StopStrings::add(const std::string& piece, std::string* out) {
  if (stops_.empty()) {
    out->append(piece);
    return false;
  }
  held_.append(piece);
  const std::size_t stop = first_stop();
  if (stop < held_.size()) {
    out->append(held_, 0, stop);
    held_.clear();
    return true;
  }
  const std::size_t final_bytes = held_.size() - possible_start();
  out->append(held_, 0, final_bytes);
  held_.erase(0, final_bytes);
  return false;
}

bool StopStrings::finish(const std::string& tail, std::string* out) {
  held_.append(tail);
  const std::size_t stop = first_stop();
  const bool hit = stop < held_.size();
  out->append(held_, 0, stop);
  held_.clear();
  return hit;
}

}  // namespace zipmoe::runtime
