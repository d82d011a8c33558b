// The tokenizer (zipmoe.Tokenizer; the Python face is python/zipmoe/tokenizer.py).
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/json.h"
#include "model/tokenizer_files.h"
#include "text/tokenizer.h"

namespace zipmoe::bindings {

namespace {

using text::StreamDecoder;
using text::Tokenizer;
// pybind11 holders cannot be pointers to const; the tokenizer is immutable anyway.
using TokenizerPtr = std::shared_ptr<Tokenizer>;
using ConstTokenizerPtr = std::shared_ptr<const Tokenizer>;

// Why a str has no UTF-8 form: the first lone surrogate (U+D800..U+DFFF) in it,
// which is how Python keeps bytes it could not decode (errors="surrogateescape").
std::string lone_surrogate_message(const py::handle& text) {
  const Py_ssize_t length = PyUnicode_GetLength(text.ptr());
  for (Py_ssize_t i = 0; i < length; ++i) {
    const Py_UCS4 c = PyUnicode_ReadChar(text.ptr(), i);
    if (c >= 0xD800 && c <= 0xDFFF) {
      char code[16];
      std::snprintf(code, sizeof code, "U+%04X", static_cast<unsigned>(c));
      std::string message = std::string("text is not valid Unicode: a lone surrogate ") + code + " at index " +
                            std::to_string(i) + " has no UTF-8 form";
      if (c >= 0xDC80 && c <= 0xDCFF) {
        char byte[8];
        std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned>(c - 0xDC00));
        message += std::string(" (it stands for the byte ") + byte +
                   " of input that was not UTF-8: fix the input's encoding or decode it with errors='replace')";
      }
      return message;
    }
  }
  return "text cannot be encoded as UTF-8";
}

// Text may be a str (encoded as UTF-8) or bytes (taken as they are).
std::string text_bytes(const py::handle& text) {
  if (py::isinstance<py::bytes>(text)) return std::string(py::reinterpret_borrow<py::bytes>(text));
  if (py::isinstance<py::str>(text)) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
    if (data == nullptr) {
      PyErr_Clear();
      throw InvalidArgumentError(lone_surrogate_message(text));
    }
    return std::string(data, static_cast<std::size_t>(size));
  }
  throw InvalidArgumentError(std::string("text must be str or bytes, not ") +
                             std::string(py::str(py::type::of(text).attr("__name__"))));
}

std::vector<std::int32_t> ids_from(const py::handle& ids) {
  std::vector<std::int32_t> out;
  // Out-of-range ids decode to nothing; keep them out of int32 wrap-around.
  auto narrow = [](const py::handle& item) {
    const long long value = item.cast<long long>();
    return value < 0 || value > INT32_MAX ? -1 : static_cast<std::int32_t>(value);
  };
  if (py::isinstance<py::int_>(ids)) {
    out.push_back(narrow(ids));
    return out;
  }
  for (const py::handle& item : py::iter(ids)) out.push_back(narrow(item));
  return out;
}

py::list to_list(const std::vector<std::int32_t>& ids) {
  py::list list(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    PyObject* value = PyLong_FromLong(ids[i]);
    if (!value) throw py::error_already_set();
    PyList_SET_ITEM(list.ptr(), static_cast<Py_ssize_t>(i), value);
  }
  return list;
}

py::str utf8_text(const std::string& bytes) {
  // Decoded text is valid UTF-8 by construction; vocabulary entries may not be.
  PyObject* s = PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace");
  if (!s) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(s);
}

std::optional<std::int32_t> optional_id(std::int32_t id) {
  return id < 0 ? std::nullopt : std::optional<std::int32_t>(id);
}

void check_id(const Tokenizer& t, std::int64_t id) {
  if (id < 0 || id >= t.vocab_size()) {
    throw InvalidArgumentError("token id " + std::to_string(id) + " is outside [0, " +
                               std::to_string(t.vocab_size()) + ")");
  }
}

const char* attribute_name(text::TokenAttribute a) {
  switch (a) {
    case text::TokenAttribute::kNormal: return "normal";
    case text::TokenAttribute::kUnknown: return "unknown";
    case text::TokenAttribute::kControl: return "control";
    case text::TokenAttribute::kUserDefined: return "user_defined";
    case text::TokenAttribute::kUnused: return "unused";
    case text::TokenAttribute::kByte: return "byte";
  }
  return "?";
}

// Below this many bytes the GIL round trip costs more than the work.
constexpr std::size_t kReleaseGilBytes = 4096;

using TokenizerClass = py::class_<Tokenizer, TokenizerPtr>;

// Tokenizer.from_gguf / from_json / from_metadata.
void add_constructors(TokenizerClass& cls) {
  cls
      .def_static(
          "from_gguf",
          [](const std::string& path) {
            ConstTokenizerPtr t;
            Status status;
            {
              py::gil_scoped_release release;
              status = model::tokenizer_from_gguf_file(path, &t);
            }
            throw_if_error(status);
            return std::const_pointer_cast<Tokenizer>(t);
          },
          py::arg("path"))
      .def_static(
          "from_json",
          [](const std::string& tokenizer_json, const std::optional<std::string>& config_json,
             const std::string& origin) {
            ConstTokenizerPtr t;
            Status status;
            {
              py::gil_scoped_release release;
              json::Value config;
              if (config_json) status = json::parse(*config_json, &config).with_context(origin + " (tokenizer_config)");
              if (status.ok()) {
                status = Tokenizer::from_hf_json(tokenizer_json, config_json ? &config : nullptr, origin, &t);
              }
            }
            throw_if_error(status);
            return std::const_pointer_cast<Tokenizer>(t);
          },
          py::arg("tokenizer_json"), py::arg("tokenizer_config_json") = py::none(),
          py::arg("origin") = "tokenizer.json")
      .def_static(
          "from_metadata",
          [](const std::string& tokenizer_record_json, const std::string& origin) {
            ConstTokenizerPtr t;
            Status status;
            {
              py::gil_scoped_release release;
              json::Value record;
              status = json::parse(tokenizer_record_json, &record).with_context(origin);
              if (status.ok()) status = Tokenizer::from_container_metadata(record, origin, &t);
            }
            throw_if_error(status);
            return std::const_pointer_cast<Tokenizer>(t);
          },
          py::arg("tokenizer_record_json"), py::arg("origin") = "metadata");
}

// encode, encode_batch, decode, decode_bytes.
void add_encoding(TokenizerClass& cls) {
  cls
      .def(
          "encode",
          [](const Tokenizer& t, const py::handle& text, bool add_special_tokens, bool parse_special) {
            const std::string bytes = text_bytes(text);
            text::EncodeOptions options;
            options.add_special_tokens = add_special_tokens;
            options.parse_special = parse_special;
            std::vector<std::int32_t> ids;
            if (bytes.size() >= kReleaseGilBytes) {
              py::gil_scoped_release release;
              t.encode(bytes, options, &ids);
            } else {
              t.encode(bytes, options, &ids);
            }
            return to_list(ids);
          },
          py::arg("text"), py::arg("add_special_tokens") = true, py::arg("parse_special") = false)
      .def(
          "encode_batch",
          [](const Tokenizer& t, const py::iterable& texts, bool add_special_tokens, bool parse_special) {
            std::vector<std::string> inputs;
            for (const py::handle& text : texts) inputs.push_back(text_bytes(text));
            text::EncodeOptions options;
            options.add_special_tokens = add_special_tokens;
            options.parse_special = parse_special;
            std::vector<std::vector<std::int32_t>> outputs(inputs.size());
            {
              py::gil_scoped_release release;
              for (std::size_t i = 0; i < inputs.size(); ++i) t.encode(inputs[i], options, &outputs[i]);
            }
            py::list result(outputs.size());
            for (std::size_t i = 0; i < outputs.size(); ++i) {
              result[i] = to_list(outputs[i]);
            }
            return result;
          },
          py::arg("texts"), py::arg("add_special_tokens") = true, py::arg("parse_special") = false)
      .def(
          "decode",
          [](const Tokenizer& t, const py::handle& ids, bool skip_special_tokens) {
            const std::vector<std::int32_t> list = ids_from(ids);
            std::string text;
            if (list.size() >= kReleaseGilBytes / 4) {
              py::gil_scoped_release release;
              text = t.decode(list.data(), list.size(), skip_special_tokens);
            } else {
              text = t.decode(list.data(), list.size(), skip_special_tokens);
            }
            return utf8_text(text);
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false)
      .def(
          "decode_bytes",
          [](const Tokenizer& t, const py::handle& ids, bool skip_special_tokens) {
            const std::vector<std::int32_t> list = ids_from(ids);
            std::string bytes;
            t.decode_bytes(list.data(), list.size(), skip_special_tokens, &bytes);
            return py::bytes(bytes);
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false);
}

// The vocabulary: sizes, special ids, lookups.
void add_vocabulary(TokenizerClass& cls) {
  cls
      .def_property_readonly("vocab_size", &Tokenizer::vocab_size)
      .def_property_readonly("bos_id", [](const Tokenizer& t) { return optional_id(t.bos_id()); })
      .def_property_readonly("eos_id", [](const Tokenizer& t) { return optional_id(t.eos_id()); })
      .def_property_readonly("pad_id", [](const Tokenizer& t) { return optional_id(t.pad_id()); })
      .def_property_readonly("unk_id", [](const Tokenizer& t) { return optional_id(t.unk_id()); })
      .def_property_readonly("prefix_ids", [](const Tokenizer& t) { return t.prefix_ids(); })
      .def_property_readonly("suffix_ids", [](const Tokenizer& t) { return t.suffix_ids(); })
      .def_property_readonly("description", &Tokenizer::description)
      .def_property_readonly("memory_bytes", &Tokenizer::memory_bytes)
      .def(
          "token_to_id",
          [](const Tokenizer& t, const py::handle& token) { return optional_id(t.token_to_id(text_bytes(token))); },
          py::arg("token"))
      .def(
          "id_to_token",
          [](const Tokenizer& t, std::int64_t id) {
            check_id(t, id);
            return utf8_text(std::string(t.id_to_token(static_cast<std::int32_t>(id))));
          },
          py::arg("id"))
      .def(
          "token_bytes",
          [](const Tokenizer& t, std::int64_t id) {
            check_id(t, id);
            return py::bytes(std::string(t.token_bytes(static_cast<std::int32_t>(id))));
          },
          py::arg("id"))
      .def(
          "is_special",
          [](const Tokenizer& t, std::int64_t id) {
            check_id(t, id);
            return t.is_special(static_cast<std::int32_t>(id));
          },
          py::arg("id"))
      .def(
          "attribute",
          [](const Tokenizer& t, std::int64_t id) {
            check_id(t, id);
            return attribute_name(t.attribute(static_cast<std::int32_t>(id)));
          },
          py::arg("id"));
}

}  // namespace

void register_text(py::module_& m) {
  TokenizerClass tokenizer(m, "Tokenizer", "Native tokenizer (use zipmoe.Tokenizer).");
  add_constructors(tokenizer);
  add_encoding(tokenizer);
  add_vocabulary(tokenizer);

  py::class_<StreamDecoder>(m, "StreamDecoder", "Incremental detokenizer (use zipmoe.Tokenizer.stream_decoder).")
      .def(py::init([](TokenizerPtr tokenizer, bool skip_special_tokens, bool at_start) {
             return new StreamDecoder(std::move(tokenizer), skip_special_tokens, at_start);
           }),
           py::arg("tokenizer"), py::arg("skip_special_tokens") = false, py::arg("at_start") = true)
      .def(
          "feed",
          [](StreamDecoder& d, const py::handle& ids) {
            const std::vector<std::int32_t> list = ids_from(ids);
            return utf8_text(d.feed(list.data(), list.size()));
          },
          py::arg("ids"))
      .def("flush", [](StreamDecoder& d) { return utf8_text(d.flush()); })
      .def_property_readonly("pending_bytes", &StreamDecoder::pending_bytes);
}

}  // namespace zipmoe::bindings
