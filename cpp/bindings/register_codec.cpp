// compress/decompress of single tensors (zipmoe.compress / zipmoe.decompress).
#include <pybind11/stl.h>

#include <optional>

#include "bindings/arguments.h"
#include "bindings/bindings.h"
#include "codec/coded_plane.h"
#include "common/cpu_features.h"
#include "zipmoe/codec.h"

namespace zipmoe::bindings {

namespace {

py::dict info_dict(const BlobInfo& info) {
  py::dict d;
  d["dtype"] = dtype_name(info.dtype);
  d["shape"] = py::tuple(py::cast(info.shape));
  d["num_elements"] = info.num_elements;
  d["codec"] = codec_name(info.codec);
  d["coded_plane_bytes"] = info.coded_plane_bytes;
  d["sm_plane_bytes"] = info.sm_plane_bytes;
  d["total_bytes"] = info.total_bytes;
  d["num_segments"] = info.num_segments;
  return d;
}

}  // namespace

void register_codec(py::module_& m) {
  m.def(
      "compress_buffer",
      [](py::buffer data, const std::string& dtype_name_, const std::vector<std::uint64_t>& shape,
         const std::string& codec_name_, std::uint32_t segment_symbols, std::shared_ptr<ThreadPool> pool) {
        const DType dtype = dtype_argument(dtype_name_);
        const Codec codec = codec_argument(codec_name_);
        py::buffer_info buf = data.request();
        std::uint64_t n = 1;
        for (auto d : shape) n *= d;
        if (static_cast<std::uint64_t>(buf.size) * buf.itemsize != n * dtype_size(dtype)) {
          throw InvalidArgumentError("buffer size does not match shape and dtype");
        }
        CompressOptions options;
        options.codec = codec;
        options.segment_symbols = segment_symbols;
        std::vector<std::uint8_t> blob;
        {
          py::gil_scoped_release release;
          blob = compress(buf.ptr, dtype, shape, options, pool_or_null(pool));
        }
        return py::bytes(reinterpret_cast<const char*>(blob.data()), blob.size());
      },
      py::arg("data"), py::arg("dtype"), py::arg("shape"), py::arg("codec") = "auto", py::arg("segment_symbols") = 0,
      py::arg("pool") = nullptr);

  m.def(
      "blob_info",
      [](py::buffer blob) {
        py::buffer_info buf = blob.request();
        return info_dict(read_blob_info(buf.ptr, static_cast<std::size_t>(buf.size * buf.itemsize)));
      },
      py::arg("blob"));

  m.def(
      "decompress_into",
      [](py::buffer blob, py::buffer out, std::shared_ptr<ThreadPool> pool, std::optional<std::string> isa) {
        py::buffer_info in = blob.request();
        py::buffer_info dst = out.request(true);
        const std::optional<Isa> path = isa_argument(isa);
        py::gil_scoped_release release;
        decompress(in.ptr, static_cast<std::size_t>(in.size * in.itemsize), dst.ptr,
                   static_cast<std::size_t>(dst.size * dst.itemsize), pool_or_null(pool), path);
      },
      py::arg("blob"), py::arg("out"), py::arg("pool") = nullptr, py::arg("isa") = py::none());
}

}  // namespace zipmoe::bindings
