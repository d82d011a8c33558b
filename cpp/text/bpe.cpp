#include "text/bpe.h"

#include <algorithm>
#include <cstring>

namespace zipmoe::text {

std::uint64_t hash_bytes(std::string_view bytes) {
  // 8 bytes per step, multiply-xorshift mixing: fast on short tokens, and the
  // table sizes are powers of two, so the high bits must be well mixed.
  std::uint64_t h = 0x243F6A8885A308D3ull ^ (bytes.size() * 0x9E3779B97F4A7C15ull);
  const char* p = bytes.data();
  std::size_t n = bytes.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
  }
  h *= 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 31);
}

void Vocabulary::reserve(std::size_t count, std::size_t bytes) {
  offsets_.reserve(count + 1);
  arena_.reserve(bytes);
}

void Vocabulary::push_back(std::string_view token) {
  arena_.append(token.data(), token.size());
  offsets_.push_back(static_cast<std::uint32_t>(arena_.size()));
}

void Vocabulary::build_index() {
  std::size_t capacity = 16;
  while (capacity < static_cast<std::size_t>(size()) * 2) capacity *= 2;
  slots_.assign(capacity, -1);
  mask_ = capacity - 1;
  for (std::int32_t id = 0; id < size(); ++id) {
    const std::string_view text = token(id);
    for (std::uint64_t slot = hash_bytes(text) & mask_;; slot = (slot + 1) & mask_) {
      const std::int32_t present = slots_[slot];
      if (present < 0) {
        slots_[slot] = id;
        break;
      }
      if (token(present) == text) {
        slots_[slot] = id;  // a later duplicate wins
        break;
      }
    }
  }
}

std::int32_t Vocabulary::find(std::string_view text) const {
  if (slots_.empty()) return -1;
  for (std::uint64_t slot = hash_bytes(text) & mask_;; slot = (slot + 1) & mask_) {
    const std::int32_t present = slots_[slot];
    if (present < 0) return -1;
    if (token(present) == text) return present;
  }
}

std::size_t Vocabulary::memory_bytes() const {
  return arena_.capacity() + offsets_.capacity() * sizeof(std::uint32_t) + slots_.capacity() * sizeof(std::int32_t);
}

void PairTable::reserve(std::size_t count) {
  // Linear probing stays short up to a load of 3/4.
  std::size_t capacity = 16;
  while (capacity * 3 < count * 4) capacity *= 2;
  if (capacity <= keys_.size()) return;
  std::vector<std::uint64_t> old_keys = std::move(keys_);
  std::vector<MergeResult> old_values = std::move(values_);
  keys_.assign(capacity, kEmpty);
  values_.assign(capacity, MergeResult{0, 0});
  mask_ = capacity - 1;
  for (std::size_t i = 0; i < old_keys.size(); ++i) {
    if (old_keys[i] == kEmpty) continue;
    for (std::uint64_t slot = slot_of(old_keys[i]);; slot = (slot + 1) & mask_) {
      if (keys_[slot] == kEmpty) {
        keys_[slot] = old_keys[i];
        values_[slot] = old_values[i];
        break;
      }
    }
  }
}

void PairTable::grow() { reserve(std::max<std::size_t>(16, count_ * 2 + 2)); }

void PairTable::insert(std::int32_t left, std::int32_t right, std::uint32_t priority, std::int32_t token) {
  if ((count_ + 1) * 4 > keys_.size() * 3) grow();
  const std::uint64_t key = pair_key(left, right);
  for (std::uint64_t slot = slot_of(key);; slot = (slot + 1) & mask_) {
    if (keys_[slot] == key) {
      if (priority < values_[slot].priority) values_[slot] = MergeResult{priority, token};
      return;
    }
    if (keys_[slot] == kEmpty) {
      keys_[slot] = key;
      values_[slot] = MergeResult{priority, token};
      ++count_;
      return;
    }
  }
}

namespace {

// Heap order: the top is the lowest priority, then the leftmost.
template <typename Candidate>
struct LaterCandidate {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.priority != b.priority ? a.priority > b.priority : a.left > b.left;
  }
};

}  // namespace

void BpeMerger::push_candidate(const PairTable& pairs, std::int32_t left, std::int32_t right) {
  MergeResult merge;
  if (!pairs.find(symbols_[left].token, symbols_[right].token, &merge)) return;
  queue_.push_back(Candidate{merge.priority, static_cast<std::uint32_t>(left), symbols_[left].token,
                             symbols_[right].token, merge.token});
  std::push_heap(queue_.begin(), queue_.end(), LaterCandidate<Candidate>());
}

void BpeMerger::merge(const PairTable& pairs, const std::int32_t* tokens, std::size_t count,
                      std::vector<std::int32_t>* out) {
  if (count == 0) return;
  if (count == 1) {
    out->push_back(tokens[0]);
    return;
  }
  symbols_.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    symbols_[i] = Symbol{tokens[i], static_cast<std::int32_t>(i) - 1,
                         i + 1 < count ? static_cast<std::int32_t>(i + 1) : -1};
  }
  queue_.clear();
  for (std::size_t i = 0; i + 1 < count; ++i) {
    push_candidate(pairs, static_cast<std::int32_t>(i), static_cast<std::int32_t>(i + 1));
  }
  while (!queue_.empty()) {
    std::pop_heap(queue_.begin(), queue_.end(), LaterCandidate<Candidate>());
    const Candidate top = queue_.back();
    queue_.pop_back();
    Symbol& left = symbols_[top.left];
    // A merged-away symbol has token -1; a changed neighbour means the
    // candidate is stale (the pair it described no longer exists).
    if (left.token != top.left_token || left.next < 0) continue;
    Symbol& right = symbols_[left.next];
    if (right.token != top.right_token) continue;
    left.token = top.merged;
    right.token = -1;
    left.next = right.next;
    if (left.next >= 0) symbols_[left.next].prev = static_cast<std::int32_t>(top.left);
    if (left.prev >= 0) push_candidate(pairs, left.prev, static_cast<std::int32_t>(top.left));
    if (left.next >= 0) push_candidate(pairs, static_cast<std::int32_t>(top.left), left.next);
  }
  for (std::int32_t i = 0; i >= 0; i = symbols_[i].next) out->push_back(symbols_[i].token);
}

}  // namespace zipmoe::text
