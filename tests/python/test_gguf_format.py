"""The GGUF header reader stays hand-written (see gguf_format.py): it refuses a crafted header at once, where
gguf.GGUFReader loops over every claimed array item."""

import struct
import time

import pytest

import zipmoe
from zipmoe.conversion import gguf_format


@pytest.mark.parametrize("item_type", [0, 8, 9])  # UINT8, STRING, ARRAY
def test_an_array_longer_than_the_file_is_refused_at_once(item_type, tmp_path):
    key = b"a.big"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    path = tmp_path / "crafted.gguf"
    path.write_bytes(header + struct.pack("<IQ", item_type, 2 ** 40) + b"\0" * 16)
    start = time.perf_counter()
    with pytest.raises(zipmoe.FormatError, match="claims 1099511627776 items"):
        gguf_format.read_gguf(str(path))
    assert time.perf_counter() - start < 1.0
