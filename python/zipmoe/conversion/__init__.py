"""``zipmoe.conversion``: Hugging Face safetensors folders and GGUF files to .zmoe containers, and back.

The package behind the functions ``zipmoe.convert``, ``zipmoe.export`` and ``zipmoe.verify_against``.

- :func:`convert` plans every canonical tensor from the headers (failing before
  any output on a bad input), then streams tensor by tensor into a container.
- :func:`export` rebuilds the exact source files; :func:`verify_against` checks
  a container tensor by tensor against a source.
- :func:`dequantize_gguf` (``zipmoe dequantize``) turns a quantized GGUF into the
  BF16 GGUF that :func:`convert` takes.
- :mod:`.outputs` is where every output goes: never over an input, whole or not
  at all, no temporaries left behind by signals.
- :mod:`.registry` maps source tensor names to canonical names and roles per
  architecture, and lists the canonical tensors a config implies
  (:func:`expected_tensors`).

docs/FORMAT.md ("Metadata", "Conversion") specifies the metadata and the mapping.
"""

from .converter import CODECS, ConversionWarning, convert, prepare  # noqa: F401
from .dequantize import dequantize_gguf  # noqa: F401
from .exporter import EXPORT_FORMATS, export, verify_against  # noqa: F401
from .registry import (  # noqa: F401
    SUPPORTED_ARCHITECTURES,
    ExpectedTensor,
    expected_tensors,
    extra_layer_prefixes,
    model_dims,
    role_of,
)

__all__ = ["convert", "export", "verify_against", "dequantize_gguf", "prepare", "ConversionWarning", "expected_tensors",
           "extra_layer_prefixes", "model_dims", "role_of", "ExpectedTensor", "SUPPORTED_ARCHITECTURES", "CODECS",
           "EXPORT_FORMATS"]
