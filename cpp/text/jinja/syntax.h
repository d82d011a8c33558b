// The syntax tree of a parsed template (internal to text/jinja).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/jinja/value.h"

namespace zipmoe::text::jinja {

enum class ExprKind : std::uint8_t {
  kLiteral,      // literal
  kName,         // name
  kList,         // operands: items
  kTuple,        // operands: items
  kDict,         // operands: key, value, key, value, ...
  kAttribute,    // operands[0].name
  kItem,         // operands[0][operands[1]]
  kSlice,        // operands[0][operands[1]:operands[2]:operands[3]] (null: omitted)
  kCall,         // operands[0](arguments)
  kFilter,       // operands[0] | name(arguments)
  kTest,         // operands[0] is [not] name(arguments)
  kNegate,       // -operands[0]
  kPlus,         // +operands[0]
  kNot,          // not operands[0]
  kBinary,       // operands[0] op operands[1]
  kAnd,          // operands[0] and operands[1]
  kOr,           // operands[0] or operands[1]
  kConcat,       // operands[0] ~ operands[1] ~ ...
  kCompare,      // operands[0] ops[0] operands[1] ops[1] operands[2] ...
  kConditional,  // operands[1] if operands[0] else operands[2] (null: undefined)
};

enum class Op : std::uint8_t {
  kAdd, kSubtract, kMultiply, kDivide, kFloorDivide, kModulo, kPower,
  kEqual, kNotEqual, kLess, kLessEqual, kGreater, kGreaterEqual, kIn, kNotIn,
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind;
  int line = 0;
  Value literal;
  std::string name;              // names, attributes, filters and tests
  std::vector<ExprPtr> operands;
  std::vector<Op> ops;
  // Calls, filters and tests: operands[0] is the callee or subject, then
  // `positional` arguments, then one value per name of `keywords`.
  std::size_t positional = 0;
  std::vector<std::string> keywords;
  bool negated = false;          // `is not`
};

enum class StmtKind : std::uint8_t {
  kText,       // text
  kOutput,     // {{ expr }}
  kIf,         // branches, otherwise
  kFor,        // for targets in expr [if condition]: body, otherwise
  kSet,        // set targets = expr
  kSetAttribute,  // set targets[0].targets[1] = expr
  kSetBlock,   // set targets[0] | filters: body
  kMacro,      // macro name(targets = defaults): body
  kBreak,
  kContinue,
  kScope,      // with targets = values: body (also {% generation %} with no targets)
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  std::vector<std::string> targets;
  bool unpack = false;                  // the targets are a tuple: `for a, b in ...`
  std::vector<ExprPtr> values;          // kMacro: defaults (null: none); kScope: values; kSetBlock: filters
  std::vector<std::pair<ExprPtr, Body>> branches;  // kIf
  ExprPtr condition;                    // kFor: `if` filter
  Body body;
  Body otherwise;                       // kIf else, kFor else
};

}  // namespace zipmoe::text::jinja
