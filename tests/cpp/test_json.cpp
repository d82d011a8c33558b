// The strict JSON parser (cpp/common/json.h): what it accepts, what it rejects,
// and that no input crashes it.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/json.h"
#include "test_framework.h"

using zipmoe::json::ParseOptions;
using zipmoe::json::Type;
using zipmoe::json::Value;

namespace {

bool parses(const std::string& text, Value* out = nullptr) {
  Value v;
  const zipmoe::Status s = zipmoe::json::parse(text, &v);
  if (out) *out = v;
  return s.ok();
}

bool rejected_as_format(const std::string& text) {
  Value v;
  const zipmoe::Status s = zipmoe::json::parse(text, &v);
  return !s.ok() && s.code() == zipmoe::StatusCode::kFormat;
}

}  // namespace

ZTEST(json_parses_every_kind_of_value) {
  Value v;
  ZCHECK(parses(R"( {"a": [1, -2.5, 3e2, true, false, null, "x\u00e9\n"], "b": {}, "c": []} )", &v));
  ZCHECK(v.is_object());
  ZCHECK_EQ(v.members().size(), std::size_t(3));
  const Value* a = v.find("a");
  ZCHECK(a != nullptr && a->is_array());
  ZCHECK_EQ(a->items().size(), std::size_t(7));
  ZCHECK(a->items()[0].is_integer());
  ZCHECK_EQ(a->items()[0].as_int(), std::int64_t(1));
  ZCHECK(!a->items()[1].is_integer());
  ZCHECK_EQ(a->items()[1].as_number(), -2.5);
  ZCHECK_EQ(a->items()[2].as_number(), 300.0);
  ZCHECK(a->items()[3].as_bool());
  ZCHECK(a->items()[4].is_bool() && !a->items()[4].as_bool());
  ZCHECK(a->items()[5].is_null());
  ZCHECK_EQ(a->items()[6].as_string(), std::string("x\xC3\xA9\n"));
  ZCHECK(v.find("b")->is_object() && v.find("b")->members().empty());
  ZCHECK(v.find("missing") == nullptr);
  // Scalars at the top level are documents too.
  ZCHECK(parses("42", &v) && v.as_int() == 42);
  ZCHECK(parses("\"s\"", &v) && v.as_string() == "s");
  ZCHECK(parses(" null ", &v) && v.is_null());
}

ZTEST(json_numbers_are_exact) {
  Value v;
  ZCHECK(parses("9223372036854775807", &v) && v.is_integer() && v.as_int() == INT64_MAX);
  ZCHECK(parses("-9223372036854775808", &v) && v.is_integer() && v.as_int() == INT64_MIN);
  // Past int64: a double.
  ZCHECK(parses("9223372036854775808", &v) && !v.is_integer() && v.as_number() == 9223372036854775808.0);
  ZCHECK(parses("1e-6", &v) && v.as_number() == 1e-6);
  ZCHECK(parses("0.1", &v) && v.as_number() == 0.1);
  ZCHECK(parses("-0", &v) && v.is_integer() && v.as_int() == 0);
  ZCHECK(parses("1E+2", &v) && v.as_number() == 100.0);
  // Underflow rounds to zero; overflow is an error.
  ZCHECK(parses("1e-400", &v) && v.as_number() == 0.0);
  ZCHECK(parses("0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "00000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "00000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                "00000000000000000000000000000000000000000000000000000000000000000000000000000001",
                &v) &&
         v.as_number() == 0.0);
  ZCHECK(rejected_as_format("1e400"));
  ZCHECK(rejected_as_format("-1e309"));
}

ZTEST(json_strings_decode_escapes_and_surrogate_pairs) {
  Value v;
  ZCHECK(parses(R"("\"\\\/\b\f\n\r\t")", &v) && v.as_string() == "\"\\/\b\f\n\r\t");
  ZCHECK(parses(R"("\ud83d\ude00")", &v) && v.as_string() == "\xF0\x9F\x98\x80");
  ZCHECK(parses("\"\xF0\x9F\x98\x80\"", &v) && v.as_string() == "\xF0\x9F\x98\x80");
  ZCHECK(parses(R"("\u0000")", &v) && v.as_string() == std::string(1, '\0'));
}

ZTEST(json_rejects_what_rfc8259_does_not_allow) {
  const char* bad[] = {
      "",
      "   ",
      "{",
      "}",
      "[1,]",
      "{\"a\":1,}",
      "[1 2]",
      "{\"a\" 1}",
      "{a:1}",
      "{'a':1}",
      "[01]",
      "[+1]",
      "[1.]",
      "[.5]",
      "[1e]",
      "[1e+]",
      "[-]",
      "[NaN]",
      "[Infinity]",
      "[-Infinity]",
      "[tru]",
      "[nul]",
      "[True]",
      "\"unterminated",
      "\"bad escape \\x\"",
      "\"\\u12\"",
      "\"\\uZZZZ\"",
      "\"\\ud800\"",         // lone high surrogate
      "\"\\udc00\"",         // lone low surrogate
      "\"\\ud800\\u0041\"",  // high surrogate + non-surrogate
      "\"tab\there\"",       // unescaped control character
      "\"\xC3\"",            // truncated UTF-8
      "\"\xC0\xAF\"",        // overlong
      "\"\xED\xA0\x80\"",    // UTF-16 surrogate encoded in UTF-8
      "\"\xF4\x90\x80\x80\"",  // above U+10FFFF
      "\"\xFF\"",
      "\xEF\xBB\xBF{}",      // BOM
      "{} {}",
      "[1] x",
      "// comment\n{}",
      "{\"a\":1,\"a\":2}",   // duplicate key
      "{\"b\":1,\"a\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"a\":0}",
  };
  for (const char* text : bad) {
    if (!rejected_as_format(text)) std::fprintf(stderr, "    accepted: %s\n", text);
    ZCHECK(rejected_as_format(text));
  }
}

ZTEST(json_errors_name_line_and_column) {
  Value v;
  const zipmoe::Status s = zipmoe::json::parse("{\n  \"a\": [1,\n  2,]\n}", &v);
  ZCHECK(!s.ok());
  ZCHECK(s.message().find("line 3") != std::string::npos);
}

ZTEST(json_nesting_depth_is_bounded) {
  std::string deep(100000, '[');
  ZCHECK(rejected_as_format(deep));
  deep += std::string(100000, ']');
  ZCHECK(rejected_as_format(deep));
  ParseOptions options;
  options.max_depth = 3;
  Value v;
  ZCHECK(zipmoe::json::parse("[[[1]]]", &v, options).ok());
  ZCHECK(!zipmoe::json::parse("[[[[1]]]]", &v, options).ok());
  ZCHECK(!zipmoe::json::parse("{\"a\":{\"b\":{\"c\":{}}}}", &v, options).ok());
}

ZTEST(json_keep_top_level_builds_only_those_members_but_validates_all) {
  ParseOptions options;
  options.keep_top_level = {"config"};
  Value v;
  ZCHECK(zipmoe::json::parse(R"({"tokenizer": {"big": [1, 2, 3]}, "config": {"x": 1}})", &v, options).ok());
  ZCHECK(v.find("tokenizer") == nullptr);
  ZCHECK(v.find("config") != nullptr && v.find("config")->find("x")->as_int() == 1);
  // A malformed member that is not kept still fails the parse.
  ZCHECK(!zipmoe::json::parse(R"({"tokenizer": [1,], "config": {}})", &v, options).ok());
  ZCHECK(!zipmoe::json::parse(R"({"tokenizer": {"a":1, "a":2}, "config": {}})", &v, options).ok());
}

ZTEST(json_serialize_round_trips) {
  const std::string text =
      R"({"a":[1,-2.5,300.0,true,false,null,"x\n\"\u0001"],"b":{},"c":[],"d":1e-06,"e":10000.0,"f":-9223372036854775808})";
  Value v;
  ZCHECK(parses(text, &v));
  const std::string out = zipmoe::json::serialize(v);
  Value again;
  ZCHECK(parses(out, &again));
  ZCHECK_EQ(zipmoe::json::serialize(again), out);
  // Floats stay floats, integers stay integers.
  ZCHECK(again.find("e")->as_number() == 10000.0 && !again.find("e")->is_integer());
  ZCHECK(again.find("f")->is_integer() && again.find("f")->as_int() == INT64_MIN);
  ZCHECK(again.find("d")->as_number() == 1e-06);
  ZCHECK(again.find("a")->items()[6].as_string() == "x\n\"\x01");
}

ZTEST(json_random_garbage_and_mutations_never_crash) {
  std::mt19937 rng(1234);
  const std::string seed =
      R"({"architecture": "qwen2_moe", "config": {"hidden_size": 32, "rope_parameters": {"rope_theta": 1e4},)"
      R"( "layer_types": ["full_attention", "sliding_attention"], "eps": 1e-06, "name": "\u00e9\ud83d\ude00"}})";
  const char alphabet[] = "{}[]:,\"\\/-+.0123456789eEtrufalsn \n\x80\xC3\xFF";
  int accepted = 0;
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::string text = seed;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = rng() % (text.size() + 1);
      switch (rng() % 3) {
        case 0: text.insert(text.begin() + at, alphabet[rng() % (sizeof(alphabet) - 1)]); break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        default:
          if (at < text.size()) text[at] = static_cast<char>(rng());
      }
    }
    Value v;
    accepted += zipmoe::json::parse(text, &v).ok();
  }
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::string text(rng() % 64, '\0');
    for (char& c : text) c = alphabet[rng() % (sizeof(alphabet) - 1)];
    Value v;
    accepted += zipmoe::json::parse(text, &v).ok();
  }
  ZCHECK(accepted > 0);  // some mutations stay valid JSON
}
