// Stop strings over streamed text (zipmoe/generate.h): text that became final
// is handed out, text that could still be the start of a stop string is held
// back until it cannot, and the text ends before the first stop string that
// appears. Works on bytes of valid UTF-8: a stop string starts with a lead
// byte, so a match (or a held-back start of one) always begins and ends on a
// character boundary of text made of whole characters.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace zipmoe::runtime {

class StopStrings {
 public:
  StopStrings() = default;
  explicit StopStrings(std::vector<std::string> stops);  // each non-empty

  // Takes the next piece of text and appends to *out what became final.
  // Returns true when a stop string appeared: *out then ends before it and
  // nothing more is to be added.
  bool add(const std::string& piece, std::string* out);
  // The end of the text: the held-back text and `tail` (nothing is held back
  // any more), cut before a stop string when one appears (true).
  bool finish(const std::string& tail, std::string* out);
  // Bytes held back.
  std::size_t held() const { return held_.size(); }

 private:
  // Where the first stop string in held_ starts (held_.size() when none).
  std::size_t first_stop() const;
  // The length of the longest tail of held_ that is a proper prefix of a stop string.
  std::size_t possible_start() const;

  std::vector<std::string> stops_;
  std::string held_;  // final text not handed out: the only place a stop string can still appear
};

}  // namespace zipmoe::runtime
