// The BPE core: a token vocabulary with an exact-match index, the table of
// mergeable token pairs, and the merge loop.
//
// Both kinds of BPE zipmoe reads reduce to the same loop over token ids:
// - rank-based BPE (byte-level GPT-2 style, and tokenizer.json BPE models):
//   pair (a, b) merges into the token a+b with priority = its merge rank;
// - SentencePiece BPE (GGUF "llama" vocabularies): pair (a, b) merges into the
//   token whose text is a+b, highest score first; priorities are score ranks,
//   equal scores sharing one.
// The loop always merges the adjacent pair of lowest priority, the leftmost one
// among equals, until no adjacent pair is mergeable (the order Hugging Face
// tokenizers, llama.cpp and sentencepiece use). A heap keeps it O(n log n) on
// long pieces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zipmoe::text {

std::uint64_t hash_bytes(std::string_view bytes);

class Vocabulary {
 public:
  void reserve(std::size_t count, std::size_t bytes);
  // Appends a token; its id is the previous size().
  void push_back(std::string_view token);
  // Builds the index after the last push_back. A string present under several
  // ids maps to the highest id (as llama.cpp's loader leaves it).
  void build_index();

  std::int32_t size() const { return static_cast<std::int32_t>(offsets_.size() - 1); }
  std::string_view token(std::int32_t id) const {
    return std::string_view(arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  // The id of `text`, or -1.
  std::int32_t find(std::string_view text) const;
  std::size_t memory_bytes() const;

 private:
  std::string arena_;
  std::vector<std::uint32_t> offsets_{0};
  std::vector<std::int32_t> slots_;  // open addressing, -1 = empty
  std::uint64_t mask_ = 0;
};

struct MergeResult {
  std::uint32_t priority;
  std::int32_t token;
};

class PairTable {
 public:
  void reserve(std::size_t count);
  // Makes (left, right) merge into `token` at `priority` (lower merges first).
  // A pair inserted twice keeps its lower priority.
  void insert(std::int32_t left, std::int32_t right, std::uint32_t priority, std::int32_t token);
  bool find(std::int32_t left, std::int32_t right, MergeResult* out) const {
    if (count_ == 0) return false;
    const std::uint64_t key = pair_key(left, right);
    for (std::uint64_t slot = slot_of(key);; slot = (slot + 1) & mask_) {
      const std::uint64_t k = keys_[slot];
      if (k == key) {
        *out = values_[slot];
        return true;
      }
      if (k == kEmpty) return false;
    }
  }
  std::size_t size() const { return count_; }
  std::size_t memory_bytes() const { return keys_.size() * (sizeof(std::uint64_t) + sizeof(MergeResult)); }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  static std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
    return (std::uint64_t(std::uint32_t(left)) << 32) | std::uint32_t(right);
  }
  std::uint64_t slot_of(std::uint64_t key) const { return ((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
  void grow();

  std::vector<std::uint64_t> keys_;
  std::vector<MergeResult> values_;
  std::uint64_t mask_ = 0;
  std::size_t count_ = 0;
};

// Working memory of the merge loop; one per thread (not thread-safe).
class BpeMerger {
 public:
  // Merges the token sequence tokens[0, count) and appends the result to *out.
  void merge(const PairTable& pairs, const std::int32_t* tokens, std::size_t count, std::vector<std::int32_t>* out);

 private:
  struct Symbol {
    std::int32_t token;
    std::int32_t prev;
    std::int32_t next;
  };
  struct Candidate {
    std::uint32_t priority;
    std::uint32_t left;  // index of the left symbol
    std::int32_t left_token;
    std::int32_t right_token;
    std::int32_t merged;
  };
  void push_candidate(const PairTable& pairs, std::int32_t left, std::int32_t right);

  std::vector<Symbol> symbols_;
  std::vector<Candidate> queue_;
};

}  // namespace zipmoe::text
