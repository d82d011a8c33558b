// The interpreter of text/jinja/template.h: statements, expressions and the
// Python operators, with jinja2's scoping (a loop iteration, a macro call and
// a `with` block are scopes; `if` is not; a macro sees the scope it was
// defined in as it is when called).
#include <climits>
#include <cmath>

#include "text/jinja/builtins.h"
#include "text/jinja/interpreter.h"

namespace zipmoe::text::jinja {

namespace {

// Python's floor division and modulo of doubles (Objects/floatobject.c: float_divmod).
void float_divmod(double a, double b, double* quotient, double* remainder) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0) {
    if ((b < 0) != (mod < 0)) {
      mod += b;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, b);
  }
  double floordiv;
  if (div != 0.0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, a / b);
  }
  *quotient = floordiv;
  *remainder = mod;
}

bool integral(const Value& v) { return v.is_int() || v.is_bool(); }

// Python's slice indices for a sequence of `length` (PySlice_AdjustIndices).
void adjust_slice(std::int64_t length, std::int64_t* start, std::int64_t* stop, std::int64_t step, bool has_start,
                  bool has_stop) {
  if (!has_start) {
    *start = step < 0 ? length - 1 : 0;
  } else if (*start < 0) {
    *start += length;
    if (*start < 0) *start = step < 0 ? -1 : 0;
  } else if (*start >= length) {
    *start = step < 0 ? length - 1 : length;
  }
  if (!has_stop) {
    *stop = step < 0 ? -1 : length;
  } else if (*stop < 0) {
    *stop += length;
    if (*stop < 0) *stop = step < 0 ? -1 : 0;
  } else if (*stop >= length) {
    *stop = step < 0 ? length - 1 : length;
  }
}

}  // namespace

const Value* Frame::find(std::string_view name) const {
  for (const auto& [n, v] : variables) {
    if (n == name) return &v;
  }
  return nullptr;
}

void Frame::set(const std::string& name, Value value) {
  for (auto& variable : variables) {
    if (variable.first == name) {
      variable.second = std::move(value);
      return;
    }
  }
  variables.emplace_back(name, std::move(value));
}

Status Interpreter::render(const Body& body, const std::vector<Variable>& variables, std::string* out) {
  globals_ = std::make_shared<Frame>();
  for (Variable& v : standard_globals()) globals_->set(v.name, std::move(v.value));
  for (const Variable& v : variables) globals_->set(v.name, v.value);
  auto top = std::make_shared<Frame>();
  top->parent = globals_;
  out->clear();
  Flow flow = Flow::kNormal;
  const Status status = execute(body, top, out, &flow);
  // Macros capture their frames, and frames hold the macros: break the cycles.
  top->variables.clear();
  globals_.reset();
  return status;
}

Status Interpreter::error(const std::string& message) const {
  return Status::InvalidArgument("line " + std::to_string(line_) + ": " + message);
}

Status Interpreter::step() {
  if (++steps_ > kMaxSteps) {
    return error("the template did more than " + std::to_string(kMaxSteps) + " steps of work; stopped");
  }
  return Status::Ok();
}

Status Interpreter::check_items(std::size_t count) const {
  if (count > kMaxItems) {
    return error("a list of the template would exceed " + std::to_string(kMaxItems) + " items; stopped");
  }
  return Status::Ok();
}

Status Interpreter::check_size(std::size_t size) const {
  if (size > kMaxTextBytes) {
    return error("a value of the template would exceed " + std::to_string(kMaxTextBytes >> 20) + " MiB; stopped");
  }
  return Status::Ok();
}

Status Interpreter::undefined_error(const Value& value) const {
  const std::string& hint = value.undefined_hint();
  return error(hint.empty() ? std::string("a value is undefined") : hint);
}

Status Interpreter::bind(const CallArguments& args, const char* function, std::initializer_list<Parameter> params,
                         std::vector<Value>* values) const {
  const std::size_t n = params.size();
  if (args.positional.size() > n) {
    return error(std::string(function) + "() takes at most " + std::to_string(n) + " argument(s) (" +
                 std::to_string(args.positional.size()) + " given)");
  }
  values->assign(n, Value());
  std::vector<bool> bound(n, false);
  for (std::size_t i = 0; i < args.positional.size(); ++i) {
    (*values)[i] = args.positional[i];
    bound[i] = true;
  }
  for (const auto& [name, value] : args.keywords) {
    std::size_t i = 0;
    for (const Parameter& p : params) {
      if (name == p.name) break;
      ++i;
    }
    if (i == n) return error(std::string(function) + "() got an unexpected keyword argument '" + name + "'");
    if (bound[i]) return error(std::string(function) + "() got multiple values for argument '" + name + "'");
    (*values)[i] = value;
    bound[i] = true;
  }
  std::size_t i = 0;
  for (const Parameter& p : params) {
    if (!bound[i]) {
      if (p.required) return error(std::string(function) + "() missing required argument '" + p.name + "'");
      (*values)[i] = p.fallback;
    }
    ++i;
  }
  return Status::Ok();
}

Status Interpreter::append(std::string* out, std::string_view text) {
  ZIPMOE_RETURN_IF_ERROR(check_size(out->size() + text.size()));
  out->append(text);
  return Status::Ok();
}

Value Interpreter::lookup(const std::string& name, const FramePtr& frame) const {
  for (const Frame* f = frame.get(); f; f = f->parent.get()) {
    if (const Value* v = f->find(name)) return *v;
  }
  return Value::undefined("'" + name + "' is undefined");
}

// ---- statements ------------------------------------------------------------

Status Interpreter::execute(const Body& body, const FramePtr& frame, std::string* out, Flow* flow) {
  for (const StmtPtr& s : body) {
    ZIPMOE_RETURN_IF_ERROR(step());
    line_ = s->line;
    ZIPMOE_RETURN_IF_ERROR(execute_statement(*s, frame, out, flow));
    if (*flow != Flow::kNormal) return Status::Ok();
  }
  return Status::Ok();
}

Status Interpreter::execute_statement(const Stmt& s, const FramePtr& frame, std::string* out, Flow* flow) {
  switch (s.kind) {
    case StmtKind::kText:
      return append(out, s.text);
    case StmtKind::kOutput: {
      Value v;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*s.expr, frame, &v));
      return append(out, v.str());
    }
    case StmtKind::kIf:
      for (const auto& [condition, body] : s.branches) {
        Value v;
        ZIPMOE_RETURN_IF_ERROR(evaluate(*condition, frame, &v));
        if (v.truthy()) return execute(body, frame, out, flow);
      }
      return execute(s.otherwise, frame, out, flow);
    case StmtKind::kFor:
      return execute_for(s, frame, out);
    case StmtKind::kSet:
      return execute_set(s, frame);
    case StmtKind::kSetAttribute: {
      Value target = lookup(s.targets[0], frame);
      if (!target.is_object() || !target.object().assignable) {
        return error("cannot assign attribute on non-namespace object ('" + s.targets[0] + "' is " +
                     target.type_name() + ")");
      }
      if (!s.targets[1].empty() && s.targets[1][0] == '_') {
        return error("a chat template cannot set the namespace attribute '" + s.targets[1] +
                     "' (underscore names are refused)");
      }
      Value v;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*s.expr, frame, &v));
      target.object().set(s.targets[1], std::move(v));
      return Status::Ok();
    }
    case StmtKind::kSetBlock:
      return execute_set_block(s, frame);
    case StmtKind::kMacro:
      return define_macro(s, frame);
    case StmtKind::kBreak:
      *flow = Flow::kBreak;
      return Status::Ok();
    case StmtKind::kContinue:
      *flow = Flow::kContinue;
      return Status::Ok();
    case StmtKind::kScope: {
      auto scope = std::make_shared<Frame>();
      scope->parent = frame;
      for (std::size_t i = 0; i < s.targets.size(); ++i) {
        Value v;
        ZIPMOE_RETURN_IF_ERROR(evaluate(*s.values[i], frame, &v));
        scope->set(s.targets[i], std::move(v));
      }
      return execute(s.body, scope, out, flow);
    }
  }
  return error("unknown statement");
}

Status Interpreter::assign(const Stmt& s, const FramePtr& frame, const Value& value) {
  if (!s.unpack) {
    frame->set(s.targets[0], value);
    return Status::Ok();
  }
  if (!value.is_sequence() && !value.is_string() && !value.is_dict()) {
    return error(std::string("cannot unpack non-iterable ") + value.type_name() + " object");
  }
  ValueList items;
  ZIPMOE_RETURN_IF_ERROR(iterate(*this, value, &items));
  if (items.size() != s.targets.size()) {
    return error(items.size() < s.targets.size()
                     ? "not enough values to unpack (expected " + std::to_string(s.targets.size()) + ", got " +
                           std::to_string(items.size()) + ")"
                     : "too many values to unpack (expected " + std::to_string(s.targets.size()) + ")");
  }
  for (std::size_t i = 0; i < items.size(); ++i) frame->set(s.targets[i], items[i]);
  return Status::Ok();
}

Status Interpreter::execute_set(const Stmt& s, const FramePtr& frame) {
  Value v;
  ZIPMOE_RETURN_IF_ERROR(evaluate(*s.expr, frame, &v));
  return assign(s, frame, v);
}

Status Interpreter::execute_set_block(const Stmt& s, const FramePtr& frame) {
  auto scope = std::make_shared<Frame>();
  scope->parent = frame;
  std::string text;
  Flow flow = Flow::kNormal;
  ZIPMOE_RETURN_IF_ERROR(execute(s.body, scope, &text, &flow));
  Value v = Value::string(std::move(text));
  for (const ExprPtr& filter : s.values) {
    CallArguments args;
    ZIPMOE_RETURN_IF_ERROR(evaluate_arguments(*filter, frame, &args));
    Value next;
    ZIPMOE_RETURN_IF_ERROR(apply_filter(*this, filter->name, v, args, &next));
    v = std::move(next);
  }
  frame->set(s.targets[0], std::move(v));
  return Status::Ok();
}

Status Interpreter::execute_for(const Stmt& s, const FramePtr& frame, std::string* out) {
  Value iterable;
  ZIPMOE_RETURN_IF_ERROR(evaluate(*s.expr, frame, &iterable));
  ValueList items;
  ZIPMOE_RETURN_IF_ERROR(iterate(*this, iterable, &items));
  if (s.condition) {
    ValueList kept;
    for (const Value& item : items) {
      ZIPMOE_RETURN_IF_ERROR(step());
      auto scope = std::make_shared<Frame>();
      scope->parent = frame;
      ZIPMOE_RETURN_IF_ERROR(assign(s, scope, item));
      Value keep;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*s.condition, scope, &keep));
      if (keep.truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  const auto n = static_cast<std::int64_t>(items.size());
  for (std::int64_t i = 0; i < n; ++i) {
    // Each iteration is work, whatever its body: an empty loop in a loop must hit the limit too.
    ZIPMOE_RETURN_IF_ERROR(step());
    auto scope = std::make_shared<Frame>();
    scope->parent = frame;
    ZIPMOE_RETURN_IF_ERROR(assign(s, scope, items[static_cast<std::size_t>(i)]));
    auto loop = std::make_shared<Object>();
    loop->type_name = "LoopContext";
    loop->attributes = {
        {"index", Value::integer(i + 1)},
        {"index0", Value::integer(i)},
        {"revindex", Value::integer(n - i)},
        {"revindex0", Value::integer(n - i - 1)},
        {"first", Value::boolean(i == 0)},
        {"last", Value::boolean(i == n - 1)},
        {"length", Value::integer(n)},
        {"depth", Value::integer(1)},
        {"depth0", Value::integer(0)},
        {"previtem", i > 0 ? items[static_cast<std::size_t>(i - 1)] : Value::undefined("there is no previous item")},
        {"nextitem", i + 1 < n ? items[static_cast<std::size_t>(i + 1)] : Value::undefined("there is no next item")},
        {"cycle", Value::callable("loop.cycle", [i](Interpreter& in, CallArguments& args, Value* result) {
           if (args.positional.empty()) return in.error("loop.cycle() needs at least one argument");
           *result = args.positional[static_cast<std::size_t>(i) % args.positional.size()];
           return Status::Ok();
         })},
    };
    scope->set("loop", Value::object(std::move(loop)));
    Flow flow = Flow::kNormal;
    ZIPMOE_RETURN_IF_ERROR(execute(s.body, scope, out, &flow));
    if (flow == Flow::kBreak) break;
  }
  if (n == 0 && !s.otherwise.empty()) {
    auto scope = std::make_shared<Frame>();
    scope->parent = frame;
    Flow flow = Flow::kNormal;
    ZIPMOE_RETURN_IF_ERROR(execute(s.otherwise, scope, out, &flow));
  }
  return Status::Ok();
}

Status Interpreter::define_macro(const Stmt& s, const FramePtr& frame) {
  const Stmt* macro = &s;
  // The macro holds its frame weakly: the frame holds the macro, and
  // render() clears the frames when it ends.
  std::weak_ptr<Frame> closure = frame;
  frame->set(s.text, Value::callable(s.text, [macro, closure](Interpreter& in, CallArguments& args, Value* out) {
    FramePtr frame = closure.lock();
    if (!frame) return in.error("macro '" + macro->text + "' called after its template ended");
    return in.call_macro(*macro, frame, args, out);
  }));
  return Status::Ok();
}

Status Interpreter::call_macro(const Stmt& macro, const FramePtr& closure, CallArguments& args, Value* out) {
  const std::size_t n = macro.targets.size();
  if (args.positional.size() > n) {
    return error("macro '" + macro.text + "' takes not more than " + std::to_string(n) + " argument(s)");
  }
  if (depth_ >= kMaxDepth) return error("macro calls nested deeper than " + std::to_string(kMaxDepth));
  auto frame = std::make_shared<Frame>();
  frame->parent = closure;
  std::vector<bool> bound(n, false);
  for (std::size_t i = 0; i < args.positional.size(); ++i) {
    frame->set(macro.targets[i], args.positional[i]);
    bound[i] = true;
  }
  for (const auto& [name, value] : args.keywords) {
    std::size_t i = 0;
    while (i < n && macro.targets[i] != name) ++i;
    if (i == n) return error("macro '" + macro.text + "' takes no keyword argument '" + name + "'");
    if (bound[i]) return error("macro '" + macro.text + "' got multiple values for argument '" + name + "'");
    frame->set(name, value);
    bound[i] = true;
  }
  const int line = line_;
  for (std::size_t i = 0; i < n; ++i) {
    if (bound[i]) continue;
    Value v = Value::undefined("parameter '" + macro.targets[i] + "' was not provided");
    if (macro.values[i]) ZIPMOE_RETURN_IF_ERROR(evaluate(*macro.values[i], frame, &v));
    frame->set(macro.targets[i], std::move(v));
  }
  ++depth_;
  std::string text;
  Flow flow = Flow::kNormal;
  const Status status = execute(macro.body, frame, &text, &flow);
  --depth_;
  line_ = line;
  ZIPMOE_RETURN_IF_ERROR(status);
  *out = Value::string(std::move(text));
  return Status::Ok();
}

Status Interpreter::call(const Value& callee, CallArguments& args, Value* out) {
  if (callee.is_undefined()) return undefined_error(callee);
  if (!callee.is_callable()) return error(std::string("'") + callee.type_name() + "' object is not callable");
  return callee.callable().call(*this, args, out);
}

// ---- expressions -------------------------------------------------------------

Status Interpreter::evaluate_arguments(const Expr& e, const FramePtr& frame, CallArguments* args) {
  for (std::size_t i = 0; i < e.positional; ++i) {
    Value v;
    ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[1 + i], frame, &v));
    args->positional.push_back(std::move(v));
  }
  for (std::size_t k = 0; k < e.keywords.size(); ++k) {
    Value v;
    ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[1 + e.positional + k], frame, &v));
    args->keywords.emplace_back(e.keywords[k], std::move(v));
  }
  return Status::Ok();
}

Status Interpreter::evaluate(const Expr& e, const FramePtr& frame, Value* out) {
  ZIPMOE_RETURN_IF_ERROR(step());
  switch (e.kind) {
    case ExprKind::kLiteral:
      *out = e.literal;
      return Status::Ok();
    case ExprKind::kName:
      *out = lookup(e.name, frame);
      return Status::Ok();
    case ExprKind::kList:
    case ExprKind::kTuple: {
      ValueList items(e.operands.size());
      for (std::size_t i = 0; i < items.size(); ++i) ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[i], frame, &items[i]));
      *out = e.kind == ExprKind::kList ? Value::list(std::move(items)) : Value::tuple(std::move(items));
      return Status::Ok();
    }
    case ExprKind::kDict: {
      auto dict = std::make_shared<Dict>();
      for (std::size_t i = 0; i + 1 < e.operands.size(); i += 2) {
        Value key, value;
        ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[i], frame, &key));
        ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[i + 1], frame, &value));
        if (key.kind() == Kind::kList || key.kind() == Kind::kDict || key.is_undefined() || key.is_object()) {
          return error(std::string("unhashable type: '") + key.type_name() + "'");
        }
        dict->set(std::move(key), std::move(value));
      }
      *out = Value::dict(std::move(dict));
      return Status::Ok();
    }
    case ExprKind::kAttribute: {
      Value object;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &object));
      if (object.is_undefined()) return undefined_error(object);
      return get_attribute(*this, object, e.name, out);
    }
    case ExprKind::kItem: {
      Value object, key;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &object));
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[1], frame, &key));
      if (object.is_undefined()) return undefined_error(object);
      return get_item(*this, object, key, out);
    }
    case ExprKind::kSlice:
      return evaluate_slice(e, frame, out);
    case ExprKind::kCall: {
      Value callee;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &callee));
      CallArguments args;
      ZIPMOE_RETURN_IF_ERROR(evaluate_arguments(e, frame, &args));
      return call(callee, args, out);
    }
    case ExprKind::kFilter: {
      Value subject;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &subject));
      CallArguments args;
      ZIPMOE_RETURN_IF_ERROR(evaluate_arguments(e, frame, &args));
      return apply_filter(*this, e.name, subject, args, out);
    }
    case ExprKind::kTest: {
      Value subject;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &subject));
      CallArguments args;
      ZIPMOE_RETURN_IF_ERROR(evaluate_arguments(e, frame, &args));
      bool result = false;
      ZIPMOE_RETURN_IF_ERROR(apply_test(*this, e.name, subject, args, &result));
      *out = Value::boolean(result != e.negated);
      return Status::Ok();
    }
    case ExprKind::kNegate:
    case ExprKind::kPlus: {
      Value v;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &v));
      if (v.is_undefined()) return undefined_error(v);
      const bool negate = e.kind == ExprKind::kNegate;
      if (integral(v)) {
        if (negate && v.as_int() == INT64_MIN) return error("integer overflow (zipmoe's templates use 64-bit integers)");
        *out = Value::integer(negate ? -v.as_int() : v.as_int());
      } else if (v.is_float()) {
        *out = Value::number(negate ? -v.as_double() : v.as_double());
      } else {
        return error(std::string("bad operand type for unary ") + (negate ? "-" : "+") + ": '" + v.type_name() + "'");
      }
      return Status::Ok();
    }
    case ExprKind::kNot: {
      Value v;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &v));
      *out = Value::boolean(!v.truthy());
      return Status::Ok();
    }
    case ExprKind::kBinary: {
      Value left, right;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &left));
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[1], frame, &right));
      return evaluate_binary(e.ops[0], left, right, out);
    }
    case ExprKind::kAnd:
    case ExprKind::kOr: {
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, out));
      if (out->truthy() == (e.kind == ExprKind::kOr)) return Status::Ok();
      return evaluate(*e.operands[1], frame, out);
    }
    case ExprKind::kConcat: {
      std::string text;
      for (const ExprPtr& operand : e.operands) {
        Value v;
        ZIPMOE_RETURN_IF_ERROR(evaluate(*operand, frame, &v));
        const std::string part = v.str();
        ZIPMOE_RETURN_IF_ERROR(check_size(text.size() + part.size()));
        text += part;
      }
      *out = Value::string(std::move(text));
      return Status::Ok();
    }
    case ExprKind::kCompare:
      return evaluate_compare(e, frame, out);
    case ExprKind::kConditional: {
      Value condition;
      ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &condition));
      if (condition.truthy()) return evaluate(*e.operands[1], frame, out);
      if (e.operands[2]) return evaluate(*e.operands[2], frame, out);
      *out = Value::undefined("the conditional expression has no else branch");
      return Status::Ok();
    }
  }
  return error("unknown expression");
}

Status Interpreter::evaluate_slice(const Expr& e, const FramePtr& frame, Value* out) {
  Value subject;
  ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &subject));
  if (subject.is_undefined()) return undefined_error(subject);
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (e.operands[1 + i]) ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[1 + i], frame, &parts[i]));
  }
  bool given[3];
  std::int64_t index[3] = {0, 0, 1};
  for (int i = 0; i < 3; ++i) {
    given[i] = e.operands[1 + i] && !parts[i].is_none();
    if (given[i] && !integral(parts[i])) {
      *out = Value::undefined("slice indices must be integers");
      return Status::Ok();
    }
    if (given[i]) index[i] = parts[i].as_int();
  }
  if (index[2] == 0) return error("slice step cannot be zero");
  if (!subject.is_string() && !subject.is_sequence()) {
    *out = Value::undefined(std::string("'") + subject.type_name() + "' object is not subscriptable");
    return Status::Ok();
  }
  std::vector<std::size_t> offsets;
  std::int64_t length;
  if (subject.is_string()) {
    offsets = code_point_offsets(subject.as_string());
    length = static_cast<std::int64_t>(offsets.size() - 1);
  } else {
    length = static_cast<std::int64_t>(subject.items().size());
  }
  std::int64_t start = index[0], stop = index[1];
  const std::int64_t step = index[2];
  adjust_slice(length, &start, &stop, step, given[0], given[1]);
  std::vector<std::int64_t> picked;
  for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picked.push_back(i);
  if (subject.is_string()) {
    std::string text;
    const std::string& s = subject.as_string();
    for (const std::int64_t i : picked) {
      const auto k = static_cast<std::size_t>(i);
      text.append(s, offsets[k], offsets[k + 1] - offsets[k]);
    }
    *out = Value::string(std::move(text));
  } else {
    ValueList items;
    for (const std::int64_t i : picked) items.push_back(subject.items()[static_cast<std::size_t>(i)]);
    *out = subject.kind() == Kind::kTuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
  }
  return Status::Ok();
}

Status Interpreter::evaluate_compare(const Expr& e, const FramePtr& frame, Value* out) {
  Value left;
  ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[0], frame, &left));
  for (std::size_t i = 0; i < e.ops.size(); ++i) {
    Value right;
    ZIPMOE_RETURN_IF_ERROR(evaluate(*e.operands[i + 1], frame, &right));
    bool result = false;
    switch (e.ops[i]) {
      case Op::kEqual:
        result = left.equals(right);
        break;
      case Op::kNotEqual:
        result = !left.equals(right);
        break;
      case Op::kLess:
        ZIPMOE_RETURN_IF_ERROR(less_than(*this, left, right, &result));
        break;
      case Op::kGreater:
        ZIPMOE_RETURN_IF_ERROR(less_than(*this, right, left, &result));
        break;
      case Op::kLessEqual:
        ZIPMOE_RETURN_IF_ERROR(less_than(*this, right, left, &result));
        result = !result;
        break;
      case Op::kGreaterEqual:
        ZIPMOE_RETURN_IF_ERROR(less_than(*this, left, right, &result));
        result = !result;
        break;
      case Op::kIn:
      case Op::kNotIn: {
        CallArguments args;
        args.positional.push_back(right);
        ZIPMOE_RETURN_IF_ERROR(apply_test(*this, "in", left, args, &result));
        if (e.ops[i] == Op::kNotIn) result = !result;
        break;
      }
      default:
        return error("unknown comparison");
    }
    if (!result) {
      *out = Value::boolean(false);
      return Status::Ok();
    }
    left = std::move(right);
  }
  *out = Value::boolean(true);
  return Status::Ok();
}

Status Interpreter::evaluate_binary(Op op, const Value& left, const Value& right, Value* out) {
  if (left.is_undefined()) return undefined_error(left);
  if (right.is_undefined()) return undefined_error(right);
  static const char* const kSymbols[] = {"+", "-", "*", "/", "//", "%", "**"};
  const char* symbol = kSymbols[static_cast<int>(op)];
  auto unsupported = [&]() {
    return error(std::string("unsupported operand type(s) for ") + symbol + ": '" + left.type_name() + "' and '" +
                 right.type_name() + "'");
  };
  auto overflow = [&]() { return error("integer overflow (zipmoe's templates use 64-bit integers)"); };
  const bool numbers = left.is_number() && right.is_number();
  const bool ints = integral(left) && integral(right);
  switch (op) {
    case Op::kAdd:
      if (ints) {
        std::int64_t r;
        if (__builtin_add_overflow(left.as_int(), right.as_int(), &r)) return overflow();
        *out = Value::integer(r);
      } else if (numbers) {
        *out = Value::number(left.as_double() + right.as_double());
      } else if (left.is_string() && right.is_string()) {
        ZIPMOE_RETURN_IF_ERROR(check_size(left.as_string().size() + right.as_string().size()));
        *out = Value::string(left.as_string() + right.as_string());
      } else if (left.is_sequence() && left.kind() == right.kind()) {
        ZIPMOE_RETURN_IF_ERROR(check_items(left.items().size() + right.items().size()));
        ValueList items = left.items();
        items.insert(items.end(), right.items().begin(), right.items().end());
        *out = left.kind() == Kind::kTuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
      } else if (left.is_string()) {
        return error(std::string("can only concatenate str (not \"") + right.type_name() + "\") to str");
      } else {
        return unsupported();
      }
      return Status::Ok();
    case Op::kSubtract:
      if (ints) {
        std::int64_t r;
        if (__builtin_sub_overflow(left.as_int(), right.as_int(), &r)) return overflow();
        *out = Value::integer(r);
      } else if (numbers) {
        *out = Value::number(left.as_double() - right.as_double());
      } else {
        return unsupported();
      }
      return Status::Ok();
    case Op::kMultiply: {
      if (ints) {
        std::int64_t r;
        if (__builtin_mul_overflow(left.as_int(), right.as_int(), &r)) return overflow();
        *out = Value::integer(r);
        return Status::Ok();
      }
      if (numbers) {
        *out = Value::number(left.as_double() * right.as_double());
        return Status::Ok();
      }
      const Value* repeated = integral(right) ? &left : integral(left) ? &right : nullptr;
      const Value* count = repeated == &left ? &right : &left;
      if (!repeated || !(repeated->is_string() || repeated->is_sequence())) return unsupported();
      // An empty operand gives an empty result at once, however large the count.
      const bool empty = repeated->is_string() ? repeated->as_string().empty() : repeated->items().empty();
      const std::int64_t n = empty ? 0 : std::max<std::int64_t>(0, count->as_int());
      if (repeated->is_string()) {
        const std::string& s = repeated->as_string();
        if (n > 0 && s.size() > kMaxTextBytes / static_cast<std::size_t>(n)) return check_size(kMaxTextBytes + 1);
        std::string text;
        for (std::int64_t i = 0; i < n; ++i) text += s;
        *out = Value::string(std::move(text));
      } else {
        const ValueList& items = repeated->items();
        if (n > 0 && items.size() > kMaxItems / static_cast<std::size_t>(n)) return check_items(kMaxItems + 1);
        ValueList result;
        for (std::int64_t i = 0; i < n; ++i) result.insert(result.end(), items.begin(), items.end());
        *out = repeated->kind() == Kind::kTuple ? Value::tuple(std::move(result)) : Value::list(std::move(result));
      }
      return Status::Ok();
    }
    case Op::kDivide:
      if (!numbers) return unsupported();
      if (right.as_double() == 0.0) return error("division by zero");
      *out = Value::number(left.as_double() / right.as_double());
      return Status::Ok();
    case Op::kFloorDivide:
    case Op::kModulo: {
      if (op == Op::kModulo && left.is_string()) {
        CallArguments args;
        if (right.kind() == Kind::kTuple) {
          args.positional = right.items();
        } else {
          args.positional.push_back(right);
        }
        return apply_filter(*this, "format", left, args, out);
      }
      if (!numbers) return unsupported();
      if (right.as_double() == 0.0) return error(op == Op::kModulo ? "modulo by zero" : "division by zero");
      if (ints) {
        const std::int64_t a = left.as_int(), b = right.as_int();
        if (a == INT64_MIN && b == -1) return overflow();
        std::int64_t q = a / b, r = a % b;
        if (r != 0 && ((r < 0) != (b < 0))) {
          --q;
          r += b;
        }
        *out = Value::integer(op == Op::kModulo ? r : q);
      } else {
        double q, r;
        float_divmod(left.as_double(), right.as_double(), &q, &r);
        *out = Value::number(op == Op::kModulo ? r : q);
      }
      return Status::Ok();
    }
    case Op::kPower: {
      if (!numbers) return unsupported();
      if (ints && right.as_int() >= 0) {
        // by squaring; an overflow of the base with bits left to use is an overflow of the result
        std::int64_t result = 1, base = left.as_int();
        for (std::int64_t e = right.as_int(); e > 0; e >>= 1) {
          if ((e & 1) && __builtin_mul_overflow(result, base, &result)) return overflow();
          if (e > 1 && __builtin_mul_overflow(base, base, &base)) return overflow();
        }
        *out = Value::integer(result);
        return Status::Ok();
      }
      if (left.as_double() == 0.0 && right.as_double() < 0) {
        return error("0.0 cannot be raised to a negative power");
      }
      *out = Value::number(std::pow(left.as_double(), right.as_double()));
      return Status::Ok();
    }
    default:
      return unsupported();
  }
}

Status Template::render(const std::vector<Variable>& variables, std::string* out) const {
  Interpreter interpreter;
  return interpreter.render(body_, variables, out);
}

}  // namespace zipmoe::text::jinja
