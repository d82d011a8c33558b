// Low-level entry points for benchmarks and tests (zipmoe._core only; not part of
// the public Python API): plane split/merge and repeated decoding of one blob.
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <optional>

#include "bindings/arguments.h"
#include "bindings/bindings.h"
#include "codec/coded_plane.h"
#include "codec/planes.h"
#include "common/bytes.h"
#include "common/checksum.h"
#include "common/cpu_features.h"
#include "zipmoe/codec.h"

namespace zipmoe::bindings {

namespace {

// The path asked for, or the process default.
Isa isa_or_default(const std::optional<std::string>& name) {
  const std::optional<Isa> isa = isa_argument(name);
  return isa ? *isa : default_isa();
}

std::size_t byte_size(const py::buffer_info& b) { return static_cast<std::size_t>(b.size * b.itemsize); }

}  // namespace

void register_tools(py::module_& m) {
  m.def(
      "split_planes",
      [](py::buffer elements, const std::string& dtype_name_, py::buffer symbols, py::buffer sm) {
        const DType dtype = dtype_argument(dtype_name_);
        py::buffer_info in = elements.request(), sym = symbols.request(true), s = sm.request(true);
        const std::size_t n = byte_size(in) / dtype_size(dtype);
        if (byte_size(sym) != n || byte_size(s) != n * codec::sm_bytes_per_element(dtype)) {
          throw InvalidArgumentError("split_planes: output sizes do not match");
        }
        py::gil_scoped_release release;
        codec::split_planes(dtype, in.ptr, n, static_cast<std::uint8_t*>(sym.ptr), static_cast<std::uint8_t*>(s.ptr));
      },
      "Splits elements into the symbol plane and the sign/mantissa plane (outputs preallocated).");

  m.def(
      "merge_planes",
      [](py::buffer symbols, py::buffer sm, const std::string& dtype_name_, py::buffer out,
         std::optional<std::string> isa) {
        const DType dtype = dtype_argument(dtype_name_);
        const Isa path = isa_or_default(isa);
        py::buffer_info sym = symbols.request(), s = sm.request(), o = out.request(true);
        const std::size_t n = byte_size(sym);
        if (byte_size(s) != n * codec::sm_bytes_per_element(dtype) || byte_size(o) != n * dtype_size(dtype)) {
          throw InvalidArgumentError("merge_planes: sizes do not match");
        }
        py::gil_scoped_release release;
        const auto target = codec::make_merge_target(dtype, static_cast<const std::uint8_t*>(s.ptr), n, o.ptr);
        codec::merge_into(path, target, 0, static_cast<const std::uint8_t*>(sym.ptr), n);
      },
      py::arg("symbols"), py::arg("sm"), py::arg("dtype"), py::arg("out"), py::arg("isa") = py::none(),
      "Merges a symbol plane and a sign/mantissa plane into elements (the inverse of split_planes).");

  m.def(
      "time_decode",
      [](py::buffer blob, py::buffer out, std::shared_ptr<ThreadPool> pool, std::optional<std::string> isa,
         int repeats, bool verify_checksum) {
        const Isa path = isa_or_default(isa);
        py::buffer_info b = blob.request(), o = out.request(true);
        const BlobInfo info = read_blob_info(b.ptr, byte_size(b));
        if (byte_size(o) != info.num_elements * dtype_size(info.dtype)) {
          throw InvalidArgumentError("time_decode: output size does not match the blob");
        }
        const std::uint8_t* bytes = static_cast<const std::uint8_t*>(b.ptr);
        const std::uint8_t* plane_bytes = bytes + 8 + 8 * info.shape.size() + 16;
        const std::uint8_t* sm = plane_bytes + info.coded_plane_bytes;
        std::vector<double> seconds;
        py::gil_scoped_release release;
        codec::CodedPlane plane;
        throw_if_error(codec::CodedPlane::parse(plane_bytes, info.coded_plane_bytes, &plane));
        const auto target =
            codec::make_merge_target(info.dtype, sm, static_cast<std::size_t>(info.num_elements), o.ptr);
        for (int r = 0; r < repeats; ++r) {
          const auto start = std::chrono::steady_clock::now();
          if (verify_checksum) {
            // As decompress() does it: checksummed piece by piece during the decode.
            codec::CodedPlane::Checksums sums;
            throw_if_error(plane.decode_checksummed(target, pool.get(), path, &sums));
            std::uint32_t crc = crc32c(bytes, static_cast<std::size_t>(plane_bytes - bytes));
            crc = crc32c_combine(crc, sums.coded_plane, info.coded_plane_bytes);
            crc = crc32c_combine(crc, sums.sm_plane, info.sm_plane_bytes);
            if (crc != load_le32(bytes + byte_size(b) - 4)) throw ChecksumError("blob checksum mismatch");
          } else {
            throw_if_error(plane.decode(target, pool.get(), path));
          }
          seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        }
        return seconds;
      },
      py::arg("blob"), py::arg("out"), py::arg("pool") = nullptr, py::arg("isa") = py::none(), py::arg("repeats") = 5,
      py::arg("verify_checksum") = false,
      "Decodes a blob `repeats` times into a preallocated buffer; returns the seconds of each run "
      "(the plane is parsed once, as a cache holding it would).");
}

}  // namespace zipmoe::bindings
