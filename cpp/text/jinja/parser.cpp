// The lexer and parser of text/jinja/template.h: jinja2's lexer rules (with
// trim_blocks and lstrip_blocks) and its grammar, into the tree of syntax.h.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

#include "text/jinja/builtins.h"
#include "text/jinja/template.h"
#include "text/unicode.h"

namespace zipmoe::text::jinja {

namespace {

enum class TokenType : std::uint8_t {
  kText, kVariableBegin, kVariableEnd, kBlockBegin, kBlockEnd, kName, kString, kInteger, kFloat, kOperator, kEnd,
};

struct Token {
  TokenType type;
  std::string text;  // text, name, operator; the decoded value of a string
  Value value;       // integers and floats
  int line;
};

constexpr std::size_t kMaxNesting = 128;

// Python's str.isspace() over the UTF-8 character at text[i]; *length its bytes.
bool space_at(std::string_view text, std::size_t i, std::size_t* length) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  *length = 1;
  if (c < 0x80) return is_python_space(c);
  std::vector<std::uint32_t> units;
  const std::size_t n = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : 2;
  decode_utf8(text.substr(i, n), &units, nullptr);
  if (units.empty() || units[0] >= kInvalidByteBase) return false;
  *length = n;
  return is_python_space(units[0]);
}

// The length of the whitespace run at text[i].
std::size_t space_run(std::string_view text, std::size_t i) {
  std::size_t start = i, length = 0;
  while (i < text.size() && space_at(text, i, &length)) i += length;
  return i - start;
}

// text without its trailing whitespace (Python's rstrip()).
std::string_view rstrip(std::string_view text) {
  const std::vector<std::size_t> offsets = code_point_offsets(text);
  std::size_t end = offsets.size() - 1;
  while (end > 0) {
    std::size_t length = 0;
    if (!space_at(text, offsets[end - 1], &length)) break;
    --end;
  }
  return text.substr(0, offsets[end]);
}

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  explicit Lexer(std::string source) : source_(std::move(source)) {}

  Status run(std::vector<Token>* tokens) {
    tokens_ = tokens;
    while (pos_ < source_.size()) {
      const std::size_t tag = next_tag(pos_);
      if (tag == std::string::npos) {
        emit_text(source_.substr(pos_));
        break;
      }
      ZIPMOE_RETURN_IF_ERROR(tag_at(tag));
    }
    tokens_->push_back(Token{TokenType::kEnd, "", Value(), line_});
    return Status::Ok();
  }

 private:
  Status error(const std::string& message) const {
    return Status::Format("line " + std::to_string(line_) + ": " + message);
  }

  std::size_t next_tag(std::size_t from) const {
    for (std::size_t i = source_.find('{', from); i != std::string::npos; i = source_.find('{', i + 1)) {
      if (i + 1 < source_.size() && (source_[i + 1] == '{' || source_[i + 1] == '%' || source_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  void emit_text(std::string text) {
    if (!text.empty()) tokens_->push_back(Token{TokenType::kText, text, Value(), line_});
  }

  void count_lines(std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) line_ += source_[i] == '\n';
  }

  // The text before a tag, with the tag's whitespace control applied.
  std::string text_before(std::size_t tag, char sign, bool lstrip_applies) const {
    std::string_view text(source_.data() + pos_, tag - pos_);
    if (sign == '-') return std::string(rstrip(text));
    if (sign != '+' && lstrip_applies) {
      const std::size_t newline = text.rfind('\n');
      const std::size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
      if ((line_start > 0 || line_starting_) && line_start < text.size() &&
          space_run(text, line_start) == text.size() - line_start) {
        return std::string(text.substr(0, line_start));
      }
    }
    return std::string(text);
  }

  // Is there `{%[-+]?\s*raw\s*(-%}\s*|%})` at i? *end is after it, *sign the begin sign.
  bool raw_begin(std::size_t i, std::size_t* end, bool* strip_after) const {
    std::size_t p = i + 2;
    if (p < source_.size() && (source_[p] == '-' || source_[p] == '+')) ++p;
    p += space_run(source_, p);
    if (source_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    if (p < source_.size() && is_name_char(source_[p])) return false;
    p += space_run(source_, p);
    *strip_after = false;
    if (source_.compare(p, 3, "-%}") == 0) {
      *strip_after = true;
      *end = p + 3;
      return true;
    }
    if (source_.compare(p, 2, "%}") == 0) {
      *end = p + 2;
      return true;
    }
    return false;
  }

  // Consumes the end of a block or comment tag at p ("-%}", "+%}", "%}" and
  // the same with #); returns the position after it (and what trim_blocks takes).
  std::size_t after_block_end(std::size_t p, char sign) {
    if (sign == '-') return p + space_run(source_, p);
    if (sign == '+') return p;
    return p < source_.size() && source_[p] == '\n' ? p + 1 : p;
  }

  Status tag_at(std::size_t tag) {
    const char type = source_[tag + 1];
    char sign = tag + 2 < source_.size() ? source_[tag + 2] : '\0';
    if (sign != '-' && sign != '+') sign = '\0';
    std::size_t raw_end = 0;
    bool raw_strip = false;
    if (type == '%' && raw_begin(tag, &raw_end, &raw_strip)) {
      emit_text(text_before(tag, sign, true));
      count_lines(pos_, raw_end);
      std::size_t content = raw_end;
      if (raw_strip) content += space_run(source_, content);
      return raw_body(content);
    }
    emit_text(text_before(tag, sign, type != '{'));
    count_lines(pos_, tag);
    std::size_t p = tag + 2 + (sign ? 1 : 0);
    if (type == '#') return comment(p);
    tokens_->push_back(Token{type == '{' ? TokenType::kVariableBegin : TokenType::kBlockBegin, "", Value(), line_});
    return inside_tag(p, type == '{');
  }

  Status comment(std::size_t p) {
    const std::size_t start = p;
    for (std::size_t c = source_.find("#}", p); c != std::string::npos; c = source_.find("#}", c + 1)) {
      char sign = '\0';
      if (c > start && (source_[c - 1] == '-' || source_[c - 1] == '+')) sign = source_[c - 1];
      const std::size_t end = after_block_end(c + 2, sign);
      count_lines(start, end);
      line_starting_ = end > 0 && source_[end - 1] == '\n';
      pos_ = end;
      return Status::Ok();
    }
    return error("missing end of comment tag");
  }

  Status raw_body(std::size_t content) {
    for (std::size_t i = source_.find("{%", content); i != std::string::npos; i = source_.find("{%", i + 1)) {
      std::size_t p = i + 2;
      char sign = '\0';
      if (p < source_.size() && (source_[p] == '-' || source_[p] == '+')) sign = source_[p++];
      p += space_run(source_, p);
      if (source_.compare(p, 6, "endraw") != 0) continue;
      p += 6;
      p += space_run(source_, p);
      char end_sign = '\0';
      if (p < source_.size() && (source_[p] == '-' || source_[p] == '+')) end_sign = source_[p++];
      if (source_.compare(p, 2, "%}") != 0) continue;
      pos_ = content;
      line_starting_ = false;
      emit_text(text_before(i, sign, true));
      const std::size_t end = after_block_end(p + 2, end_sign);
      count_lines(content, end);
      line_starting_ = end > 0 && source_[end - 1] == '\n';
      pos_ = end;
      return Status::Ok();
    }
    return error("missing end of raw directive");
  }

  Status inside_tag(std::size_t p, bool variable) {
    std::vector<char> balance;
    const char* close = variable ? "}}" : "%}";
    for (;;) {
      const std::size_t space = space_run(source_, p);
      count_lines(p, p + space);
      p += space;
      if (p >= source_.size()) return error("unexpected end of template (a tag is not closed)");
      if (balance.empty()) {
        char sign = '\0';
        std::size_t q = p;
        if (source_[q] == '-' || source_[q] == '+') sign = source_[q++];
        if (source_.compare(q, 2, close) == 0 && !(variable && sign == '+')) {
          std::size_t end = q + 2;
          if (variable) {
            if (sign == '-') end += space_run(source_, end);
          } else {
            end = after_block_end(end, sign);
          }
          tokens_->push_back(
              Token{variable ? TokenType::kVariableEnd : TokenType::kBlockEnd, "", Value(), line_});
          count_lines(p, end);
          line_starting_ = end > 0 && source_[end - 1] == '\n';
          pos_ = end;
          return Status::Ok();
        }
      }
      ZIPMOE_RETURN_IF_ERROR(token_at(&p, &balance));
    }
  }

  Status token_at(std::size_t* position, std::vector<char>* balance) {
    std::size_t p = *position;
    const char c = source_[p];
    if (std::isdigit(static_cast<unsigned char>(c))) return number_at(position);
    if (is_name_start(c)) {
      std::size_t e = p;
      while (e < source_.size() && is_name_char(source_[e])) ++e;
      tokens_->push_back(Token{TokenType::kName, source_.substr(p, e - p), Value(), line_});
      *position = e;
      return Status::Ok();
    }
    if (c == '\'' || c == '"') return string_at(position);
    static const char* const kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
                                             "]", "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
    for (const char* op : kOperators) {
      const std::size_t n = std::strlen(op);
      if (source_.compare(p, n, op) != 0) continue;
      if (n == 1 && (c == '(' || c == '[' || c == '{')) balance->push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
      if (n == 1 && (c == ')' || c == ']' || c == '}')) {
        if (balance->empty()) return error(std::string("unexpected '") + c + "'");
        if (balance->back() != c) {
          return error(std::string("unexpected '") + c + "', expected '" + balance->back() + "'");
        }
        balance->pop_back();
      }
      tokens_->push_back(Token{TokenType::kOperator, op, Value(), line_});
      *position = p + n;
      return Status::Ok();
    }
    return error(std::string("unexpected character '") + c + "'");
  }

  // jinja2's integer and float literals (with '_' separators, 0b/0o/0x prefixes).
  Status number_at(std::size_t* position) {
    const std::size_t p = *position;
    auto digits = [&](std::size_t i, auto accept) {
      // (\d+_)*\d+ style: runs of digits joined by single underscores
      std::size_t e = i;
      while (e < source_.size() && (accept(source_[e]) || (source_[e] == '_' && e > i && e + 1 < source_.size() &&
                                                            accept(source_[e + 1])))) {
        ++e;
      }
      return e;
    };
    auto decimal = [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)) != 0; };
    std::size_t e = digits(p, decimal);
    std::size_t float_end = e;
    if (float_end + 1 < source_.size() && source_[float_end] == '.' && decimal(source_[float_end + 1])) {
      float_end = digits(float_end + 1, decimal);
    }
    if (float_end < source_.size() && (source_[float_end] == 'e' || source_[float_end] == 'E')) {
      std::size_t x = float_end + 1;
      if (x < source_.size() && (source_[x] == '+' || source_[x] == '-')) ++x;
      if (x < source_.size() && decimal(source_[x])) float_end = digits(x, decimal);
    }
    if (float_end > e) {
      std::string text;
      for (std::size_t i = p; i < float_end; ++i) {
        if (source_[i] != '_') text += source_[i];
      }
      tokens_->push_back(Token{TokenType::kFloat, text, Value::number(std::strtod(text.c_str(), nullptr)), line_});
      *position = float_end;
      return Status::Ok();
    }
    int base = 10;
    std::size_t start = p;
    if (source_[p] == '0' && p + 1 < source_.size()) {
      const char prefix = static_cast<char>(std::tolower(static_cast<unsigned char>(source_[p + 1])));
      if (prefix == 'b' || prefix == 'o' || prefix == 'x') {
        base = prefix == 'b' ? 2 : prefix == 'o' ? 8 : 16;
        start = p + 2;
        e = start;
        while (e < source_.size() && (std::isxdigit(static_cast<unsigned char>(source_[e])) || source_[e] == '_')) {
          ++e;
        }
      }
    }
    std::string text;
    for (std::size_t i = start; i < e; ++i) {
      if (source_[i] != '_') text += source_[i];
    }
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, base);
    if (text.empty() || *end != '\0') return error("invalid integer literal '" + source_.substr(p, e - p) + "'");
    if (errno == ERANGE) {
      return error("the integer literal " + source_.substr(p, e - p) + " does not fit 64 bits");
    }
    tokens_->push_back(Token{TokenType::kInteger, text, Value::integer(v), line_});
    *position = e;
    return Status::Ok();
  }

  Status string_at(std::size_t* position) {
    const std::size_t p = *position;
    const char quote = source_[p];
    std::size_t e = p + 1;
    while (e < source_.size() && source_[e] != quote) e += source_[e] == '\\' ? 2 : 1;
    if (e >= source_.size()) return error("unterminated string");
    std::string decoded;
    ZIPMOE_RETURN_IF_ERROR(unescape(std::string_view(source_).substr(p + 1, e - p - 1), &decoded));
    tokens_->push_back(Token{TokenType::kString, decoded, Value(), line_});
    count_lines(p, e);
    *position = e + 1;
    return Status::Ok();
  }

  // Python's unicode-escape decoding of a string literal's body.
  Status unescape(std::string_view body, std::string* out) const {
    for (std::size_t i = 0; i < body.size(); ++i) {
      if (body[i] != '\\' || i + 1 >= body.size()) {
        *out += body[i];
        continue;
      }
      const char c = body[++i];
      switch (c) {
        case '\n': break;
        case '\\': *out += '\\'; break;
        case '\'': *out += '\''; break;
        case '"': *out += '"'; break;
        case 'a': *out += '\a'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'v': *out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          const std::size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
          std::uint32_t cp = 0;
          for (std::size_t k = 1; k <= n; ++k) {
            const char h = i + k < body.size() ? body[i + k] : '\0';
            if (!std::isxdigit(static_cast<unsigned char>(h))) {
              return error(std::string("truncated \\") + c + " escape in a string");
            }
            cp = cp * 16 + static_cast<std::uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                          ? h - '0'
                                                          : std::tolower(static_cast<unsigned char>(h)) - 'a' + 10);
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return error("invalid \\U escape in a string");
          append_utf8(cp, out);
          i += n;
          break;
        }
        case 'N':
          return Status::Unsupported("line " + std::to_string(line_) + ": \\N{...} escapes are not supported");
        default:
          if (c >= '0' && c <= '7') {
            std::uint32_t cp = 0;
            std::size_t k = 0;
            while (k < 3 && i + k < body.size() && body[i + k] >= '0' && body[i + k] <= '7') {
              cp = cp * 8 + static_cast<std::uint32_t>(body[i + k] - '0');
              ++k;
            }
            append_utf8(cp, out);
            i += k - 1;
          } else {
            *out += '\\';
            *out += c;
          }
      }
    }
    return Status::Ok();
  }

  std::string source_;
  std::vector<Token>* tokens_ = nullptr;
  std::size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
};

// ---------------------------------------------------------------------------

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Status parse(Body* body) {
    std::string end;
    parse_body({}, body, &end);
    if (ok() && current().type != TokenType::kEnd) fail("unexpected tag");
    return status_;
  }

 private:
  bool ok() const { return status_.ok(); }
  const Token& current() const { return tokens_[pos_]; }
  const Token& peek(std::size_t ahead = 1) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }

  void fail(const std::string& message) {
    if (ok()) status_ = Status::Format("line " + std::to_string(current().line) + ": " + message);
  }
  void unsupported(const std::string& what) {
    if (ok()) {
      status_ = Status::Unsupported("line " + std::to_string(current().line) + ": " + what +
                                    " is not supported by zipmoe's template engine (text/jinja/template.h)");
    }
  }

  bool is_operator(const char* op) const { return current().type == TokenType::kOperator && current().text == op; }
  bool is_name(const char* name) const { return current().type == TokenType::kName && current().text == name; }
  bool accept_operator(const char* op) {
    if (!is_operator(op)) return false;
    next();
    return true;
  }
  bool accept_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  void expect_operator(const char* op) {
    if (!accept_operator(op)) fail(std::string("expected '") + op + "', got " + describe(current()));
  }
  std::string expect_name() {
    if (current().type != TokenType::kName) {
      fail("expected a name, got " + describe(current()));
      return std::string();
    }
    std::string name = current().text;
    next();
    return name;
  }
  void expect_block_end() {
    if (current().type != TokenType::kBlockEnd) {
      fail("expected the end of the statement ('%}'), got " + describe(current()));
      return;
    }
    next();
  }

  static std::string describe(const Token& token) {
    switch (token.type) {
      case TokenType::kEnd: return "the end of the template";
      case TokenType::kBlockEnd: return "'%}'";
      case TokenType::kVariableEnd: return "'}}'";
      case TokenType::kName: return "'" + token.text + "'";
      case TokenType::kOperator: return "'" + token.text + "'";
      case TokenType::kString: return "a string";
      case TokenType::kInteger:
      case TokenType::kFloat: return "a number";
      default: return "text";
    }
  }

  ExprPtr node(ExprKind kind) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = current().line;
    return e;
  }

  StmtPtr statement(StmtKind kind) {
    auto s = std::make_unique<Stmt>();
    s->kind = kind;
    s->line = current().line;
    return s;
  }

  // Statements up to a block tag named in `ends` (left as the current token: its name).
  void parse_body(const std::set<std::string>& ends, Body* body, std::string* end) {
    if (++nesting_ > kMaxNesting) {
      fail("blocks nested deeper than " + std::to_string(kMaxNesting));
      return;
    }
    while (ok()) {
      const Token& token = current();
      if (token.type == TokenType::kEnd) {
        if (!ends.empty()) fail("unexpected end of template, expected one of: " + join(ends));
        break;
      }
      if (token.type == TokenType::kText) {
        auto s = statement(StmtKind::kText);
        s->text = token.text;
        body->push_back(std::move(s));
        next();
      } else if (token.type == TokenType::kVariableBegin) {
        next();
        auto s = statement(StmtKind::kOutput);
        s->expr = parse_tuple(true, false);
        if (ok() && current().type != TokenType::kVariableEnd) fail("expected '}}', got " + describe(current()));
        next();
        body->push_back(std::move(s));
      } else if (token.type == TokenType::kBlockBegin) {
        if (peek().type == TokenType::kName && ends.count(peek().text)) {
          next();
          *end = current().text;
          --nesting_;
          return;
        }
        next();
        StmtPtr s = parse_statement();
        if (s) body->push_back(std::move(s));
      } else {
        fail("unexpected " + describe(token));
      }
    }
    --nesting_;
  }

  static std::string join(const std::set<std::string>& names) {
    std::string out;
    for (const std::string& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
    return out;
  }

  StmtPtr parse_statement() {
    if (current().type != TokenType::kName) {
      fail("expected a statement name, got " + describe(current()));
      return nullptr;
    }
    const std::string name = current().text;
    if (name == "if") return parse_if();
    if (name == "for") return parse_for();
    if (name == "set") return parse_set();
    if (name == "macro") return parse_macro();
    if (name == "with") return parse_with();
    if (name == "generation") return parse_generation();
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) {
        fail("'" + name + "' outside a loop");
        return nullptr;
      }
      auto s = statement(name == "break" ? StmtKind::kBreak : StmtKind::kContinue);
      next();
      expect_block_end();
      return s;
    }
    static const std::set<std::string> kUnsupported = {"include", "import", "from", "extends", "block",
                                                       "call", "filter", "autoescape"};
    if (kUnsupported.count(name)) {
      unsupported("{% " + name + " %}");
      return nullptr;
    }
    fail("encountered unknown tag '" + name + "'");
    return nullptr;
  }

  StmtPtr parse_if() {
    auto s = statement(StmtKind::kIf);
    next();  // if
    for (;;) {
      ExprPtr condition = parse_tuple(false, false);
      expect_block_end();
      Body body;
      std::string end;
      parse_body({"elif", "else", "endif"}, &body, &end);
      if (!ok()) return nullptr;
      s->branches.emplace_back(std::move(condition), std::move(body));
      next();  // the end tag's name
      if (end == "elif") continue;
      if (end == "else") {
        expect_block_end();
        parse_body({"endif"}, &s->otherwise, &end);
        if (!ok()) return nullptr;
        next();
      }
      expect_block_end();
      return s;
    }
  }

  // Names for `for` and `set`: a name, or names separated by commas (in parentheses or not).
  void parse_targets(Stmt* s, const char* stop) {
    const bool parenthesized = accept_operator("(");
    for (;;) {
      if (!parenthesized && stop && is_name(stop)) break;
      s->targets.push_back(expect_name());
      if (!ok() || !accept_operator(",")) break;
      s->unpack = true;
    }
    if (parenthesized) {
      s->unpack = true;
      expect_operator(")");
    }
  }

  StmtPtr parse_for() {
    auto s = statement(StmtKind::kFor);
    next();  // for
    parse_targets(s.get(), "in");
    if (!ok()) return nullptr;
    if (!accept_name("in")) {
      fail("expected 'in' in a for loop, got " + describe(current()));
      return nullptr;
    }
    s->expr = parse_tuple(false, true);
    if (accept_name("if")) s->condition = parse_expression(true);
    if (is_name("recursive")) {
      unsupported("a recursive loop");
      return nullptr;
    }
    expect_block_end();
    ++loop_depth_;
    std::string end;
    parse_body({"endfor", "else"}, &s->body, &end);
    --loop_depth_;
    if (!ok()) return nullptr;
    next();
    if (end == "else") {
      expect_block_end();
      parse_body({"endfor"}, &s->otherwise, &end);
      if (!ok()) return nullptr;
      next();
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set() {
    next();  // set
    if (current().type == TokenType::kName && peek().type == TokenType::kOperator && peek().text == ".") {
      auto s = statement(StmtKind::kSetAttribute);
      s->targets.push_back(expect_name());
      next();  // .
      s->targets.push_back(expect_name());
      expect_operator("=");
      s->expr = parse_tuple(true, false);
      expect_block_end();
      return ok() ? std::move(s) : nullptr;
    }
    auto s = statement(StmtKind::kSet);
    parse_targets(s.get(), nullptr);
    if (!ok()) return nullptr;
    if (accept_operator("=")) {
      s->expr = parse_tuple(true, false);
      expect_block_end();
      return ok() ? std::move(s) : nullptr;
    }
    if (s->unpack) {
      fail("a block set assigns one name");
      return nullptr;
    }
    s->kind = StmtKind::kSetBlock;
    while (ok() && accept_operator("|")) {
      ExprPtr filter = node(ExprKind::kFilter);
      filter->operands.push_back(nullptr);
      parse_filter_name_and_arguments(filter.get());
      s->values.push_back(std::move(filter));
    }
    expect_block_end();
    std::string end;
    parse_body({"endset"}, &s->body, &end);
    next();
    expect_block_end();
    return ok() ? std::move(s) : nullptr;
  }

  StmtPtr parse_macro() {
    auto s = statement(StmtKind::kMacro);
    next();  // macro
    s->text = expect_name();
    expect_operator("(");
    while (ok() && !is_operator(")")) {
      if (!s->targets.empty()) expect_operator(",");
      if (is_operator(")")) break;
      s->targets.push_back(expect_name());
      s->values.push_back(accept_operator("=") ? parse_expression(true) : nullptr);
    }
    expect_operator(")");
    expect_block_end();
    const std::size_t loops = loop_depth_;
    loop_depth_ = 0;
    std::string end;
    parse_body({"endmacro"}, &s->body, &end);
    loop_depth_ = loops;
    next();
    expect_block_end();
    return ok() ? std::move(s) : nullptr;
  }

  StmtPtr parse_with() {
    auto s = statement(StmtKind::kScope);
    next();  // with
    while (ok() && current().type != TokenType::kBlockEnd) {
      if (!s->targets.empty()) expect_operator(",");
      s->targets.push_back(expect_name());
      expect_operator("=");
      s->values.push_back(parse_expression(true));
    }
    expect_block_end();
    std::string end;
    parse_body({"endwith"}, &s->body, &end);
    next();
    expect_block_end();
    return ok() ? std::move(s) : nullptr;
  }

  StmtPtr parse_generation() {
    auto s = statement(StmtKind::kScope);
    next();  // generation
    expect_block_end();
    std::string end;
    parse_body({"endgeneration"}, &s->body, &end);
    next();
    expect_block_end();
    return ok() ? std::move(s) : nullptr;
  }

  // ---- expressions (jinja2's parser: parse_tuple, parse_expression, ...) ----

  // Expressions separated by commas (a tuple) or one expression. `for_target`:
  // the iterable of a for loop, which stops at `if` and takes no conditional.
  ExprPtr parse_tuple(bool with_condexpr, bool for_target) {
    ExprPtr first = for_target ? parse_or() : parse_expression(with_condexpr);
    if (!ok() || !is_operator(",")) return first;
    ExprPtr tuple = node(ExprKind::kTuple);
    tuple->operands.push_back(std::move(first));
    while (ok() && accept_operator(",")) {
      if (ends_tuple()) break;
      tuple->operands.push_back(for_target ? parse_or() : parse_expression(with_condexpr));
    }
    return tuple;
  }

  bool ends_tuple() const {
    const TokenType t = current().type;
    return t == TokenType::kVariableEnd || t == TokenType::kBlockEnd || is_operator(")") || is_name("if") ||
           is_name("in");
  }

  ExprPtr parse_expression(bool with_condexpr) {
    if (++depth_ > kMaxNesting) {
      fail("expression nested deeper than " + std::to_string(kMaxNesting));
      return nullptr;
    }
    ExprPtr e = with_condexpr ? parse_conditional() : parse_or();
    --depth_;
    return e;
  }

  ExprPtr parse_conditional() {
    ExprPtr value = parse_or();
    while (ok() && accept_name("if")) {
      ExprPtr c = node(ExprKind::kConditional);
      c->operands.push_back(parse_or());
      c->operands.push_back(std::move(value));
      c->operands.push_back(accept_name("else") ? parse_conditional() : nullptr);
      value = std::move(c);
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (ok() && accept_name("or")) left = binary(ExprKind::kOr, std::move(left), parse_and());
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (ok() && accept_name("and")) left = binary(ExprKind::kAnd, std::move(left), parse_not());
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      ExprPtr n = node(ExprKind::kNot);
      next();
      n->operands.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }

  ExprPtr binary(ExprKind kind, ExprPtr left, ExprPtr right) {
    ExprPtr b = node(kind);
    b->operands.push_back(std::move(left));
    b->operands.push_back(std::move(right));
    return b;
  }

  ExprPtr binary_op(Op op, ExprPtr left, ExprPtr right) {
    ExprPtr b = binary(ExprKind::kBinary, std::move(left), std::move(right));
    b->ops.push_back(op);
    return b;
  }

  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    ExprPtr compare;
    for (;;) {
      Op op;
      if (is_operator("==")) op = Op::kEqual;
      else if (is_operator("!=")) op = Op::kNotEqual;
      else if (is_operator("<")) op = Op::kLess;
      else if (is_operator("<=")) op = Op::kLessEqual;
      else if (is_operator(">")) op = Op::kGreater;
      else if (is_operator(">=")) op = Op::kGreaterEqual;
      else if (is_name("in")) op = Op::kIn;
      else if (is_name("not") && peek().type == TokenType::kName && peek().text == "in") {
        op = Op::kNotIn;
        next();
      } else {
        break;
      }
      next();
      if (!compare) {
        compare = node(ExprKind::kCompare);
        compare->operands.push_back(std::move(first));
      }
      compare->ops.push_back(op);
      compare->operands.push_back(parse_math1());
      if (!ok()) return nullptr;
    }
    return compare ? std::move(compare) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (ok() && (is_operator("+") || is_operator("-"))) {
      const Op op = is_operator("+") ? Op::kAdd : Op::kSubtract;
      next();
      left = binary_op(op, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr first = parse_math2();
    if (!is_operator("~")) return first;
    ExprPtr concat = node(ExprKind::kConcat);
    concat->operands.push_back(std::move(first));
    while (ok() && accept_operator("~")) concat->operands.push_back(parse_math2());
    return concat;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    for (;;) {
      Op op;
      if (is_operator("*")) op = Op::kMultiply;
      else if (is_operator("/")) op = Op::kDivide;
      else if (is_operator("//")) op = Op::kFloorDivide;
      else if (is_operator("%")) op = Op::kModulo;
      else break;
      next();
      left = binary_op(op, std::move(left), parse_pow());
      if (!ok()) return nullptr;
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (ok() && accept_operator("**")) left = binary_op(Op::kPower, std::move(left), parse_unary(true));
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    if (++depth_ > kMaxNesting) {
      fail("expression nested deeper than " + std::to_string(kMaxNesting));
      return nullptr;
    }
    ExprPtr e;
    if (is_operator("-") || is_operator("+")) {
      e = node(is_operator("-") ? ExprKind::kNegate : ExprKind::kPlus);
      next();
      e->operands.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    if (ok()) e = parse_postfix(std::move(e));
    if (ok() && with_filter) e = parse_filter_expression(std::move(e));
    --depth_;
    return ok() ? std::move(e) : nullptr;
  }

  ExprPtr parse_primary() {
    const Token& token = current();
    switch (token.type) {
      case TokenType::kName: {
        ExprPtr e = node(ExprKind::kLiteral);
        const std::string& n = token.text;
        if (n == "true" || n == "True") {
          e->literal = Value::boolean(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value::boolean(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::none();
        } else {
          e->kind = ExprKind::kName;
          e->name = n;
        }
        next();
        return e;
      }
      case TokenType::kString: {
        ExprPtr e = node(ExprKind::kLiteral);
        std::string text;
        while (current().type == TokenType::kString) {
          text += current().text;
          next();
        }
        e->literal = Value::string(std::move(text));
        return e;
      }
      case TokenType::kInteger:
      case TokenType::kFloat: {
        ExprPtr e = node(ExprKind::kLiteral);
        e->literal = token.value;
        next();
        return e;
      }
      case TokenType::kOperator:
        if (token.text == "(") {
          next();
          if (accept_operator(")")) return node(ExprKind::kTuple);
          ExprPtr inner = parse_tuple(true, false);
          expect_operator(")");
          return inner;
        }
        if (token.text == "[") return parse_list();
        if (token.text == "{") return parse_dict();
        break;
      default:
        break;
    }
    fail("unexpected " + describe(token));
    return nullptr;
  }

  ExprPtr parse_list() {
    ExprPtr list = node(ExprKind::kList);
    next();  // [
    while (ok() && !is_operator("]")) {
      if (!list->operands.empty()) expect_operator(",");
      if (is_operator("]")) break;
      list->operands.push_back(parse_expression(true));
    }
    expect_operator("]");
    return ok() ? std::move(list) : nullptr;
  }

  ExprPtr parse_dict() {
    ExprPtr dict = node(ExprKind::kDict);
    next();  // {
    while (ok() && !is_operator("}")) {
      if (!dict->operands.empty()) expect_operator(",");
      if (is_operator("}")) break;
      dict->operands.push_back(parse_expression(true));
      expect_operator(":");
      dict->operands.push_back(parse_expression(true));
    }
    expect_operator("}");
    return ok() ? std::move(dict) : nullptr;
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (ok()) {
      if (is_operator(".")) {
        next();
        if (current().type == TokenType::kName) {
          ExprPtr a = node(ExprKind::kAttribute);
          a->name = current().text;
          next();
          a->operands.push_back(std::move(e));
          e = std::move(a);
        } else if (current().type == TokenType::kInteger) {
          ExprPtr item = node(ExprKind::kItem);
          ExprPtr index = node(ExprKind::kLiteral);
          index->literal = current().value;
          next();
          item->operands.push_back(std::move(e));
          item->operands.push_back(std::move(index));
          e = std::move(item);
        } else {
          fail("expected an attribute name after '.', got " + describe(current()));
        }
      } else if (is_operator("[")) {
        e = parse_subscript(std::move(e));
      } else if (is_operator("(")) {
        ExprPtr call = node(ExprKind::kCall);
        call->operands.push_back(std::move(e));
        parse_call_arguments(call.get());
        e = std::move(call);
      } else {
        break;
      }
    }
    return e;
  }

  ExprPtr parse_subscript(ExprPtr subject) {
    next();  // [
    ExprPtr parts[3];
    bool slice = false;
    int part = 0;
    for (;;) {
      if (is_operator(":")) {
        slice = true;
        if (++part > 2) {
          fail("a slice has at most three parts");
          return nullptr;
        }
        next();
        continue;
      }
      if (is_operator("]") || is_operator(",")) break;
      if (parts[part]) {
        fail("expected ':' or ']' in a subscript, got " + describe(current()));
        return nullptr;
      }
      parts[part] = parse_expression(true);
      if (!ok()) return nullptr;
    }
    if (is_operator(",")) {
      unsupported("a subscript with several indexes");
      return nullptr;
    }
    expect_operator("]");
    if (!slice) {
      if (!parts[0]) {
        fail("an empty subscript");
        return nullptr;
      }
      ExprPtr item = node(ExprKind::kItem);
      item->operands.push_back(std::move(subject));
      item->operands.push_back(std::move(parts[0]));
      return item;
    }
    ExprPtr s = node(ExprKind::kSlice);
    s->operands.push_back(std::move(subject));
    for (ExprPtr& p : parts) s->operands.push_back(std::move(p));
    return s;
  }

  // (positional..., name=value...) after the callee or subject already in operands[0].
  void parse_call_arguments(Expr* call) {
    expect_operator("(");
    std::vector<ExprPtr> keyword_values;
    while (ok() && !is_operator(")")) {
      if (call->operands.size() > 1 || !keyword_values.empty()) {
        expect_operator(",");
        if (is_operator(")")) break;
      }
      if (is_operator("*") || is_operator("**")) {
        unsupported("*args and **kwargs in a call");
        return;
      }
      if (current().type == TokenType::kName && peek().type == TokenType::kOperator && peek().text == "=") {
        call->keywords.push_back(current().text);
        next();
        next();
        keyword_values.push_back(parse_expression(true));
      } else {
        if (!keyword_values.empty()) {
          fail("a positional argument follows a keyword argument");
          return;
        }
        call->operands.push_back(parse_expression(true));
      }
    }
    expect_operator(")");
    call->positional = call->operands.size() - 1;
    for (ExprPtr& v : keyword_values) call->operands.push_back(std::move(v));
  }

  void parse_filter_name_and_arguments(Expr* filter) {
    std::string name = expect_name();
    while (ok() && is_operator(".")) {
      next();
      name += "." + expect_name();
    }
    filter->name = name;
    if (!ok()) return;
    const FilterStatus known = filter_status(name);
    if (known == FilterStatus::kUnsupported) {
      unsupported("the filter '" + name + "'");
      return;
    }
    if (known == FilterStatus::kUnknown) {
      fail("no filter named '" + name + "'");
      return;
    }
    if (is_operator("(")) {
      parse_call_arguments(filter);
    } else {
      filter->positional = 0;
    }
  }

  ExprPtr parse_filter_expression(ExprPtr e) {
    while (ok()) {
      if (is_operator("|")) {
        next();
        ExprPtr f = node(ExprKind::kFilter);
        f->operands.push_back(std::move(e));
        parse_filter_name_and_arguments(f.get());
        e = std::move(f);
      } else if (is_name("is")) {
        next();
        e = parse_test(std::move(e));
      } else if (is_operator("(")) {
        ExprPtr call = node(ExprKind::kCall);
        call->operands.push_back(std::move(e));
        parse_call_arguments(call.get());
        e = std::move(call);
      } else {
        break;
      }
    }
    return e;
  }

  ExprPtr parse_test(ExprPtr subject) {
    ExprPtr t = node(ExprKind::kTest);
    t->negated = accept_name("not");
    t->operands.push_back(std::move(subject));
    std::string name;
    if (current().type == TokenType::kName) {
      name = current().text;
      next();
      while (ok() && is_operator(".")) {
        next();
        name += "." + expect_name();
      }
    } else if (current().type == TokenType::kOperator) {
      // `is ==`? jinja2 only takes names here.
      fail("expected a test name after 'is', got " + describe(current()));
      return nullptr;
    } else {
      fail("expected a test name after 'is', got " + describe(current()));
      return nullptr;
    }
    t->name = name;
    if (!is_test(name)) {
      fail("no test named '" + name + "'");
      return nullptr;
    }
    const TokenType type = current().type;
    if (is_operator("(")) {
      parse_call_arguments(t.get());
    } else if ((type == TokenType::kName || type == TokenType::kString || type == TokenType::kInteger ||
                type == TokenType::kFloat || is_operator("[") || is_operator("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) {
        fail("you cannot chain multiple tests with is");
        return nullptr;
      }
      ExprPtr argument = parse_postfix(parse_primary());
      t->operands.push_back(std::move(argument));
      t->positional = 1;
    }
    return ok() ? std::move(t) : nullptr;
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  Status status_;
  std::size_t depth_ = 0;
  std::size_t nesting_ = 0;
  std::size_t loop_depth_ = 0;
};

}  // namespace

Status Template::parse(std::string_view source, std::shared_ptr<const Template>* out) {
  // jinja2 reads \r\n and \r as \n, and drops one trailing newline (keep_trailing_newline=False).
  std::string normalized;
  normalized.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      normalized += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      normalized += source[i];
    }
  }
  if (!normalized.empty() && normalized.back() == '\n') normalized.pop_back();
  std::vector<Token> tokens;
  ZIPMOE_RETURN_IF_ERROR(Lexer(std::move(normalized)).run(&tokens));
  auto parsed = std::make_shared<Template>();
  ZIPMOE_RETURN_IF_ERROR(Parser(std::move(tokens)).parse(&parsed->body_));
  *out = std::move(parsed);
  return Status::Ok();
}

}  // namespace zipmoe::text::jinja
