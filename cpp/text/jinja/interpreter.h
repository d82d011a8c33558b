// The interpreter of text/jinja/template.h (internal to text/jinja): scopes,
// evaluation of the syntax tree, and what the builtins (builtins.h) need from it.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "text/jinja/syntax.h"
#include "text/jinja/template.h"
#include "text/jinja/value.h"

namespace zipmoe::text::jinja {

// The arguments of a call, filter or test.
struct CallArguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
};

// A parameter of a builtin for bind().
struct Parameter {
  const char* name;
  Value fallback;          // its default
  bool required = false;
};

// A scope: the variables set in a template, a loop iteration, a macro call.
struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<std::string, Value>> variables;
  const Value* find(std::string_view name) const;
  void set(const std::string& name, Value value);
};
using FramePtr = std::shared_ptr<Frame>;

class Interpreter {
 public:
  Status render(const Body& body, const std::vector<Variable>& variables, std::string* out);

  // A runtime error of the template: Status::InvalidArgument naming the line.
  Status error(const std::string& message) const;
  // Counts one step of work (InvalidArgument beyond kMaxSteps).
  Status step();
  // InvalidArgument when a string or list of `size` bytes or items would exceed the limits.
  Status check_size(std::size_t size) const;
  // InvalidArgument when a list or tuple of `count` items would exceed kMaxItems.
  Status check_items(std::size_t count) const;

  // Binds args to params (by position, then by name) into *values, as Python binds a call.
  Status bind(const CallArguments& args, const char* function, std::initializer_list<Parameter> params,
              std::vector<Value>* values) const;

  Status call(const Value& callee, CallArguments& args, Value* out);
  // The error of using an Undefined where a value is needed.
  Status undefined_error(const Value& value) const;

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  Status execute(const Body& body, const FramePtr& frame, std::string* out, Flow* flow);
  Status execute_statement(const Stmt& s, const FramePtr& frame, std::string* out, Flow* flow);
  Status execute_for(const Stmt& s, const FramePtr& frame, std::string* out);
  Status execute_set(const Stmt& s, const FramePtr& frame);
  Status execute_set_block(const Stmt& s, const FramePtr& frame);
  Status define_macro(const Stmt& s, const FramePtr& frame);
  Status call_macro(const Stmt& macro, const FramePtr& closure, CallArguments& args, Value* out);
  Status assign(const Stmt& s, const FramePtr& frame, const Value& value);

  Status evaluate(const Expr& e, const FramePtr& frame, Value* out);
  Status evaluate_arguments(const Expr& e, const FramePtr& frame, CallArguments* args);
  Status evaluate_binary(Op op, const Value& left, const Value& right, Value* out);
  Status evaluate_compare(const Expr& e, const FramePtr& frame, Value* out);
  Status evaluate_slice(const Expr& e, const FramePtr& frame, Value* out);
  Value lookup(const std::string& name, const FramePtr& frame) const;

  Status append(std::string* out, std::string_view text);

  FramePtr globals_;
  std::size_t steps_ = 0;
  std::size_t depth_ = 0;
  int line_ = 0;
};

}  // namespace zipmoe::text::jinja
