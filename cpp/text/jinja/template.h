// A small Jinja interpreter for chat templates (text/chat_template.h).
//
// Why our own: chat templates are Jinja programs, and the C API must render
// them without Python. No maintained C++ Jinja engine is packaged for the
// platforms zipmoe builds on, and zipmoe vendors no third-party code. Chat
// templates use a small part of Jinja, so this interpreter implements that
// part with jinja2's semantics (as configured by transformers: trim_blocks,
// lstrip_blocks, no autoescape, an immutable sandbox) and refuses the rest
// with a clear error. tests/python/test_capi_chat_template.py compares it with
// jinja2 and transformers on every shared template and many conversations.
//
// Implemented:
// - Syntax: {{ }}, {% %}, {# #} with the -/+ whitespace controls, trim_blocks
//   and lstrip_blocks, {% raw %}; a single trailing newline of the source is
//   dropped and \r\n / \r read as \n, as jinja2 does.
// - Statements: if/elif/else, for (tuple targets, `if` filter, else, loop.index,
//   index0, revindex, revindex0, first, last, length, previtem, nextitem,
//   depth, cycle()), break, continue, set (names, tuples, namespace attributes,
//   blocks with filters), macro (defaults, keyword arguments; called like a
//   function), with, generation (renders its body).
// - Expressions: literals (strings with Python escapes, ints, floats, lists,
//   tuples, dicts, true/false/none in either case), attribute and item access,
//   slices, calls with keyword arguments, filters, tests, + - * / // % ** ~,
//   comparisons (chained), in / not in, and / or / not, a if b else c.
// - Methods: str (startswith, endswith, split, rsplit, splitlines, strip,
//   lstrip, rstrip, lower, upper, title, capitalize, replace, find, rfind,
//   index, count, join, format, isdigit, isalpha, isalnum, isspace, islower,
//   isupper), dict (get, items, keys, values), list (index, count).
// - Filters: abs, attr, batch, capitalize, center, count, d/default, dictsort,
//   e/escape, first, float, forceescape, format, indent, int, items, join,
//   last, length, list, lower, map, max, min, reject, rejectattr, replace,
//   reverse, round, safe, select, selectattr, sort, string, sum, title,
//   tojson, trim, unique, upper, wordcount.
// - Tests: all of jinja2's (boolean, callable, defined, divisibleby, eq,
//   equalto, escaped, even, false, filter, float, ge, gt, greaterthan, in,
//   integer, iterable, le, lessthan, lower, lt, mapping, ne, none, number, odd,
//   sameas, sequence, string, test, true, undefined, upper and the operators).
// - Globals: range, dict, namespace, and what the caller adds.
//
// Not implemented (Status::Unsupported when a template uses them): include,
// import, extends, block, call blocks, filter blocks, autoescape, recursive
// loops, *args / **kwargs, and the filters filesizeformat, groupby, pprint,
// random, slice, striptags, truncate, urlencode, urlize, wordwrap, xmlattr.
// Known differences: integers are 64-bit (an overflow is an error, where
// Python's are unbounded); lower/upper/title/capitalize change only ASCII
// letters; range() gives a list and dict.items() a list of pairs (they print
// as such).
//
// Templates are untrusted. Nothing in a template reaches anything but its
// data; a render does at most kMaxSteps steps, nests macro calls kMaxDepth
// deep, builds strings of at most kMaxTextBytes and ranges of kMaxRange
// items (as jinja2's sandbox), and fails with Status::InvalidArgument
// beyond that, as it does for every error of the template at run time.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "text/jinja/syntax.h"
#include "text/jinja/value.h"

namespace zipmoe::text::jinja {

constexpr std::size_t kMaxSteps = 5'000'000;
constexpr std::size_t kMaxDepth = 200;
constexpr std::size_t kMaxTextBytes = 64u << 20;
constexpr std::size_t kMaxRange = 100'000;
// Items of a list or tuple built by + or * (memory, as kMaxTextBytes bounds strings').
constexpr std::size_t kMaxItems = 1'000'000;

// A variable the template sees: a value, or a function it can call.
struct Variable {
  std::string name;
  Value value;
};

class Template {
 public:
  // Status::Format for a syntax error ("line N: ..."), Status::Unsupported
  // for a feature this interpreter does not implement.
  static Status parse(std::string_view source, std::shared_ptr<const Template>* out);

  // Renders with `variables` (later ones win over earlier ones of the same name).
  Status render(const std::vector<Variable>& variables, std::string* out) const;

  const Body& body() const { return body_; }

 private:
  Body body_;
};

}  // namespace zipmoe::text::jinja
