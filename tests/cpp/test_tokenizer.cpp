// The tokenizer (cpp/text): UTF-8 and Unicode helpers, NFC, the pre-tokenizer
// rules against the splits Hugging Face tokenizers makes with the same regular
// expressions, the BPE merge loop, tokenizers built from small GGUF and
// tokenizer.json inputs, streaming detokenization, and corrupt GGUF input.
// (Parity on real vocabularies is tested in tests/python/test_tokenizer.py.)
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/json.h"
#include "format/gguf_reader.h"
#include "model/tokenizer_files.h"
#include "test_framework.h"
#include "text/bpe.h"
#include "text/pretokenizer.h"
#include "text/tokenizer.h"
#include "text/tokenizer_builder.h"
#include "text/unicode.h"

using zipmoe::GgufMetadata;
using zipmoe::Status;
using zipmoe::format::parse_gguf_metadata;
using zipmoe::StatusCode;
using zipmoe::json::Value;
using namespace zipmoe::text;

namespace {

std::string lossy(const std::string& bytes) {
  std::string out;
  append_utf8_lossy(bytes, &out);
  return out;
}

std::string nfc(const std::string& text) {
  std::string out;
  return nfc_normalize(text, &out) ? out : text;
}

std::vector<std::string> split_text(const std::vector<SplitRule>& rules, const std::string& text) {
  std::vector<std::uint32_t> units, offsets;
  decode_utf8(text, &units, &offsets);
  std::vector<Span> pieces, scratch;
  PreTokenizer(rules).split(units.data(), units.size(), &pieces, &scratch);
  std::vector<std::string> out;
  for (const Span& p : pieces) out.push_back(text.substr(offsets[p.begin], offsets[p.end] - offsets[p.begin]));
  return out;
}

std::string join(const std::vector<std::string>& pieces) {
  std::string out = "[";
  for (const std::string& p : pieces) out += "\"" + p + "\" ";
  return out + "]";
}

// Builds GGUF files in memory.
class GgufBuilder {
 public:
  void string(const std::string& key, const std::string& value) {
    begin(key, 8);
    put_string(value);
  }
  void u32(const std::string& key, std::uint32_t value) {
    begin(key, 4);
    put(value);
  }
  void boolean(const std::string& key, bool value) {
    begin(key, 7);
    put(static_cast<std::uint8_t>(value ? 1 : 0));
  }
  void strings(const std::string& key, const std::vector<std::string>& values) {
    begin(key, 9);
    put(std::uint32_t{8});
    put(static_cast<std::uint64_t>(values.size()));
    for (const std::string& v : values) put_string(v);
  }
  void i32s(const std::string& key, const std::vector<std::int32_t>& values) {
    begin(key, 9);
    put(std::uint32_t{5});
    put(static_cast<std::uint64_t>(values.size()));
    for (std::int32_t v : values) put(v);
  }
  void f32s(const std::string& key, const std::vector<float>& values) {
    begin(key, 9);
    put(std::uint32_t{6});
    put(static_cast<std::uint64_t>(values.size()));
    for (float v : values) put(v);
  }
  std::vector<std::uint8_t> bytes(std::uint32_t version = 3) const {
    std::vector<std::uint8_t> out = {'G', 'G', 'U', 'F'};
    append(&out, version);
    append(&out, std::uint64_t{0});
    append(&out, count_);
    out.insert(out.end(), body_.begin(), body_.end());
    return out;
  }

 private:
  template <typename T>
  static void append(std::vector<std::uint8_t>* out, T value) {
    std::uint8_t raw[sizeof(T)];
    std::memcpy(raw, &value, sizeof(T));
    out->insert(out->end(), raw, raw + sizeof(T));
  }
  template <typename T>
  void put(T value) {
    append(&body_, value);
  }
  void put_string(const std::string& s) {
    put(static_cast<std::uint64_t>(s.size()));
    body_.insert(body_.end(), s.begin(), s.end());
  }
  void begin(const std::string& key, std::uint32_t type) {
    ++count_;
    put_string(key);
    put(type);
  }
  std::vector<std::uint8_t> body_;
  std::uint64_t count_ = 0;
};

// A tiny byte-level vocabulary: the 256 byte characters, a few merges, a
// control token and a user-defined token.
GgufBuilder byte_level_gguf(const std::string& pre = "gpt-2") {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_alphabet().utf8[b]);
  const std::vector<std::string> merged = {"he", "hel", "hell", "hello", "\xC4\xA0w", "or", "\xC4\xA0wor"};
  tokens.insert(tokens.end(), merged.begin(), merged.end());
  tokens.push_back("<|end|>");  // 263
  tokens.push_back("<u>");      // 264
  std::vector<std::int32_t> types(tokens.size(), 1);
  types[263] = 3;
  types[264] = 4;
  GgufBuilder g;
  g.string("general.architecture", "test");
  g.string("tokenizer.ggml.model", "gpt2");
  g.string("tokenizer.ggml.pre", pre);
  g.strings("tokenizer.ggml.tokens", tokens);
  g.i32s("tokenizer.ggml.token_type", types);
  g.strings("tokenizer.ggml.merges", {"h e", "he l", "hel l", "hell o", "\xC4\xA0 w", "o r", "\xC4\xA0w or"});
  g.u32("tokenizer.ggml.bos_token_id", 263);
  g.u32("tokenizer.ggml.eos_token_id", 263);
  return g;
}

// A tiny SentencePiece vocabulary (see sentencepiece_merges_by_score for the merges it implies).
GgufBuilder sentencepiece_gguf() {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<std::int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    tokens.push_back(name);
    scores.push_back(0);
    types.push_back(6);
  }
  const std::vector<std::pair<std::string, float>> pieces = {
      {"\xE2\x96\x81", -1}, {"h", -2}, {"e", -2}, {"l", -2}, {"o", -2}, {"ll", -3},
      {"he", -4}, {"\xE2\x96\x81he", -5}, {"llo", -6}, {"\xE2\x96\x81hello", -7}};
  for (const auto& [piece, score] : pieces) {
    tokens.push_back(piece);
    scores.push_back(score);
    types.push_back(1);
  }
  GgufBuilder g;
  g.string("tokenizer.ggml.model", "llama");
  g.strings("tokenizer.ggml.tokens", tokens);
  g.f32s("tokenizer.ggml.scores", scores);
  g.i32s("tokenizer.ggml.token_type", types);
  g.u32("tokenizer.ggml.bos_token_id", 1);
  g.u32("tokenizer.ggml.eos_token_id", 2);
  g.u32("tokenizer.ggml.unknown_token_id", 0);
  return g;
}

std::shared_ptr<const Tokenizer> tokenizer_from(const std::vector<std::uint8_t>& bytes, Status* status = nullptr) {
  GgufMetadata metadata;
  Status s = parse_gguf_metadata(bytes.data(), bytes.size(), "test.gguf", is_tokenizer_key, &metadata);
  std::shared_ptr<const Tokenizer> t;
  if (s.ok()) s = Tokenizer::from_gguf_metadata(metadata, "test.gguf", &t);
  if (status) *status = s;
  return t;
}

std::vector<std::int32_t> encode(const Tokenizer& t, const std::string& text, bool add_special = false,
                                 bool parse_special = false) {
  EncodeOptions options;
  options.add_special_tokens = add_special;
  options.parse_special = parse_special;
  std::vector<std::int32_t> ids;
  t.encode(text, options, &ids);
  return ids;
}

std::string decode(const Tokenizer& t, const std::vector<std::int32_t>& ids, bool skip_special = false) {
  return t.decode(ids.data(), ids.size(), skip_special);
}

std::string ids_text(const std::vector<std::int32_t>& ids) {
  std::string out = "[";
  for (std::int32_t id : ids) out += std::to_string(id) + " ";
  return out + "]";
}

#define ZCHECK_IDS(actual, ...)                                                                    \
  do {                                                                                             \
    const std::vector<std::int32_t> _expected = __VA_ARGS__;                                      \
    const std::vector<std::int32_t> _actual = (actual);                                            \
    if (_actual != _expected) {                                                                    \
      ::ztest::report_failure(__FILE__, __LINE__, #actual " = " + ids_text(_actual) + " expected " + \
                                                      ids_text(_expected));                         \
    }                                                                                              \
  } while (0)

struct SplitCase { const char* name; std::vector<SplitRule> rules; std::string text; std::vector<std::string> pieces; };
// Expected pieces from Hugging Face tokenizers' Split(Regex, Isolated) on the same patterns.
const std::vector<SplitCase>& split_cases() {
  static const std::vector<SplitCase> kCases = {
      {"gpt2", {SplitRule::kGpt2}, "", {}},
      {"gpt2", {SplitRule::kGpt2}, " ", {" "}},
      {"gpt2", {SplitRule::kGpt2}, "  ", {"  "}},
      {"gpt2", {SplitRule::kGpt2}, "Hello world", {"Hello", " world"}},
      {"gpt2", {SplitRule::kGpt2}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"gpt2", {SplitRule::kGpt2}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I", "'m", " you", "'re", " WE", "'", "LL", " '", "S", " '", "s", " it", "'s", " x", "'ll", " '", " ''", " a", "'"}},
      {"gpt2", {SplitRule::kGpt2}, "a\012\012b", {"a", "\012", "\012", "b"}},
      {"gpt2", {SplitRule::kGpt2}, "a \012 \012 b", {"a", " \012 \012", " b"}},
      {"gpt2", {SplitRule::kGpt2}, "\011\011x", {"\011", "\011", "x"}},
      {"gpt2", {SplitRule::kGpt2}, "x  \012", {"x", "  \012"}},
      {"gpt2", {SplitRule::kGpt2}, "12345 6789", {"12345", " 6789"}},
      {"gpt2", {SplitRule::kGpt2}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " \302\262\302\263", " \302\274"}},
      {"gpt2", {SplitRule::kGpt2}, "$100.00!!", {"$", "100", ".", "00", "!!"}},
      {"gpt2", {SplitRule::kGpt2}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224", "b", " \342\200\234", "quoted", "\342\200\235"}},
      {"gpt2", {SplitRule::kGpt2}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264"}},
      {"gpt2", {SplitRule::kGpt2}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246"}},
      {"gpt2", {SplitRule::kGpt2}, "e\314\201 x \314\201", {"e", "\314\201", " x", " \314\201"}},
      {"gpt2", {SplitRule::kGpt2}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"gpt2", {SplitRule::kGpt2}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240", "x", "\342\200\250", "y", "\343\200\200", "z", "\302\205", "w"}},
      {"gpt2", {SplitRule::kGpt2}, "foo/bar\012/baz", {"foo", "/", "bar", "\012", "/", "baz"}},
      {"gpt2", {SplitRule::kGpt2}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camelCase", " ABCdef", " \307\205ab"}},
      {"gpt2", {SplitRule::kGpt2}, "\015\012\015\012x", {"\015\012\015", "\012", "x"}},
      {"gpt2", {SplitRule::kGpt2}, "  \011\012", {"  \011\012"}},
      {"gpt2", {SplitRule::kGpt2}, "\013\014\034", {"\013", "\014", "\034"}},
      {"gpt2", {SplitRule::kGpt2}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf\303\251", " na\303\257ve", " \331\205\330\261\330\255\330\250\330\247", " \340\244\246", "\340\245\207", "\340\244\265"}},
      {"gpt2", {SplitRule::kGpt2}, "x\012\012\012  y  \012", {"x", "\012\012\012 ", " y", "  \012"}},
      {"gpt2", {SplitRule::kGpt2}, "(Hello) [world]: {ok}\077", {"(", "Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
      {"llama3", {SplitRule::kLlama3}, "", {}},
      {"llama3", {SplitRule::kLlama3}, " ", {" "}},
      {"llama3", {SplitRule::kLlama3}, "  ", {"  "}},
      {"llama3", {SplitRule::kLlama3}, "Hello world", {"Hello", " world"}},
      {"llama3", {SplitRule::kLlama3}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"llama3", {SplitRule::kLlama3}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I", "'m", " you", "'re", " WE", "'LL", " '", "S", " '", "s", " it", "'s", " x", "'ll", " '", " ''", " a", "'"}},
      {"llama3", {SplitRule::kLlama3}, "a\012\012b", {"a", "\012\012", "b"}},
      {"llama3", {SplitRule::kLlama3}, "a \012 \012 b", {"a", " \012 \012", " b"}},
      {"llama3", {SplitRule::kLlama3}, "\011\011x", {"\011", "\011x"}},
      {"llama3", {SplitRule::kLlama3}, "x  \012", {"x", "  \012"}},
      {"llama3", {SplitRule::kLlama3}, "12345 6789", {"123", "45", " ", "678", "9"}},
      {"llama3", {SplitRule::kLlama3}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " ", "\302\262\302\263", " ", "\302\274"}},
      {"llama3", {SplitRule::kLlama3}, "$100.00!!", {"$", "100", ".", "00", "!!"}},
      {"llama3", {SplitRule::kLlama3}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224b", " \342\200\234", "quoted", "\342\200\235"}},
      {"llama3", {SplitRule::kLlama3}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264"}},
      {"llama3", {SplitRule::kLlama3}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246"}},
      {"llama3", {SplitRule::kLlama3}, "e\314\201 x \314\201", {"e", "\314\201", " x", " \314\201"}},
      {"llama3", {SplitRule::kLlama3}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"llama3", {SplitRule::kLlama3}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240x", "\342\200\250y", "\343\200\200z", "\302\205w"}},
      {"llama3", {SplitRule::kLlama3}, "foo/bar\012/baz", {"foo", "/bar", "\012", "/baz"}},
      {"llama3", {SplitRule::kLlama3}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camelCase", " ABCdef", " \307\205ab"}},
      {"llama3", {SplitRule::kLlama3}, "\015\012\015\012x", {"\015\012\015\012", "x"}},
      {"llama3", {SplitRule::kLlama3}, "  \011\012", {"  \011\012"}},
      {"llama3", {SplitRule::kLlama3}, "\013\014\034", {"\013", "\014", "\034"}},
      {"llama3", {SplitRule::kLlama3}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf\303\251", " na\303\257ve", " \331\205\330\261\330\255\330\250\330\247", " \340\244\246", "\340\245\207\340\244\265"}},
      {"llama3", {SplitRule::kLlama3}, "x\012\012\012  y  \012", {"x", "\012\012\012", " ", " y", "  \012"}},
      {"llama3", {SplitRule::kLlama3}, "(Hello) [world]: {ok}\077", {"(Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
      {"qwen2", {SplitRule::kQwen2}, "", {}},
      {"qwen2", {SplitRule::kQwen2}, " ", {" "}},
      {"qwen2", {SplitRule::kQwen2}, "  ", {"  "}},
      {"qwen2", {SplitRule::kQwen2}, "Hello world", {"Hello", " world"}},
      {"qwen2", {SplitRule::kQwen2}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"qwen2", {SplitRule::kQwen2}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I", "'m", " you", "'re", " WE", "'LL", " '", "S", " '", "s", " it", "'s", " x", "'ll", " '", " ''", " a", "'"}},
      {"qwen2", {SplitRule::kQwen2}, "a\012\012b", {"a", "\012\012", "b"}},
      {"qwen2", {SplitRule::kQwen2}, "a \012 \012 b", {"a", " \012 \012", " b"}},
      {"qwen2", {SplitRule::kQwen2}, "\011\011x", {"\011", "\011x"}},
      {"qwen2", {SplitRule::kQwen2}, "x  \012", {"x", "  \012"}},
      {"qwen2", {SplitRule::kQwen2}, "12345 6789", {"1", "2", "3", "4", "5", " ", "6", "7", "8", "9"}},
      {"qwen2", {SplitRule::kQwen2}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " ", "\302\262", "\302\263", " ", "\302\274"}},
      {"qwen2", {SplitRule::kQwen2}, "$100.00!!", {"$", "1", "0", "0", ".", "0", "0", "!!"}},
      {"qwen2", {SplitRule::kQwen2}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224b", " \342\200\234", "quoted", "\342\200\235"}},
      {"qwen2", {SplitRule::kQwen2}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264"}},
      {"qwen2", {SplitRule::kQwen2}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246"}},
      {"qwen2", {SplitRule::kQwen2}, "e\314\201 x \314\201", {"e", "\314\201", " x", " \314\201"}},
      {"qwen2", {SplitRule::kQwen2}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"qwen2", {SplitRule::kQwen2}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240x", "\342\200\250y", "\343\200\200z", "\302\205w"}},
      {"qwen2", {SplitRule::kQwen2}, "foo/bar\012/baz", {"foo", "/bar", "\012", "/baz"}},
      {"qwen2", {SplitRule::kQwen2}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camelCase", " ABCdef", " \307\205ab"}},
      {"qwen2", {SplitRule::kQwen2}, "\015\012\015\012x", {"\015\012\015\012", "x"}},
      {"qwen2", {SplitRule::kQwen2}, "  \011\012", {"  \011\012"}},
      {"qwen2", {SplitRule::kQwen2}, "\013\014\034", {"\013", "\014", "\034"}},
      {"qwen2", {SplitRule::kQwen2}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf\303\251", " na\303\257ve", " \331\205\330\261\330\255\330\250\330\247", " \340\244\246", "\340\245\207\340\244\265"}},
      {"qwen2", {SplitRule::kQwen2}, "x\012\012\012  y  \012", {"x", "\012\012\012", " ", " y", "  \012"}},
      {"qwen2", {SplitRule::kQwen2}, "(Hello) [world]: {ok}\077", {"(Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
      {"gpt4o", {SplitRule::kGpt4o}, "", {}},
      {"gpt4o", {SplitRule::kGpt4o}, " ", {" "}},
      {"gpt4o", {SplitRule::kGpt4o}, "  ", {"  "}},
      {"gpt4o", {SplitRule::kGpt4o}, "Hello world", {"Hello", " world"}},
      {"gpt4o", {SplitRule::kGpt4o}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"gpt4o", {SplitRule::kGpt4o}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I'm", " you're", " WE'LL", " '", "S", " '", "s", " it's", " x'll", " '", " ''", " a", "'"}},
      {"gpt4o", {SplitRule::kGpt4o}, "a\012\012b", {"a", "\012\012", "b"}},
      {"gpt4o", {SplitRule::kGpt4o}, "a \012 \012 b", {"a", " \012 \012", " b"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\011\011x", {"\011", "\011x"}},
      {"gpt4o", {SplitRule::kGpt4o}, "x  \012", {"x", "  \012"}},
      {"gpt4o", {SplitRule::kGpt4o}, "12345 6789", {"123", "45", " ", "678", "9"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " ", "\302\262\302\263", " ", "\302\274"}},
      {"gpt4o", {SplitRule::kGpt4o}, "$100.00!!", {"$", "100", ".", "00", "!!"}},
      {"gpt4o", {SplitRule::kGpt4o}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224b", " \342\200\234", "quoted", "\342\200\235"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223", "\342\204\202\342\204\252\342\204\246"}},
      {"gpt4o", {SplitRule::kGpt4o}, "e\314\201 x \314\201", {"e\314\201", " x", " \314\201"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240x", "\342\200\250y", "\343\200\200z", "\302\205w"}},
      {"gpt4o", {SplitRule::kGpt4o}, "foo/bar\012/baz", {"foo", "/bar", "\012", "/baz"}},
      {"gpt4o", {SplitRule::kGpt4o}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camel", "Case", " ABCdef", " \307\205ab"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\015\012\015\012x", {"\015\012\015\012", "x"}},
      {"gpt4o", {SplitRule::kGpt4o}, "  \011\012", {"  \011\012"}},
      {"gpt4o", {SplitRule::kGpt4o}, "\013\014\034", {"\013", "\014", "\034"}},
      {"gpt4o", {SplitRule::kGpt4o}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf\303\251", " na\303\257ve", " \331\205\330\261\330\255\330\250\330\247", " \340\244\246\340\245\207\340\244\265"}},
      {"gpt4o", {SplitRule::kGpt4o}, "x\012\012\012  y  \012", {"x", "\012\012\012", " ", " y", "  \012"}},
      {"gpt4o", {SplitRule::kGpt4o}, "(Hello) [world]: {ok}\077", {"(Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "", {}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, " ", {" "}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "  ", {"  "}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "Hello world", {"Hello", " world"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I", "'", "m", " you", "'", "re", " WE", "'", "LL", " '", "S", " '", "s", " it", "'", "s", " x", "'", "ll", " '", " ''", " a", "'"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "a\012\012b", {"a", "\012", "\012", "b"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "a \012 \012 b", {"a", " ", "\012", " ", "\012", " b"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\011\011x", {"\011", "\011x"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "x  \012", {"x", "  ", "\012"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "12345 6789", {"12345", " ", "6789"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " ", "\302\262\302\263", " ", "\302\274"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "$100.00!!", {"$", "100", ".", "00", "!!"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224", "b", " ", "\342\200\234", "quoted", "\342\200\235"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254", "\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "e\314\201 x \314\201", {"e", "\314\201", " x", " \314\201"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240x", "\342\200\250", "y", "\343\200\200", "z", "\302\205w"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "foo/bar\012/baz", {"foo", "/", "bar", "\012", "/", "baz"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camelCase", " ABCdef", " \307\205", "ab"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\015\012\015\012x", {"\015", "\012", "\015", "\012", "x"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "  \011\012", {"  \011", "\012"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "\013\014\034", {"\013\014\034"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf", "\303\251", " na", "\303\257", "ve", " \331\205\330\261\330\255\330\250\330\247 ", "\340\244\246\340\245\207\340\244\265"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "x\012\012\012  y  \012", {"x", "\012", "\012", "\012", " ", " y", "  ", "\012"}},
      {"deepseek_llm", {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation, SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers}, "(Hello) [world]: {ok}\077", {"(", "Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "", {}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, " ", {" "}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "  ", {"  "}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "Hello world", {"Hello", " world"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I", "'", "m", " you", "'", "re", " WE", "'", "LL", " '", "S", " '", "s", " it", "'", "s", " x", "'", "ll", " '", " ''", " a", "'"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "a\012\012b", {"a", "\012", "\012", "b"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "a \012 \012 b", {"a", " ", "\012", " ", "\012", " b"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\011\011x", {"\011", "\011x"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "x  \012", {"x", "  ", "\012"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "12345 6789", {"1", "2", "3", "4", "5", " ", "6", "7", "8", "9"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " ", "\302\262", "\302\263", " ", "\302\274"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "$100.00!!", {"$", "1", "0", "0", ".", "0", "0", "!!"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224", "b", " ", "\342\200\234", "quoted", "\342\200\235"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254", "\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "e\314\201 x \314\201", {"e", "\314\201", " x", " \314\201"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240x", "\342\200\250", "y", "\343\200\200", "z", "\302\205w"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "foo/bar\012/baz", {"foo", "/", "bar", "\012", "/", "baz"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camelCase", " ABCdef", " \307\205ab"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\015\012\015\012x", {"\015", "\012", "\015", "\012", "x"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "  \011\012", {"  \011", "\012"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "\013\014\034", {"\013\014\034"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf\303\251", " na\303\257ve", " \331\205\330\261\330\255\330\250\330\247", " ", "\340\244\246", "\340\245\207", "\340\244\265"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "x\012\012\012  y  \012", {"x", "\012", "\012", "\012", " ", " y", "  ", "\012"}},
      {"deepseek_coder", {SplitRule::kNewline, SplitRule::kLetters, SplitRule::kPunctuation, SplitRule::kDeepseekCjk, SplitRule::kNumber}, "(Hello) [world]: {ok}\077", {"(", "Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "", {}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, " ", {" "}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "  ", {"  "}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "Hello world", {"Hello", " world"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, " Hello  world ", {" Hello", " ", " world", " "}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "I'm you're WE'LL 'S 's it's x'll ' '' a'", {"I", "'m", " you", "'re", " WE", "'LL", " '", "S", " '", "s", " it", "'s", " x", "'ll", " '", " ''", " a", "'"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "a\012\012b", {"a", "\012\012", "b"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "a \012 \012 b", {"a", " \012 \012", " b"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\011\011x", {"\011", "\011x"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "x  \012", {"x", "  \012"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "12345 6789", {"123", "45", " ", "678", "9"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\302\275 \302\262\302\263 \302\274", {"\302\275", " ", "\302\262\302\263", " ", "\302\274"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "$100.00!!", {"$", "100", ".", "00", "!!"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "a\342\200\224b \342\200\234quoted\342\200\235", {"a", "\342\200\224", "b", " \342\200\234", "quoted", "\342\200\235"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212\355\225\234\352\265\255\354\226\264", {"\346\261\211\345\255\227\343\201\213\343\201\252\343\202\253\343\203\212", "\355\225\234\352\265\255\354\226\264"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246", {"\316\221\316\251\317\211\316\254\341\276\266\341\275\275\341\277\223\342\204\202\342\204\252\342\204\246"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "e\314\201 x \314\201", {"e\314\201", " x", " \314\201"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\360\237\230\200\360\237\221\215\360\237\217\275", {"\360\237\230\200\360\237\221\215\360\237\217\275"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\302\240x\342\200\250y\343\200\200z\302\205w", {"\302\240x", "\342\200\250y", "\343\200\200z", "\302\205w"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "foo/bar\012/baz", {"foo", "/bar", "\012", "/baz"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "HELLOWorld camelCase ABCdef \307\205ab", {"HELLOWorld", " camelCase", " ABCdef", " \307\205ab"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\015\012\015\012x", {"\015\012\015\012", "x"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "  \011\012", {"  \011\012"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "\013\014\034", {"\013", "\014", "\034"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "caf\303\251 na\303\257ve \331\205\330\261\330\255\330\250\330\247 \340\244\246\340\245\207\340\244\265", {"caf\303\251", " na\303\257ve", " \331\205\330\261\330\255\330\250\330\247", " \340\244\246\340\245\207\340\244\265"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "x\012\012\012  y  \012", {"x", "\012\012\012", " ", " y", "  \012"}},
      {"deepseek_v3", {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words}, "(Hello) [world]: {ok}\077", {"(Hello", ")", " [", "world", "]:", " {", "ok", "}\077"}},
  };
  return kCases;
}

}  // namespace

// ---- UTF-8 and Unicode ------------------------------------------------------------------------

ZTEST(text_decode_utf8_marks_each_invalid_byte) {
  std::vector<std::uint32_t> units, offsets;
  decode_utf8("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", &units, &offsets);
  ZCHECK((units == std::vector<std::uint32_t>{'a', 0xE9, 0x20AC, 0x1F600}));
  ZCHECK((offsets == std::vector<std::uint32_t>{0, 1, 3, 6, 10}));
  // Overlong, surrogate, above U+10FFFF, truncated, lone continuation: one unit per byte.
  for (const std::string bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82", "\x80", "\xFF"}) {
    decode_utf8(bad, &units, &offsets);
    ZCHECK_EQ(units.size(), bad.size());
    for (std::size_t i = 0; i < bad.size(); ++i) {
      ZCHECK_EQ(units[i], kInvalidByteBase + static_cast<unsigned char>(bad[i]));
    }
  }
  std::string round;
  decode_utf8("x\xFFy\xC3\xA9", &units, nullptr);
  for (std::uint32_t u : units) append_utf8(u, &round);
  ZCHECK_EQ(round, std::string("x\xFFy\xC3\xA9"));
}

ZTEST(text_lossy_utf8_replaces_maximal_subparts) {
  // The same replacements as Python's bytes.decode("utf-8", "replace").
  const std::string fffd = "\xEF\xBF\xBD";
  ZCHECK_EQ(lossy("\xE0\x80\x80"), fffd + fffd + fffd);
  ZCHECK_EQ(lossy("\xF0\x9F\x98"), fffd);
  ZCHECK_EQ(lossy("a\xF0\x9F\x98" "b"), "a" + fffd + "b");
  ZCHECK_EQ(lossy("\xED\xA0\x80"), fffd + fffd + fffd);
  ZCHECK_EQ(lossy("\xC0\xAF"), fffd + fffd);
  ZCHECK_EQ(lossy("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);
  ZCHECK_EQ(lossy("\xE2\x82\xAC\xE2\x82"), "\xE2\x82\xAC" + fffd);
  ZCHECK_EQ(lossy("plain"), std::string("plain"));
  ZCHECK(is_valid_utf8("\xE2\x82\xAC"));
  ZCHECK(!is_valid_utf8("\xE2\x82"));
  ZCHECK_EQ(incomplete_utf8_suffix("ab\xF0\x9F\x98"), std::size_t(3));
  ZCHECK_EQ(incomplete_utf8_suffix("ab\xE2"), std::size_t(1));
  ZCHECK_EQ(incomplete_utf8_suffix("ab\xE2\x82\xAC"), std::size_t(0));
  ZCHECK_EQ(incomplete_utf8_suffix("\xE2\x28"), std::size_t(0));  // already invalid: nothing to wait for
  ZCHECK_EQ(incomplete_utf8_suffix("\xE0\x80"), std::size_t(0));
  ZCHECK_EQ(incomplete_utf8_suffix(""), std::size_t(0));
}

ZTEST(text_unicode_classes) {
  ZCHECK(is_letter('a') && is_letter(0xE9) && is_letter(0x4E00) && is_letter(0x1F7D));
  ZCHECK(!is_letter('1') && !is_letter(' ') && !is_letter(kInvalidByteBase + 0xFF));
  ZCHECK(is_number('7') && is_number(0xBD) && is_number(0xB2) && is_number(0x0967));
  ZCHECK(is_whitespace(' ') && is_whitespace('\t') && is_whitespace(0x85) && is_whitespace(0xA0) &&
         is_whitespace(0x2028) && is_whitespace(0x3000));
  ZCHECK(!is_whitespace(0x1C) && !is_whitespace(0x200B) && !is_whitespace('x'));
  ZCHECK(is_mark(0x301) && is_punctuation('!') && is_punctuation(0x201C) && is_symbol('$') && is_symbol(0x1F600));
  ZCHECK(unicode_category(0x1C5) == UnicodeCategory::kLt);
  ZCHECK(unicode_category(0x10FFFF) == UnicodeCategory::kCn);
  ZCHECK_EQ(canonical_combining_class(0x301), std::uint8_t(230));
  ZCHECK_EQ(canonical_combining_class(0x323), std::uint8_t(220));
  ZCHECK_EQ(canonical_combining_class('a'), std::uint8_t(0));
  ZCHECK(std::string(unicode_version()).size() >= 4);
}

ZTEST(text_nfc) {
  std::string out;
  ZCHECK(!nfc_normalize("plain ascii", &out));
  ZCHECK(!nfc_normalize("caf\xC3\xA9 \xE4\xB8\xAD", &out));  // already composed
  ZCHECK_EQ(nfc("e\xCC\x81"), std::string("\xC3\xA9"));
  ZCHECK_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), std::string("\xEA\xB0\x81"));  // Hangul L V T
  ZCHECK_EQ(nfc("\xEA\xB0\x80\xE1\x86\xA8"), std::string("\xEA\xB0\x81"));              // LV + T
  ZCHECK_EQ(nfc("\xE2\x84\xA6"), std::string("\xCE\xA9"));                                // singleton
  ZCHECK_EQ(nfc("q\xCC\x87\xCC\xA3"), std::string("q\xCC\xA3\xCC\x87"));                 // reordering
  ZCHECK_EQ(nfc("\xE0\xA5\x98"), std::string("\xE0\xA4\x95\xE0\xA4\xBC"));               // exclusion
  ZCHECK_EQ(nfc("a\xCC\x88\xCC\x81"), std::string("\xC3\xA4\xCC\x81"));
  ZCHECK_EQ(nfc("\xE1\xB8\x8B\xCC\xA3"), std::string("\xE1\xB8\x8D\xCC\x87"));
  ZCHECK_EQ(nfc("A\xCC\x8A\xCC\x81x"), std::string("\xC7\xBAx"));
  ZCHECK_EQ(nfc("\xCD\x84"), std::string("\xCC\x88\xCC\x81"));                           // non-starter decomposition
  ZCHECK_EQ(nfc("\xFF" "e\xCC\x81\xFF"), std::string("\xFF\xC3\xA9\xFF"));                // invalid bytes kept
}

// ---- pre-tokenizers ---------------------------------------------------------------------------

ZTEST(text_pretokenizer_splits_like_hugging_face) {
  for (const SplitCase& c : split_cases()) {
    const std::vector<std::string> got = split_text(c.rules, c.text);
    if (got != c.pieces) {
      ::ztest::report_failure(__FILE__, __LINE__,
                              std::string(c.name) + " on \"" + c.text + "\": " + join(got) + " expected " + join(c.pieces));
    }
  }
}

ZTEST(text_pretokenizer_pieces_cover_the_text) {
  // Random mixtures of every class: pieces are non-empty, in order, and cover the text.
  const std::vector<std::string> alphabet = {"a", "Z", "1", " ", "\n", "\r", "\t", "'", "s", "!", "\xC3\xA9", "\xC2\xBD",
                                             "\xE4\xB8\xAD", "\xCC\x81", "\xE2\x80\xA8", "\xF0\x9F\x98\x80", "\xFF",
                                             "\xE2\x96\x81", "/", "\xE3\x80\x80"};
  const std::vector<std::vector<SplitRule>> rule_sets = {
      {SplitRule::kGpt2}, {SplitRule::kLlama3}, {SplitRule::kQwen2}, {SplitRule::kGpt4o},
      {SplitRule::kNewline, SplitRule::kDeepseekLetters, SplitRule::kDeepseekPunctuation,
       SplitRule::kTrailingWhitespace, SplitRule::kDeepseekCjk, SplitRule::kNumbers},
      {SplitRule::kNumbersUpTo3, SplitRule::kDeepseekV3Cjk, SplitRule::kDeepseekV3Words},
      {SplitRule::kMetaspaceWords}};
  std::mt19937 rng(5);
  for (int trial = 0; trial < 400; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 30);
    for (int i = 0; i < n; ++i) text += alphabet[rng() % alphabet.size()];
    for (const auto& rules : rule_sets) {
      const std::vector<std::string> pieces = split_text(rules, text);
      std::string joined;
      for (const std::string& p : pieces) {
        ZCHECK(!p.empty());
        joined += p;
      }
      ZCHECK_EQ(joined, text);
    }
  }
  // Long runs stay linear (a quadratic scan would take seconds here).
  const std::string spaces(200000, ' ');
  ZCHECK_EQ(split_text({SplitRule::kLlama3}, spaces + "x").size(), std::size_t(2));
  ZCHECK_EQ(split_text({SplitRule::kTrailingWhitespace}, "x" + spaces).size(), std::size_t(2));
}

ZTEST(text_pretokenizer_recognizes_patterns) {
  std::vector<SplitRule> rules;
  ZCHECK(split_rules_for_pattern("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
                                 &rules).ok());
  ZCHECK(rules == std::vector<SplitRule>{SplitRule::kGpt2});
  // Raw CR/LF and their escapes are the same pattern.
  ZCHECK(split_rules_for_pattern("[\r\n]", &rules).ok() && rules == std::vector<SplitRule>{SplitRule::kNewline});
  ZCHECK(split_rules_for_pattern("[\\r\\n]", &rules).ok());
  const Status unknown = split_rules_for_pattern("\\w+|[^\\w\\s]+", &rules);
  ZCHECK(unknown.code() == StatusCode::kUnsupported);
  ZCHECK(unknown.message().find("\\w+|[^\\w\\s]+") != std::string::npos);
  bool ignore_merges = false;
  ZCHECK(split_rules_for_gguf_pre("llama-bpe", &rules, &ignore_merges).ok() && ignore_merges);
  ZCHECK(split_rules_for_gguf_pre("qwen2", &rules, &ignore_merges).ok() && !ignore_merges);
  const Status bad = split_rules_for_gguf_pre("chameleon", &rules, &ignore_merges);
  ZCHECK(bad.code() == StatusCode::kUnsupported && bad.message().find("chameleon") != std::string::npos);
}

// ---- BPE ----------------------------------------------------------------------------------------

ZTEST(text_bpe_merges_lowest_priority_leftmost_first) {
  PairTable pairs;
  // tokens: 0 a, 1 b, 2 ab, 3 bb, 4 abb
  pairs.insert(0, 1, 5, 2);
  pairs.insert(1, 1, 5, 3);
  pairs.insert(2, 1, 7, 4);
  pairs.insert(0, 1, 9, 99);  // a duplicate keeps the lower priority
  MergeResult r;
  ZCHECK(pairs.find(0, 1, &r) && r.priority == 5 && r.token == 2);
  ZCHECK(!pairs.find(1, 0, &r));
  BpeMerger merger;
  std::vector<std::int32_t> out;
  const std::int32_t abb[] = {0, 1, 1};
  merger.merge(pairs, abb, 3, &out);  // ab and bb tie at 5: the leftmost wins, then ab+b
  ZCHECK_IDS(out, {4});
  out.clear();
  const std::int32_t bab[] = {1, 0, 1};
  merger.merge(pairs, bab, 3, &out);
  ZCHECK_IDS(out, {1, 2});
  out.clear();
  std::vector<std::int32_t> many(5000, 1);
  merger.merge(pairs, many.data(), many.size(), &out);
  ZCHECK_EQ(out.size(), std::size_t(2500));
}

ZTEST(text_vocabulary_lookup) {
  Vocabulary v;
  for (const char* t : {"a", "b", "", "longer token", "a"}) v.push_back(t);
  v.build_index();
  ZCHECK_EQ(v.size(), 5);
  ZCHECK_EQ(v.find("b"), 1);
  ZCHECK_EQ(v.find("a"), 4);  // the later duplicate, as llama.cpp keeps it
  ZCHECK_EQ(v.find("longer token"), 3);
  ZCHECK_EQ(v.find("missing"), -1);
  ZCHECK(v.token(3) == "longer token");
}

// ---- tokenizers -------------------------------------------------------------------------------

ZTEST(text_byte_level_tokenizer_from_gguf) {
  Status status;
  auto t = tokenizer_from(byte_level_gguf().bytes(), &status);
  ZCHECK(status.ok());
  if (!t) return;
  ZCHECK_EQ(t->vocab_size(), 265);
  ZCHECK_EQ(t->bos_id(), 263);
  // "hello" merges fully; " world" becomes "Ġwor" + l + d.
  const std::int32_t l = t->token_to_id("l"), d = t->token_to_id("d");
  ZCHECK_IDS(encode(*t, "hello world"), {259, 262, l, d});
  ZCHECK_EQ(decode(*t, encode(*t, "hello world")), std::string("hello world"));
  // No BOS by default for a gpt-2 vocabulary.
  ZCHECK_IDS(encode(*t, "he", true), {256});
  // Control tokens need parse_special; user-defined ones are always matched.
  const std::int32_t lt = t->token_to_id("<"), bar = t->token_to_id("|");
  ZCHECK_IDS(encode(*t, "<|end|>", false, true), {263});
  const std::vector<std::int32_t> as_text = encode(*t, "<|end|>", false, false);
  ZCHECK(as_text.size() > 1 && as_text[0] == lt && as_text[1] == bar);
  ZCHECK_IDS(encode(*t, "x<u>y"), {t->token_to_id("x"), 264, t->token_to_id("y")});
  ZCHECK_EQ(decode(*t, {263, 259}), std::string("<|end|>hello"));
  ZCHECK_EQ(decode(*t, {263, 259}, true), std::string("hello"));
  // Invalid UTF-8 input is encoded byte for byte and decodes back to the same bytes.
  const std::string raw = "a\xFF\xC3";
  const auto ids = encode(*t, raw);
  std::string bytes;
  t->decode_bytes(ids.data(), ids.size(), false, &bytes);
  ZCHECK_EQ(bytes, raw);
  ZCHECK_EQ(decode(*t, ids), std::string("a\xEF\xBF\xBD\xEF\xBF\xBD"));
  // Out-of-range ids decode to nothing.
  ZCHECK_EQ(decode(*t, {-5, 259, 100000}), std::string("hello"));
}

ZTEST(text_llama3_family_adds_bos_and_ignores_merges) {
  auto t = tokenizer_from(byte_level_gguf("llama-bpe").bytes());
  ZCHECK(t != nullptr);
  if (!t) return;
  ZCHECK_IDS(encode(*t, "hello", true), {263, 259});
  ZCHECK(t->prefix_ids().size() == 1);
}

ZTEST(text_sentencepiece_merges_by_score) {
  Status status;
  auto t = tokenizer_from(sentencepiece_gguf().bytes(), &status);
  ZCHECK(status.ok());
  if (!t) return;
  const std::int32_t hello = t->token_to_id("\xE2\x96\x81hello");
  ZCHECK_IDS(encode(*t, "hello"), {hello});
  ZCHECK_IDS(encode(*t, "hello", true), {1, hello});
  // A character missing from the vocabulary falls back to its bytes.
  const std::int32_t space = t->token_to_id("\xE2\x96\x81"), h = t->token_to_id("h");
  ZCHECK_IDS(encode(*t, "h\xC3\xA9"), {space, h, 3 + 0xC3, 3 + 0xA9});
  ZCHECK_EQ(decode(*t, encode(*t, "h\xC3\xA9")), std::string("h\xC3\xA9"));
  // The dummy prefix is dropped once, at the start.
  ZCHECK_EQ(decode(*t, {hello, hello}), std::string("hello hello"));
  ZCHECK_EQ(decode(*t, {1, hello}), std::string("<s> hello"));
  ZCHECK_EQ(decode(*t, {1, hello}, true), std::string("hello"));
  // Every text segment gets the prefix (after a special token too).
  ZCHECK_IDS(encode(*t, "hello<s>hello", false, true), {hello, 1, hello});
  ZCHECK_IDS(encode(*t, ""), {});
  ZCHECK_IDS(encode(*t, "", true), {1});
}

ZTEST(text_sentencepiece_merges_across_words_when_the_vocabulary_does) {
  // With a token "a▁" the text cannot be encoded word by word.
  GgufBuilder g;
  g.string("tokenizer.ggml.model", "llama");
  g.strings("tokenizer.ggml.tokens", {"<unk>", "\xE2\x96\x81", "a", "b", "a\xE2\x96\x81", "a\xE2\x96\x81" "b", "\xE2\x96\x81" "a"});
  g.f32s("tokenizer.ggml.scores", {0, -1, -1, -1, -2, -3, -4});
  g.i32s("tokenizer.ggml.token_type", {2, 1, 1, 1, 1, 1, 1});
  Status status;
  auto t = tokenizer_from(g.bytes(), &status);
  ZCHECK(status.ok());
  if (!t) return;
  ZCHECK_IDS(encode(*t, "a b"), {1, 5});  // ▁ a ▁ b: "a▁" (-2) first, then "a▁b" (-3); "▁a" (-4) loses
  ZCHECK_EQ(decode(*t, {1, 5}), std::string("a b"));
}

ZTEST(text_stream_decoder_never_splits_a_character) {
  auto t = tokenizer_from(byte_level_gguf().bytes());
  ZCHECK(t != nullptr);
  if (!t) return;
  const std::string text = "h\xC3\xA9 \xE2\x82\xAC\xF0\x9F\x98\x80!";
  std::vector<std::int32_t> ids;
  for (char c : text) ids.push_back(t->token_to_id(byte_alphabet().utf8[static_cast<unsigned char>(c)]));
  StreamDecoder stream(t);
  std::string joined;
  std::vector<std::string> pieces;
  for (std::int32_t id : ids) {
    pieces.push_back(stream.feed(id));
    ZCHECK(is_valid_utf8(pieces.back()));
    joined += pieces.back();
  }
  joined += stream.flush();
  ZCHECK_EQ(joined, text);
  ZCHECK_EQ(pieces[1], std::string());  // the first byte of é is held back
  ZCHECK_EQ(pieces[2], std::string("\xC3\xA9"));
  // Random byte sequences, valid or not: pieces are valid and concatenate to decode().
  std::mt19937 rng(9);
  const unsigned char interesting[] = {'a', ' ', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xED, 0xA0};
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::int32_t> seq;
    const int n = static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      seq.push_back(t->token_to_id(byte_alphabet().utf8[interesting[rng() % sizeof(interesting)]]));
    }
    if (rng() % 4 == 0) seq.push_back(263);
    StreamDecoder s(t, trial % 2 == 0);
    std::string all;
    for (std::int32_t id : seq) {
      const std::string piece = s.feed(id);
      ZCHECK(is_valid_utf8(piece));
      all += piece;
    }
    const std::string rest = s.flush();
    ZCHECK(is_valid_utf8(rest));
    all += rest;
    ZCHECK_EQ(all, t->decode(seq.data(), seq.size(), trial % 2 == 0));
  }
}

ZTEST(text_stream_decoder_sentencepiece_prefix) {
  auto t = tokenizer_from(sentencepiece_gguf().bytes());
  ZCHECK(t != nullptr);
  if (!t) return;
  const std::int32_t hello = t->token_to_id("\xE2\x96\x81hello");
  StreamDecoder at_start(t);
  const std::string first = at_start.feed(hello);
  ZCHECK_EQ(first + at_start.feed(hello), std::string("hello hello"));
  StreamDecoder continuing(t, false, false);
  ZCHECK_EQ(continuing.feed(hello), std::string(" hello"));
  // Byte-fallback tokens of one character arrive separately.
  StreamDecoder bytes(t);
  ZCHECK_EQ(bytes.feed(3 + 0xC3), std::string());
  ZCHECK_EQ(bytes.pending_bytes(), std::size_t(1));
  ZCHECK_EQ(bytes.feed(3 + 0xA9), std::string("\xC3\xA9"));
  ZCHECK_EQ(bytes.feed(3 + 0xE2), std::string());
  ZCHECK_EQ(bytes.flush(), std::string("\xEF\xBF\xBD"));
}

// ---- tokenizer.json -----------------------------------------------------------------------------

namespace {

Value byte_level_json(const Value& pre_tokenizer, const std::vector<Value::Member>& extra = {}) {
  std::vector<Value::Member> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(byte_alphabet().utf8[b], Value::integer(b));
  vocab.emplace_back("he", Value::integer(256));
  vocab.emplace_back("hel", Value::integer(257));
  std::vector<Value> merges = {Value::string("h e"),
                               Value::array({Value::string("he"), Value::string("l")})};
  std::vector<Value::Member> model = {{"type", Value::string("BPE")},
                                      {"vocab", Value::object(vocab)},
                                      {"merges", Value::array(merges)}};
  std::vector<Value::Member> root = {
      {"model", Value::object(model)},
      {"pre_tokenizer", pre_tokenizer},
      {"added_tokens", Value::array({Value::object({{"id", Value::integer(258)},
                                                    {"content", Value::string("<|s|>")},
                                                    {"special", Value::boolean(true)}})})},
      {"post_processor",
       Value::object({{"type", Value::string("TemplateProcessing")},
                      {"single", Value::array({Value::object({{"SpecialToken", Value::object({{"id", Value::string("<|s|>")}})}}),
                                               Value::object({{"Sequence", Value::object({{"id", Value::string("A")}})}})})},
                      {"special_tokens",
                       Value::object({{"<|s|>", Value::object({{"ids", Value::array({Value::integer(258)})}})}})}})}};
  root.insert(root.end(), extra.begin(), extra.end());
  return Value::object(root);
}

Value byte_level_pre() {
  return Value::object({{"type", Value::string("ByteLevel")}, {"add_prefix_space", Value::boolean(false)},
                        {"use_regex", Value::boolean(true)}});
}

Status from_json_value(const Value& root, std::shared_ptr<const Tokenizer>* t, const Value* config = nullptr) {
  return Tokenizer::from_hf_json(zipmoe::json::serialize(root), config, "test.json", t);
}

}  // namespace

ZTEST(text_tokenizer_from_json) {
  std::shared_ptr<const Tokenizer> t;
  const Status s = from_json_value(byte_level_json(byte_level_pre()), &t);
  ZCHECK(s.ok());
  if (!t) return;
  ZCHECK_EQ(t->vocab_size(), 259);
  ZCHECK_IDS(encode(*t, "hel"), {257});
  ZCHECK_IDS(encode(*t, "hel", true), {258, 257});
  ZCHECK_EQ(t->bos_id(), 258);
  ZCHECK_IDS(encode(*t, "<|s|>", false, true), {258});
  // tokenizer_config's add_bos_token = false removes the template's BOS.
  const Value config = Value::object({{"add_bos_token", Value::boolean(false)}, {"bos_token", Value::string("<|s|>")}});
  ZCHECK(from_json_value(byte_level_json(byte_level_pre()), &t, &config).ok());
  ZCHECK_IDS(encode(*t, "hel", true), {257});
}

ZTEST(text_tokenizer_json_errors_name_what_is_unsupported) {
  std::shared_ptr<const Tokenizer> t;
  Status s = from_json_value(byte_level_json(Value::object({{"type", Value::string("Whitespace")}})), &t);
  ZCHECK(s.code() == StatusCode::kUnsupported && s.message().find("Whitespace") != std::string::npos);
  s = from_json_value(byte_level_json(Value::object({{"type", Value::string("Split")},
                                                     {"pattern", Value::object({{"Regex", Value::string("\\w+")}})},
                                                     {"behavior", Value::string("Isolated")}})),
                      &t);
  ZCHECK(s.code() == StatusCode::kUnsupported && s.message().find("\\w+") != std::string::npos);
  s = Tokenizer::from_hf_json("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", nullptr, "u.json", &t);
  ZCHECK(s.code() == StatusCode::kUnsupported && s.message().find("Unigram") != std::string::npos);
  for (const char* bad : {"", "{", "[]", "{\"model\": 3}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}",
                          "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}}",
                          "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2000000000}}}",
                          "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}}"}) {
    s = Tokenizer::from_hf_json(bad, nullptr, "bad.json", &t);
    ZCHECK(s.code() == StatusCode::kFormat);
  }
}

ZTEST(text_tokenizer_from_container_metadata) {
  // The gguf record of a container: base64 for a non-UTF-8 token, {"bits": ...} for a non-finite score.
  std::vector<Value> tokens = {Value::string("<unk>"), Value::string("<s>"), Value::string("</s>")};
  std::vector<Value> scores = {Value::number(0.5), Value::number(0.5), Value::number(0.5)};
  std::vector<Value> types = {Value::integer(2), Value::integer(3), Value::integer(3)};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    tokens.push_back(Value::string(name));
    scores.push_back(Value::number(0.5));
    types.push_back(Value::integer(6));
  }
  tokens.push_back(Value::object({{"base64", Value::string("/w==")}}));  // "\xFF"
  scores.push_back(Value::object({{"bits", Value::integer(0xFF800000)}}));  // -inf
  types.push_back(Value::integer(1));
  tokens.push_back(Value::string("\xE2\x96\x81"));
  scores.push_back(Value::number(-1.5));
  types.push_back(Value::integer(1));
  const Value record = Value::object(
      {{"tokenizer_json", Value()},
       {"tokenizer_config", Value()},
       {"gguf", Value::object({{"tokenizer.ggml.model", Value::string("llama")},
                               {"tokenizer.ggml.tokens", Value::array(tokens)},
                               {"tokenizer.ggml.scores", Value::array(scores)},
                               {"tokenizer.ggml.token_type", Value::array(types)},
                               {"tokenizer.ggml.bos_token_id", Value::integer(1)},
                               {"tokenizer.ggml.add_bos_token", Value::boolean(false)}})}});
  std::shared_ptr<const Tokenizer> t;
  const Status s = Tokenizer::from_container_metadata(record, "m.zmoe", &t);
  ZCHECK(s.ok());
  if (!t) return;
  ZCHECK(t->id_to_token(259) == "\xFF");
  ZCHECK_EQ(t->bos_id(), 1);
  ZCHECK_IDS(encode(*t, "a", true), {260, 3 + 'a'});
  std::shared_ptr<const Tokenizer> none;
  ZCHECK(Tokenizer::from_container_metadata(Value::object({{"tokenizer_json", Value()}, {"gguf", Value()}}), "m", &none)
             .code() == StatusCode::kUnsupported);
  ZCHECK(Tokenizer::from_container_metadata(Value::object({{"gguf", Value::integer(3)}}), "m", &none).code() ==
         StatusCode::kFormat);
}

// ---- corrupt GGUF -------------------------------------------------------------------------------

ZTEST(text_gguf_rejects_corrupt_headers) {
  const std::vector<std::uint8_t> good = byte_level_gguf().bytes();
  GgufMetadata metadata;
  ZCHECK(parse_gguf_metadata(good.data(), good.size(), "g", nullptr, &metadata).ok());
  ZCHECK(metadata.find("tokenizer.ggml.tokens") && metadata.find("tokenizer.ggml.tokens")->strings.size() == 265);
  auto fails = [&](std::vector<std::uint8_t> bytes, const char* needle) {
    GgufMetadata m;
    const Status s = parse_gguf_metadata(bytes.data(), bytes.size(), "bad.gguf", nullptr, &m);
    if (s.code() != StatusCode::kFormat || s.message().find(needle) == std::string::npos) {
      ::ztest::report_failure(__FILE__, __LINE__, std::string("expected a FormatError with \"") + needle +
                                                      "\", got: " + s.message());
    }
  };
  std::vector<std::uint8_t> bytes = good;
  bytes[0] = 'X';
  fails(bytes, "not a GGUF file");
  fails(byte_level_gguf().bytes(1), "version 1");
  fails({'G', 'G'}, "too short");
  bytes = good;
  std::memset(&bytes[16], 0xFF, 8);  // key/value count
  fails(bytes, "key/value count");
  bytes = good;
  std::memset(&bytes[24], 0x7F, 8);  // length of the first key
  fails(bytes, "runs past the end");
  GgufBuilder deep;
  deep.boolean("flag", true);
  std::vector<std::uint8_t> flag = deep.bytes();
  flag.back() = 2;
  fails(flag, "bool");
  GgufBuilder dup;
  dup.u32("a", 1);
  dup.u32("a", 2);
  fails(dup.bytes(), "twice");
  // Arrays nested past the limit.
  std::vector<std::uint8_t> nested = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  for (int i = 0; i < 8; ++i) nested.push_back(0);
  nested.push_back(1);
  for (int i = 0; i < 7; ++i) nested.push_back(0);
  nested.insert(nested.end(), {1, 0, 0, 0, 0, 0, 0, 0, 'k', 9, 0, 0, 0});
  for (int depth = 0; depth < 12; ++depth) {
    nested.insert(nested.end(), {9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0});
  }
  fails(nested, "nested");
  Status s;
  std::shared_ptr<const Tokenizer> t;
  s = zipmoe::model::tokenizer_from_gguf_file("/nonexistent/vocab.gguf", &t);
  ZCHECK(s.code() == StatusCode::kIo);
}

ZTEST(text_gguf_truncation_and_bit_flips_never_crash) {
  for (const std::vector<std::uint8_t>& good : {byte_level_gguf().bytes(), sentencepiece_gguf().bytes()}) {
    for (std::size_t size = 0; size < good.size(); size += (size < 64 ? 1 : 97)) {
      GgufMetadata m;
      const Status s = parse_gguf_metadata(good.data(), size, "cut.gguf", is_tokenizer_key, &m);
      ZCHECK(s.code() == StatusCode::kFormat);
    }
    std::mt19937 rng(11);
    int built = 0;
    for (int trial = 0; trial < 600; ++trial) {
      std::vector<std::uint8_t> bytes = good;
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      Status s;
      auto t = tokenizer_from(bytes, &s);
      if (!s.ok()) {
        ZCHECK(s.code() == StatusCode::kFormat || s.code() == StatusCode::kUnsupported);
        continue;
      }
      ++built;
      const auto ids = encode(*t, "hello <|end|> h\xC3\xA9llo \xFF", true, true);
      (void)t->decode(ids.data(), ids.size(), false);
    }
    ZCHECK(built > 0);
  }
}
