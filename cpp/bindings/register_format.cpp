// The .zmoe container (zipmoe.ContainerWriter / zipmoe.open_container; the
// Python face is python/zipmoe/container.py).
#include <pybind11/stl.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "bindings/arguments.h"
#include "bindings/bindings.h"
#include "common/cpu_features.h"
#include "zipmoe/container.h"

namespace zipmoe::bindings {

namespace {

using ExpertRole = std::tuple<std::uint32_t, std::uint32_t, std::string>;

py::dict tensor_dict(const ContainerReader& reader, const TensorInfo& t) {
  const ChunkInfo& exponent = reader.chunks()[t.exponent_chunk];
  const ChunkInfo& sm = reader.chunks()[t.sm_chunk];
  py::dict d;
  d["index"] = t.index;
  d["name"] = t.name;
  d["dtype"] = dtype_name(t.dtype);
  d["shape"] = py::tuple(py::cast(t.shape));
  d["num_elements"] = t.num_elements;
  d["role"] = t.role.is_expert() ? "expert" : "dense";
  d["layer"] = t.role.is_expert() ? py::object(py::int_(t.role.layer)) : py::object(py::none());
  d["expert"] = t.role.is_expert() ? py::object(py::int_(t.role.expert)) : py::object(py::none());
  d["projection"] = t.role.is_expert() ? py::object(py::str(t.role.projection)) : py::object(py::none());
  d["codec"] = codec_name(exponent.codec);
  d["exponent_bytes"] = exponent.stored_size;
  d["sm_bytes"] = sm.stored_size;
  d["exponent_chunk"] = t.exponent_chunk;
  d["sm_chunk"] = t.sm_chunk;
  d["exponent_entropy"] = static_cast<double>(t.exponent_entropy);
  d["decoded_bytes"] = t.decoded_bytes();
  return d;
}

py::dict chunk_dict(const ChunkInfo& c) {
  py::dict d;
  d["index"] = c.index;
  d["kind"] = c.kind == ChunkKind::kExponentPlane ? "exponent" : "sm";
  d["codec"] = codec_name(c.codec);
  d["tensor"] = c.tensor;
  d["offset"] = c.offset;
  d["stored_size"] = c.stored_size;
  d["decoded_size"] = c.decoded_size;
  d["crc32c"] = c.crc32c;
  return d;
}

const TensorInfo& tensor_at(const ContainerReader& reader, std::size_t index) {
  if (index >= reader.tensors().size()) throw InvalidArgumentError("tensor index out of range");
  return reader.tensors()[index];
}

}  // namespace

void register_format(py::module_& m) {
  py::class_<ContainerWriter, std::shared_ptr<ContainerWriter>>(m, "ContainerWriter",
                                                                "Native .zmoe writer (use zipmoe.ContainerWriter).")
      .def(py::init([](const std::string& path, const std::string& metadata_json, std::uint32_t segment_symbols) {
             ContainerWriterOptions options;
             options.segment_symbols = segment_symbols;
             return std::make_shared<ContainerWriter>(path, metadata_json, options);
           }),
           py::arg("path"), py::arg("metadata_json"), py::arg("segment_symbols") = 0)
      .def(
          "add_tensor",
          [](ContainerWriter& w, const std::string& name, py::buffer data, const std::string& dtype_text,
             const std::vector<std::uint64_t>& shape, std::optional<ExpertRole> role, const std::string& codec_text,
             std::shared_ptr<ThreadPool> pool) {
            const DType dtype = dtype_argument(dtype_text);
            const Codec codec = codec_argument(codec_text);
            py::buffer_info buf = data.request();
            std::uint64_t n = 1;
            for (std::uint64_t d : shape) n *= d;  // overflow is caught below and by add_tensor
            if (static_cast<std::uint64_t>(buf.size) * static_cast<std::uint64_t>(buf.itemsize) !=
                n * dtype_size(dtype)) {
              throw InvalidArgumentError("tensor '" + name + "': buffer size does not match shape and dtype");
            }
            TensorRole tensor_role;
            if (role) {
              tensor_role = TensorRole::expert_projection(std::get<0>(*role), std::get<1>(*role), std::get<2>(*role));
            }
            py::gil_scoped_release release;
            w.add_tensor(name, buf.ptr, dtype, shape, tensor_role, codec, pool_or_null(pool));
          },
          py::arg("name"), py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("role") = py::none(),
          py::arg("codec") = "auto", py::arg("pool") = nullptr)
      .def("set_metadata", &ContainerWriter::set_metadata, py::arg("metadata_json"))
      .def("finish", &ContainerWriter::finish, py::call_guard<py::gil_scoped_release>())
      .def("discard", &ContainerWriter::discard)
      .def_property_readonly("path", &ContainerWriter::path)
      .def_property_readonly("num_tensors", &ContainerWriter::num_tensors)
      .def_property_readonly("bytes_written", &ContainerWriter::bytes_written)
      .def_property_readonly("finished", &ContainerWriter::finished);

  py::class_<ContainerReader, std::shared_ptr<ContainerReader>>(m, "ContainerReader",
                                                                "Native .zmoe reader (use zipmoe.open_container).")
      .def(py::init([](const std::string& path, const std::string& io) {
             const IoMode mode = io_mode_argument(io);
             std::shared_ptr<ContainerReader> reader;
             {
               py::gil_scoped_release release;
               reader = std::make_shared<ContainerReader>(ContainerReader::open(path, mode));
             }
             return reader;
           }),
           py::arg("path"), py::arg("io") = "pread")
      .def_property_readonly("path", &ContainerReader::path)
      .def_property_readonly("io_mode", [](const ContainerReader& r) { return std::string(io_mode_name(r.io_mode())); })
      .def_property_readonly("direct_io_active", &ContainerReader::direct_io_active)
      .def_property_readonly(
          "version", [](const ContainerReader& r) { return py::make_tuple(r.version_major(), r.version_minor()); })
      .def_property_readonly("file_size", &ContainerReader::file_size)
      .def_property_readonly("metadata_json",
                             [](const ContainerReader& r) {
                               // Validated UTF-8 at open: decoding cannot fail.
                               return py::str(r.metadata());
                             })
      .def("tensors",
           [](const ContainerReader& r) {
             py::list out;
             for (const TensorInfo& t : r.tensors()) out.append(tensor_dict(r, t));
             return out;
           })
      .def("chunks",
           [](const ContainerReader& r) {
             py::list out;
             for (const ChunkInfo& c : r.chunks()) out.append(chunk_dict(c));
             return out;
           })
      .def("find",
           [](const ContainerReader& r, const std::string& name) -> std::optional<std::uint32_t> {
             const TensorInfo* t = r.find(name);
             if (!t) return std::nullopt;
             return t->index;
           },
           py::arg("name"))
      .def("find_expert",
           [](const ContainerReader& r, std::uint32_t layer, std::uint32_t expert,
              const std::string& projection) -> std::optional<std::uint32_t> {
             const TensorInfo* t = r.find_expert(layer, expert, projection);
             if (!t) return std::nullopt;
             return t->index;
           },
           py::arg("layer"), py::arg("expert"), py::arg("projection"))
      .def("decode_into",
           [](const ContainerReader& r, std::size_t index, py::buffer out, std::shared_ptr<ThreadPool> pool,
              std::optional<std::string> isa) {
             const TensorInfo& t = tensor_at(r, index);
             const std::optional<Isa> path = isa_argument(isa);
             py::buffer_info dst = out.request(true);
             py::gil_scoped_release release;
             r.decode_tensor(t, dst.ptr, static_cast<std::size_t>(dst.size * dst.itemsize), pool_or_null(pool), path);
           },
           py::arg("index"), py::arg("out"), py::arg("pool") = nullptr, py::arg("isa") = py::none())
      .def("read_chunk",
           [](const ContainerReader& r, std::uint32_t chunk) {
             if (chunk >= r.chunks().size()) throw InvalidArgumentError("chunk index out of range");
             const std::size_t stored = static_cast<std::size_t>(r.chunks()[chunk].stored_size);
             const std::size_t capacity = r.chunk_buffer_size(chunk);
             // One aligned allocation, read in place, then one copy into the bytes object.
             std::unique_ptr<std::uint8_t, void (*)(void*)> buffer(
                 static_cast<std::uint8_t*>(capacity ? std::aligned_alloc(kContainerAlignment, capacity) : nullptr),
                 std::free);
             if (capacity && !buffer) throw std::bad_alloc();
             {
               py::gil_scoped_release release;
               r.read_chunk(chunk, buffer.get(), capacity);
             }
             return py::bytes(reinterpret_cast<const char*>(buffer.get()), stored);
           },
           py::arg("chunk"),
           "The stored bytes of a chunk, checksum verified (ChecksumError names file, tensor and chunk).");
}

}  // namespace zipmoe::bindings
