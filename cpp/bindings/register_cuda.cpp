// GPU decoding, for tests and diagnostics: zipmoe._core.cuda_available() and
// zipmoe._core.cuda_decompress(blob). Compiled in every build; the GPU paths
// exist only when zipmoe_cuda was built (ZIPMOE_HAVE_CUDA).
#include <pybind11/numpy.h>

#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/status.h"
#include "zipmoe/codec.h"
#include "zipmoe/error.h"
#include "zipmoe/types.h"

#if defined(ZIPMOE_HAVE_CUDA)
#include "cuda/cuda_decode.h"
#endif

namespace zipmoe::bindings {

namespace {

bool gpu_available() {
#if defined(ZIPMOE_HAVE_CUDA)
  return cuda::cuda_available();
#else
  return false;
#endif
}

py::dtype numpy_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF16: return py::dtype("float16");
    case DType::kF32: return py::dtype::of<float>();
    case DType::kU8: return py::dtype::of<std::uint8_t>();
    default: return py::dtype::of<std::uint16_t>();  // BF16 bit patterns, as zipmoe.decompress returns them
  }
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_available", &gpu_available,
        "True when this build has the CUDA kernels and a CUDA GPU is usable by this process.");
  m.def(
      "cuda_decompress",
      [](py::buffer blob) -> py::array {
        py::buffer_info in = blob.request();
        const std::size_t size = static_cast<std::size_t>(in.size * in.itemsize);
        const BlobInfo info = read_blob_info(in.ptr, size);
        std::vector<py::ssize_t> shape(info.shape.begin(), info.shape.end());
        py::array out(numpy_dtype(info.dtype), shape);
#if defined(ZIPMOE_HAVE_CUDA)
        if (!cuda::cuda_available()) throw_if_error(Status::Unsupported("no CUDA GPU on this machine"));
        const std::size_t out_bytes = static_cast<std::size_t>(info.num_elements * dtype_size(info.dtype));
        void* dst = out.mutable_data();
        Status st;
        {
          py::gil_scoped_release release;
          st = cuda::cuda_decompress_blob(in.ptr, size, dst, out_bytes);
        }
        throw_if_error(st);
#else
        throw_if_error(Status::Unsupported("this build of zipmoe has no CUDA kernels"));
#endif
        return out;
      },
      py::arg("blob"),
      "Decodes a blob on the GPU (test helper: upload, decode, download). BF16 comes back as uint16.");
}

}  // namespace zipmoe::bindings
