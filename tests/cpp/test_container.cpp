// The .zmoe container: round trips, I/O modes, alignment, lookup, atomic
// writes, and hostile files (truncation, bit flips, crafted fields, garbage).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/bytes.h"
#include "common/checksum.h"
#include "common/cpu_features.h"
#include "common/file_io.h"
#include "format/layout.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/container.h"

using namespace zipmoe;

namespace {

// A fresh directory under $TMPDIR (or /tmp), removed with its files at the end.
struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/zipmoe-container-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = buf.data();
  }
  ~TempDir() {
    for (const std::string& name : entries()) ::unlink((path + "/" + name).c_str());
    ::rmdir(path.c_str());
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    if (DIR* d = ::opendir(path.c_str())) {
      while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
      }
      ::closedir(d);
    }
    return names;
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::vector<std::uint8_t> load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void save(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct Sample {
  std::string name;
  DType dtype;
  std::vector<std::uint64_t> shape;
  TensorRole role;
  Codec codec;
  std::vector<std::uint8_t> data;
};

std::vector<Sample> make_samples() {
  std::vector<Sample> samples;
  const std::vector<std::vector<std::uint64_t>> shapes = {{}, {0}, {1}, {7, 3}, {4096}, {0, 5}, {64, 1501}};
  std::uint32_t seed = 1;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (std::size_t s = 0; s < shapes.size(); ++s) {
      for (Codec codec : {Codec::kAuto, Codec::kRaw}) {
        Sample x;
        x.dtype = dtype;
        x.shape = shapes[s];
        x.codec = codec;
        std::uint64_t n = 1;
        for (auto d : x.shape) n *= d;
        x.data = ztest::make_weights(dtype, static_cast<std::size_t>(n), ++seed);
        const bool expert = (seed % 2) == 0;
        x.name = std::string(expert ? "model.layers.3.mlp.experts." : "model.dense.") + dtype_name(dtype) + "." +
                 std::to_string(s) + "." + codec_name(codec);
        if (expert) x.role = TensorRole::expert_projection(seed / 7, seed, seed % 3 == 0 ? "gate" : "down");
        samples.push_back(std::move(x));
      }
    }
  }
  // An all-equal plane (the constant codec) and a wide one.
  Sample c;
  c.name = "constant";
  c.dtype = DType::kBF16;
  c.shape = {5000};
  c.codec = Codec::kAuto;
  c.data.assign(10000, 0);
  for (std::size_t i = 0; i < 5000; ++i) c.data[2 * i] = static_cast<std::uint8_t>(i), c.data[2 * i + 1] = 0x3c;
  samples.push_back(std::move(c));
  return samples;
}

const std::string kMetadata = R"({"architecture":"qwen2_moe","name":"模型 ✓ café 🚀","layers":2})";

void write_samples(const std::string& path, const std::vector<Sample>& samples, ThreadPool* pool = nullptr,
                   std::uint32_t segment_symbols = 1000) {
  ContainerWriterOptions options;
  options.segment_symbols = segment_symbols;
  ContainerWriter writer(path, kMetadata, options);
  for (const Sample& s : samples) writer.add_tensor(s.name, s.data.data(), s.dtype, s.shape, s.role, s.codec, pool);
  writer.finish();
}

// Offsets of the header fields, as the layout defines them.
struct RawHeader {
  std::uint64_t index_offset, index_size, chunk_table_offset, chunk_table_size, metadata_offset, metadata_size;
};

RawHeader raw_header(const std::vector<std::uint8_t>& f) {
  return {load_le64(&f[format::kOffIndexOffset]),      load_le64(&f[format::kOffIndexSize]),
          load_le64(&f[format::kOffChunkTableOffset]), load_le64(&f[format::kOffChunkTableSize]),
          load_le64(&f[format::kOffMetadataOffset]),   load_le64(&f[format::kOffMetadataSize])};
}

// Recomputes the section and header checksums so that a crafted change reaches
// the field validation instead of stopping at a checksum.
void fix_checksums(std::vector<std::uint8_t>* f) {
  std::uint8_t* p = f->data();
  const RawHeader h = raw_header(*f);
  auto section_crc = [&](std::uint64_t offset, std::uint64_t size) {
    return offset <= f->size() && size <= f->size() - offset ? crc32c(p + offset, static_cast<std::size_t>(size)) : 0u;
  };
  store_le32(p + format::kOffIndexCrc, section_crc(h.index_offset, h.index_size));
  store_le32(p + format::kOffChunkTableCrc, section_crc(h.chunk_table_offset, h.chunk_table_size));
  store_le32(p + format::kOffMetadataCrc, section_crc(h.metadata_offset, h.metadata_size));
  store_le32(p + format::kHeaderChecksumOffset, crc32c(p, format::kHeaderChecksumOffset));
}

// Opens `path` and decodes every tensor; returns the error message, or "" when
// everything read cleanly. Any exception other than a zipmoe::Error fails the test.
std::string open_and_decode_all(const std::string& path, IoMode mode = IoMode::kPread) {
  try {
    ContainerReader reader = ContainerReader::open(path, mode);
    for (const TensorInfo& t : reader.tensors()) {
      std::vector<std::uint8_t> out(static_cast<std::size_t>(t.decoded_bytes()));
      reader.decode_tensor(t, out.data(), out.size());
    }
    return "";
  } catch (const FormatError& e) {
    return std::string("FormatError: ") + e.what();
  } catch (const IoError& e) {
    return std::string("IoError: ") + e.what();
  }
}

std::string open_error(const std::string& path) {
  try {
    ContainerReader::open(path);
  } catch (const ChecksumError& e) {
    return std::string("ChecksumError: ") + e.what();
  } catch (const FormatError& e) {
    return std::string("FormatError: ") + e.what();
  }
  return "";
}

}  // namespace

ZTEST(container_round_trip_every_dtype_role_codec_and_io_mode) {
  TempDir dir;
  const std::string path = dir.file("model.zmoe");
  const std::vector<Sample> samples = make_samples();
  ThreadPool pool(3);
  write_samples(path, samples, &pool);
  ZCHECK(exists(path));
  ZCHECK_EQ(dir.entries().size(), std::size_t(1));  // no temporary file left behind

  std::map<int, std::vector<std::vector<std::uint8_t>>> chunk_bytes_by_mode;
  for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    ContainerReader reader = ContainerReader::open(path, mode);
    ZCHECK_EQ(reader.metadata(), kMetadata);
    ZCHECK_EQ(reader.version_major(), kContainerMajorVersion);
    ZCHECK_EQ(reader.file_size() % kContainerAlignment, std::uint64_t(0));
    ZCHECK_EQ(reader.tensors().size(), samples.size());
    ZCHECK_EQ(reader.chunks().size(), 2 * samples.size());
    if (mode == IoMode::kDirect) std::fprintf(stderr, "  direct I/O active: %d\n", int(reader.direct_io_active()));
    for (const ChunkInfo& c : reader.chunks()) ZCHECK_EQ(c.offset % kContainerAlignment, std::uint64_t(0));
    for (std::size_t i = 0; i < samples.size(); ++i) {
      const Sample& s = samples[i];
      const TensorInfo* t = reader.find(s.name);
      ZCHECK(t != nullptr);
      if (!t) continue;
      ZCHECK_EQ(t->index, std::uint32_t(i));
      ZCHECK(t->dtype == s.dtype);
      ZCHECK(t->shape == s.shape);
      ZCHECK(t->role.kind == s.role.kind);
      ZCHECK_EQ(t->role.layer, s.role.layer);
      ZCHECK_EQ(t->role.expert, s.role.expert);
      ZCHECK_EQ(t->role.projection, s.role.projection);
      ZCHECK(t->exponent_entropy >= 0.0f && t->exponent_entropy <= 8.0f);
      const ChunkInfo& ec = reader.chunks()[t->exponent_chunk];
      const ChunkInfo& sc = reader.chunks()[t->sm_chunk];
      ZCHECK(ec.kind == ChunkKind::kExponentPlane);
      ZCHECK(sc.kind == ChunkKind::kSignMantissaPlane);
      if (s.codec == Codec::kRaw && t->num_elements > 0) ZCHECK(ec.codec == Codec::kRaw);
      for (Isa isa : supported_isas()) {
        std::vector<std::uint8_t> out(s.data.size() + 1, 0xEE);  // +1: a canary past the end
        reader.decode_tensor(*t, out.data(), s.data.size(), &pool, isa);
        ZCHECK_EQ(out.back(), std::uint8_t(0xEE));
        out.pop_back();
        ZCHECK(out == s.data);
      }
      // Chunks read on their own, kept, and decoded later give the same bits.
      AlignedBuffer eb(reader.chunk_buffer_size(t->exponent_chunk));
      AlignedBuffer sb(reader.chunk_buffer_size(t->sm_chunk));
      reader.read_chunk(t->exponent_chunk, eb.data(), eb.size());
      reader.read_chunk(t->sm_chunk, sb.data(), sb.size());
      std::vector<std::uint8_t> out(s.data.size());
      reader.decode_chunks(*t, eb.data(), static_cast<std::size_t>(ec.stored_size), sb.data(),
                           static_cast<std::size_t>(sc.stored_size), out.data(), out.size());
      ZCHECK(out == s.data);
    }
    std::vector<std::vector<std::uint8_t>> all;
    for (const ChunkInfo& c : reader.chunks()) {
      std::vector<std::uint8_t> buf(reader.chunk_buffer_size(c.index) + 1);  // unaligned on purpose for kDirect
      reader.read_chunk(c.index, buf.data() + 1, buf.size() - 1);
      all.emplace_back(buf.begin() + 1, buf.begin() + 1 + static_cast<std::ptrdiff_t>(c.stored_size));
    }
    chunk_bytes_by_mode[static_cast<int>(mode)] = std::move(all);
  }
  ZCHECK(chunk_bytes_by_mode[0] == chunk_bytes_by_mode[1]);
  ZCHECK(chunk_bytes_by_mode[0] == chunk_bytes_by_mode[2]);
}

ZTEST(container_stores_raw_bytes_as_u8) {
  TempDir dir;
  const std::string path = dir.file("bytes.zmoe");
  std::vector<std::uint8_t> ids(8 * 512, 0);  // int64 position ids 0..511, little-endian
  for (std::size_t i = 0; i < 512; ++i) ids[8 * i] = static_cast<std::uint8_t>(i), ids[8 * i + 1] = std::uint8_t(i >> 8);
  std::vector<std::uint8_t> noise(10000);
  std::mt19937 rng(7);
  for (std::uint8_t& b : noise) b = static_cast<std::uint8_t>(rng());
  const std::vector<std::uint8_t> mask = {1, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1};
  const std::vector<std::uint8_t> scalar = {42};
  const std::vector<std::uint16_t> bf16(64, 0x3F80);
  {
    ContainerWriterOptions options;
    options.segment_symbols = 1000;
    ContainerWriter writer(path, "{}", options);
    writer.add_tensor("ids", ids.data(), DType::kU8, {1, 512, 8});
    writer.add_tensor("noise", noise.data(), DType::kU8, {noise.size()}, TensorRole(), Codec::kHuffman);
    writer.add_tensor("mask", mask.data(), DType::kU8, {3, 5}, TensorRole(), Codec::kRans);
    writer.add_tensor("scalar", scalar.data(), DType::kU8, {});
    writer.add_tensor("empty", nullptr, DType::kU8, {0});
    writer.add_tensor("weight", bf16.data(), DType::kBF16, {64});
    writer.finish();
  }
  const std::map<std::string, const std::vector<std::uint8_t>*> expected = {
      {"ids", &ids}, {"noise", &noise}, {"mask", &mask}, {"scalar", &scalar}};
  for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    ContainerReader reader = ContainerReader::open(path, mode);
    ZCHECK_EQ(reader.version_minor(), kContainerMinorVersionWithBytes);  // a dtype 1.0 readers do not know
    for (const auto& [name, bytes] : expected) {
      const TensorInfo* t = reader.find(name);
      ZCHECK(t != nullptr && t->dtype == DType::kU8 && t->num_elements == bytes->size());
      ZCHECK_EQ(reader.chunks()[t->sm_chunk].stored_size, std::uint64_t(0));  // the bytes are the symbols
      for (Isa isa : supported_isas()) {
        std::vector<std::uint8_t> out(bytes->size() + 1, 0xEE);
        reader.decode_tensor(*t, out.data(), bytes->size(), nullptr, isa);
        ZCHECK_EQ(out.back(), std::uint8_t(0xEE));
        out.pop_back();
        ZCHECK(out == *bytes);
      }
    }
    ZCHECK(reader.find("ids")->shape == std::vector<std::uint64_t>({1, 512, 8}));
    ZCHECK(reader.find("scalar")->shape.empty());
    // position ids are mostly zero bytes: coded well below their raw size; noise falls back to raw
    ZCHECK(reader.chunks()[reader.find("ids")->exponent_chunk].stored_size < ids.size() / 2);
  }
  ZCHECK_EQ(open_and_decode_all(path), "");
  DType dtype;
  ZCHECK(parse_dtype("uint8", &dtype) && dtype == DType::kU8 && dtype_size(dtype) == 1 && !is_float_dtype(dtype));
}

ZTEST(container_output_does_not_depend_on_threads) {
  TempDir dir;
  const std::vector<Sample> samples = make_samples();
  write_samples(dir.file("a.zmoe"), samples, nullptr);
  ThreadPool pool(2);
  write_samples(dir.file("b.zmoe"), samples, &pool);
  ZCHECK(load(dir.file("a.zmoe")) == load(dir.file("b.zmoe")));
}

ZTEST(container_empty_and_metadata_only) {
  TempDir dir;
  const std::string path = dir.file("empty.zmoe");
  {
    ContainerWriter writer(path, "");
    writer.finish();
  }
  ContainerReader reader = ContainerReader::open(path);
  ZCHECK(reader.tensors().empty());
  ZCHECK(reader.metadata().empty());
  ZCHECK_EQ(reader.file_size(), std::uint64_t(4096));  // the header page alone
  ZCHECK(reader.find("x") == nullptr);
  ZCHECK(reader.find_expert(0, 0, "up") == nullptr);
}

ZTEST(container_find_expert) {
  TempDir dir;
  const std::string path = dir.file("experts.zmoe");
  const char* projections[] = {"gate", "up", "down"};
  {
    ContainerWriter writer(path, "{}");
    const std::vector<std::uint8_t> w = ztest::make_weights(DType::kBF16, 64, 5);
    writer.add_tensor("embed", w.data(), DType::kBF16, {8, 8});
    for (std::uint32_t layer = 0; layer < 3; ++layer) {
      for (std::uint32_t expert = 0; expert < 5; ++expert) {
        for (const char* p : projections) {
          const std::string name = "l" + std::to_string(layer) + ".e" + std::to_string(expert) + "." + p;
          writer.add_tensor(name, w.data(), DType::kBF16, {64}, TensorRole::expert_projection(layer, expert, p));
        }
      }
    }
    // Layer and expert ids are full 32-bit values.
    writer.add_tensor("far", w.data(), DType::kBF16, {64},
                      TensorRole::expert_projection(0xFFFFFFFFu, 0xFFFFFFFEu, "up"));
    writer.finish();
  }
  ContainerReader reader = ContainerReader::open(path);
  for (std::uint32_t layer = 0; layer < 3; ++layer) {
    for (std::uint32_t expert = 0; expert < 5; ++expert) {
      for (const char* p : projections) {
        const TensorInfo* t = reader.find_expert(layer, expert, p);
        ZCHECK(t != nullptr);
        if (t) ZCHECK_EQ(t->name, "l" + std::to_string(layer) + ".e" + std::to_string(expert) + "." + p);
      }
    }
  }
  ZCHECK(reader.find_expert(3, 0, "gate") == nullptr);
  ZCHECK(reader.find_expert(0, 5, "gate") == nullptr);
  ZCHECK(reader.find_expert(0, 0, "gate_proj") == nullptr);
  ZCHECK(reader.find_expert(0, 0, "") == nullptr);
  const TensorInfo* far = reader.find_expert(0xFFFFFFFFu, 0xFFFFFFFEu, "up");
  ZCHECK(far != nullptr && far->name == "far");
  ZCHECK(reader.find("embed") != nullptr && !reader.find("embed")->role.is_expert());
}

ZTEST(container_writer_rejects_bad_input) {
  TempDir dir;
  const std::string path = dir.file("bad.zmoe");
  const std::vector<std::uint8_t> w = ztest::make_weights(DType::kF32, 16, 3);
  {
    ContainerWriter writer(path, "{}");
    writer.add_tensor("a", w.data(), DType::kF32, {16}, TensorRole::expert_projection(1, 2, "up"));
    ZCHECK_THROWS(writer.add_tensor("a", w.data(), DType::kF32, {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("b", w.data(), DType::kF32, {16}, TensorRole::expert_projection(1, 2, "up")),
                  InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("", w.data(), DType::kF32, {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor(std::string(1025, 'x'), w.data(), DType::kF32, {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("bad\xff utf8", w.data(), DType::kF32, {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor(std::string("nul\0in", 6), w.data(), DType::kF32, {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("c", w.data(), DType::kF32, {1, 1, 1, 1, 1, 1, 1, 1, 16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("c", nullptr, DType::kF32, {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("c", w.data(), static_cast<DType>(9), {16}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("c", w.data(), DType::kF32, {1u << 30, 1u << 30}), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("c", w.data(), DType::kF32, {16}, TensorRole(), Codec::kConstant),
                  InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("c", w.data(), DType::kF32, {16}, TensorRole::expert_projection(0, 0, "")),
                  InvalidArgumentError);
    ZCHECK_THROWS(
        writer.add_tensor("c", w.data(), DType::kF32, {16}, TensorRole::expert_projection(0, 0, std::string(65, 'p'))),
        InvalidArgumentError);
    ZCHECK_THROWS(writer.set_metadata("\xc3\x28"), InvalidArgumentError);
    // Rejected calls leave the writer usable.
    writer.add_tensor("c", w.data(), DType::kF32, {4, 4}, TensorRole::expert_projection(1, 2, "down"));
    ZCHECK_EQ(writer.num_tensors(), std::size_t(2));
    writer.finish();
    ZCHECK_THROWS(writer.finish(), InvalidArgumentError);
    ZCHECK_THROWS(writer.add_tensor("d", w.data(), DType::kF32, {16}), InvalidArgumentError);
  }
  ZCHECK_EQ(open_and_decode_all(path), "");
  ZCHECK_THROWS(ContainerWriter(dir.file("x.zmoe"), "\xff"), InvalidArgumentError);
  ZCHECK_THROWS(ContainerWriter(dir.path + "/missing-dir/x.zmoe", "{}"), IoError);
}

ZTEST(container_writer_is_atomic) {
  TempDir dir;
  const std::string path = dir.file("atomic.zmoe");
  const std::vector<std::uint8_t> w = ztest::make_weights(DType::kBF16, 10000, 8);
  // Abandoned by an exception in the middle of writing.
  try {
    ContainerWriter writer(path, "{}");
    writer.add_tensor("a", w.data(), DType::kBF16, {10000});
    ZCHECK(dir.entries().size() <= std::size_t(1));  // the temporary file, unless it is unnamed (O_TMPFILE)
    throw std::runtime_error("conversion failed");
  } catch (const std::runtime_error&) {
  }
  ZCHECK(!exists(path));
  ZCHECK(dir.entries().empty());
  // Explicitly discarded.
  {
    ContainerWriter writer(path, "{}");
    writer.add_tensor("a", w.data(), DType::kBF16, {10000});
    writer.discard();
    ZCHECK(dir.entries().empty());
    ZCHECK_THROWS(writer.finish(), InvalidArgumentError);
  }
  // An existing file survives an abandoned rewrite, and is replaced by a finished one.
  save(path, {1, 2, 3});
  {
    ContainerWriter writer(path, "{}");
    writer.add_tensor("a", w.data(), DType::kBF16, {10000});
  }
  ZCHECK(load(path) == std::vector<std::uint8_t>({1, 2, 3}));
  ZCHECK_EQ(dir.entries().size(), std::size_t(1));
  {
    ContainerWriter writer(path, "{}");
    writer.add_tensor("a", w.data(), DType::kBF16, {10000});
    writer.finish();
  }
  ZCHECK_EQ(open_and_decode_all(path), "");
  ZCHECK_EQ(dir.entries().size(), std::size_t(1));
}

ZTEST(container_rejects_truncation_at_every_length) {
  TempDir dir;
  const std::string path = dir.file("t.zmoe");
  write_samples(path, make_samples());
  const std::vector<std::uint8_t> full = load(path);
  std::vector<std::size_t> lengths = {0, 1, 7, 8, 9, 100, 4091, 4092, 4095, 4096, 4097, 8191, 8192};
  for (std::size_t len = 8192; len < full.size(); len += 4093) lengths.push_back(len);
  for (std::size_t back = 1; back <= 3 * 4096 + 1; back = back * 2 + 1) lengths.push_back(full.size() - back);
  const std::string cut = dir.file("cut.zmoe");
  for (std::size_t len : lengths) {
    save(cut, std::vector<std::uint8_t>(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len)));
    const std::string err = open_and_decode_all(cut);
    if (err.empty()) std::fprintf(stderr, "  length %zu opened cleanly\n", len);
    ZCHECK(contains(err, "FormatError"));
    ZCHECK(contains(err, cut));
  }
  // A file extended past its recorded size is rejected too.
  std::vector<std::uint8_t> longer = full;
  longer.resize(full.size() + 4096);
  save(cut, longer);
  ZCHECK(contains(open_error(cut), "extended"));
}

ZTEST(container_detects_bit_flips_everywhere) {
  TempDir dir;
  const std::string path = dir.file("f.zmoe");
  write_samples(path, make_samples());
  const std::vector<std::uint8_t> full = load(path);
  const RawHeader h = raw_header(full);
  ContainerReader clean = ContainerReader::open(path);
  const std::string flipped = dir.file("flipped.zmoe");
  auto flip_and_check = [&](std::size_t at, const char* expected_substring) {
    std::vector<std::uint8_t> f = full;
    f[at] ^= static_cast<std::uint8_t>(1u << (at % 8));
    save(flipped, f);
    const std::string err = open_and_decode_all(flipped);
    if (!contains(err, expected_substring)) std::fprintf(stderr, "  byte %zu: '%s'\n", at, err.c_str());
    ZCHECK(contains(err, expected_substring));
    ZCHECK(contains(err, flipped));
  };
  for (std::size_t at = 0; at < 128; ++at) flip_and_check(at, "Error");  // magic/version: FormatError, rest: checksum
  for (std::size_t at = 128; at < 4096; at += 97) flip_and_check(at, "header checksum mismatch");
  flip_and_check(4095, "header checksum mismatch");
  for (std::uint64_t at = h.index_offset; at < h.index_offset + h.index_size; at += 37) {
    flip_and_check(static_cast<std::size_t>(at), "tensor index checksum mismatch");
  }
  for (std::uint64_t at = h.chunk_table_offset; at < h.chunk_table_offset + h.chunk_table_size; at += 13) {
    flip_and_check(static_cast<std::size_t>(at), "chunk table checksum mismatch");
  }
  for (std::uint64_t at = h.metadata_offset; at < h.metadata_offset + h.metadata_size; at += 5) {
    flip_and_check(static_cast<std::size_t>(at), "metadata checksum mismatch");
  }
  // Chunk bytes: the error names the file, the tensor and the chunk.
  for (const ChunkInfo& c : clean.chunks()) {
    if (c.stored_size == 0) continue;
    const TensorInfo& t = clean.tensors()[c.tensor];
    for (std::uint64_t at : {c.offset, c.offset + c.stored_size / 2, c.offset + c.stored_size - 1}) {
      std::vector<std::uint8_t> f = full;
      f[static_cast<std::size_t>(at)] ^= 0x10;
      save(flipped, f);
      for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
        const std::string err = open_and_decode_all(flipped, mode);
        ZCHECK(contains(err, "checksum mismatch"));
        ZCHECK(contains(err, "'" + t.name + "'"));
        ZCHECK(contains(err, "chunk " + std::to_string(c.index) + " (" + chunk_kind_name(c.kind) + ")"));
      }
      ContainerReader reader = ContainerReader::open(flipped);
      AlignedBuffer buf(reader.chunk_buffer_size(c.index));
      ZCHECK_THROWS(reader.read_chunk(c.index, buf.data(), buf.size()), ChecksumError);
    }
  }
}

ZTEST(container_rejects_crafted_fields) {
  TempDir dir;
  const std::string path = dir.file("c.zmoe");
  write_samples(path, make_samples());
  const std::vector<std::uint8_t> full = load(path);
  const RawHeader h = raw_header(full);
  ContainerReader clean = ContainerReader::open(path);
  const std::string crafted = dir.file("crafted.zmoe");
  const std::size_t index0 = static_cast<std::size_t>(h.index_offset);
  const std::size_t table0 = static_cast<std::size_t>(h.chunk_table_offset);

  struct Case {
    const char* expected;
    std::function<void(std::vector<std::uint8_t>&)> mutate;
    bool fix = true;
  };
  using Bytes = std::vector<std::uint8_t>;
  auto set64 = [](std::size_t at, std::uint64_t v) { return [=](Bytes& f) { store_le64(&f[at], v); }; };
  auto set32 = [](std::size_t at, std::uint32_t v) { return [=](Bytes& f) { store_le32(&f[at], v); }; };
  auto set16 = [](std::size_t at, std::uint16_t v) { return [=](Bytes& f) { store_le16(&f[at], v); }; };
  auto set8 = [](std::size_t at, std::uint8_t v) { return [=](Bytes& f) { f[at] = v; }; };
  const std::uint64_t kHuge = std::uint64_t(1) << 62;
  std::vector<Case> cases = {
      {"bad magic", set8(0, 'X'), false},
      {"version 2.0 is not supported (this build reads version 1.x", set16(format::kOffMajor, 2), false},
      {"version 0.3 is not supported", [](Bytes& f) { store_le16(&f[8], 0), store_le16(&f[10], 3); }, false},
      {"header size", set32(format::kOffHeaderSize, 8192)},
      {"alignment", set32(format::kOffAlignment, 4097)},
      {"alignment", set32(format::kOffAlignment, 2048)},
      {"file of", set64(format::kOffFileSize, full.size() + 4096)},
      {"file of", set64(format::kOffFileSize, kHuge)},
      {"tensor count", set64(format::kOffTensorCount, kHuge)},
      {"chunk count", set64(format::kOffChunkCount, kHuge)},
      {"chunk count", set64(format::kOffTensorCount, 1)},
      {"outside the file", set64(format::kOffIndexOffset, kHuge)},
      {"outside the file", set64(format::kOffIndexSize, kHuge)},
      {"outside the file", set64(format::kOffIndexOffset, 0)},
      {"not a multiple", set64(format::kOffIndexOffset, h.index_offset + 1)},
      {"outside the file", set64(format::kOffMetadataSize, ~std::uint64_t(0))},
      {"outside the file", set64(format::kOffChunkTableOffset, ~std::uint64_t(0) - 4095)},
      {"does not end before", set64(format::kOffChunkTableOffset, h.index_offset)},
      {"does not end before", set64(format::kOffMetadataOffset, h.index_offset)},
      {"chunk table is", set64(format::kOffChunkTableSize, h.chunk_table_size - 40)},
      {"tensor index is", set64(format::kOffIndexSize, 7)},
      // Tensor index entry 0 (fixed part at index0).
      {"name length 0", set16(index0 + 0, 0)},
      {"name length 2000", set16(index0 + 0, 2000)},
      {"unknown dtype id 7", set8(index0 + 2, 7)},
      {"9 dimensions", set8(index0 + 3, 9)},
      {"unknown role 5", set8(index0 + 4, 5)},
      {"chunk 4000000000 does not exist", set32(index0 + 16, 4000000000u)},
      {"is not its sign/mantissa plane", set32(index0 + 20, 0)},
      {"exponent entropy", set32(index0 + 24, 0x7fc00000u)},
      {"exponent entropy", set32(index0 + 24, 0x41100000u)},  // 9.0
      // One byte of the zero padding after the index counted in: a tail no entry claims.
      {"bytes after its last entry", set64(format::kOffIndexSize, h.index_size + 1)},
      // Chunk table entry 0.
      {"unknown chunk kind 9", set8(table0 + 0, 9)},
      {"unknown codec id 200", set8(table0 + 1, 200)},
      {"sign/mantissa plane is stored raw", set8(table0 + 40 + 1, 1)},
      {"owner tensor 99999 does not exist", set32(table0 + 4, 99999)},
      {"belongs to tensor 1", set32(table0 + 4, 1)},
      {"not a multiple of 4096", set64(table0 + 8, 4097)},
      {"overlaps the header", set64(table0 + 8, 0)},
      {"runs past the chunk region", set64(table0 + 16, kHuge)},
      {"runs past the chunk region", set64(table0 + 8, kHuge)},
      {"decodes to", set64(table0 + 24, 12345)},
      {"decoded size", set64(table0 + 40 + 24, 3)},
      {"overlaps the header or the previous chunk", set64(table0 + 40 + 8, 4096)},
      {"metadata is not valid UTF-8", [&](std::vector<std::uint8_t>& f) { f[h.metadata_offset + 1] = 0xC0; }},
  };
  // A duplicate name: rename tensor 1 to tensor 0's name when both have names of one length.
  const auto& ts = clean.tensors();
  for (std::size_t j = 1; j < ts.size(); ++j) {
    if (ts[j].name.size() != ts[0].name.size()) continue;
    std::size_t entry = index0, target = 0;
    for (std::size_t i = 0; i <= j; ++i) {
      const std::size_t ndim = full[entry + 3];
      const std::size_t name_at = entry + 32 + 8 * ndim;
      if (i == j) target = name_at;
      entry = name_at + load_le16(&full[entry]) + full[entry + 5];
    }
    const std::string name0 = ts[0].name;
    cases.push_back({"appears twice", [=](std::vector<std::uint8_t>& f) {
                       std::memcpy(&f[target], name0.data(), name0.size());
                     }});
    break;
  }
  for (const Case& c : cases) {
    std::vector<std::uint8_t> f = full;
    c.mutate(f);
    if (c.fix) fix_checksums(&f);
    save(crafted, f);
    const std::string err = open_and_decode_all(crafted);
    if (!contains(err, c.expected)) std::fprintf(stderr, "  expected '%s', got '%s'\n", c.expected, err.c_str());
    ZCHECK(contains(err, c.expected));
    ZCHECK(contains(err, "FormatError"));
    ZCHECK(contains(err, crafted));
  }
}

ZTEST(container_survives_random_damage) {
  TempDir dir;
  const std::string path = dir.file("r.zmoe");
  std::vector<Sample> samples = make_samples();
  samples.resize(12);
  write_samples(path, samples, nullptr, 300);
  const std::vector<std::uint8_t> full = load(path);
  const RawHeader h = raw_header(full);
  const std::string damaged = dir.file("damaged.zmoe");
  std::mt19937_64 rng(42);
  int rejected = 0, clean = 0;
  for (int iteration = 0; iteration < 400; ++iteration) {
    std::vector<std::uint8_t> f = full;
    const int kind = iteration % 4;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) {
      std::size_t at;
      if (kind == 0) {
        at = rng() % 128;  // header fields
      } else if (kind == 1) {
        // A byte of the index or of the chunk table.
        const std::uint64_t k = rng() % (h.index_size + h.chunk_table_size);
        at = static_cast<std::size_t>(k < h.index_size ? h.index_offset + k
                                                        : h.chunk_table_offset + (k - h.index_size));
      } else {
        at = rng() % f.size();
      }
      f[at] = kind == 3 ? static_cast<std::uint8_t>(rng()) : static_cast<std::uint8_t>(f[at] ^ (1u << (rng() % 8)));
    }
    // Half of the time, make the checksums agree so that the field checks and the decoders see the damage.
    if (iteration % 2 == 0) fix_checksums(&f);
    save(damaged, f);
    const std::string err = open_and_decode_all(damaged, static_cast<IoMode>(iteration % 3));
    (err.empty() ? clean : rejected)++;
  }
  std::fprintf(stderr, "  %d damaged files rejected, %d read cleanly (damage in padding or ignored fields)\n",
               rejected, clean);
  ZCHECK(rejected > 200);
  // Pure garbage of many sizes.
  for (std::size_t size : {std::size_t(4096), std::size_t(8192), std::size_t(3 * 4096 + 1)}) {
    std::vector<std::uint8_t> g(size);
    for (auto& b : g) b = static_cast<std::uint8_t>(rng());
    std::memcpy(g.data(), format::kMagic.data(), 8);
    store_le16(&g[8], 1);
    save(damaged, g);
    ZCHECK(contains(open_and_decode_all(damaged), "FormatError"));
    fix_checksums(&g);
    save(damaged, g);
    ZCHECK(contains(open_and_decode_all(damaged), "FormatError"));
  }
}

// Damaged exponent planes whose chunk checksums were recomputed: the coded
// plane framing and the decoders, reached through the container, must reject
// them (or decode them to some values) without crashing.
ZTEST(container_survives_damaged_planes_with_valid_checksums) {
  TempDir dir;
  const std::string path = dir.file("p.zmoe");
  std::vector<Sample> samples = make_samples();
  samples.resize(14);
  write_samples(path, samples, nullptr, 500);
  const std::vector<std::uint8_t> full = load(path);
  const RawHeader h = raw_header(full);
  std::vector<ChunkInfo> exponent_chunks;
  const ContainerReader original = ContainerReader::open(path);
  for (const ChunkInfo& c : original.chunks()) {
    if (c.kind == ChunkKind::kExponentPlane) exponent_chunks.push_back(c);
  }
  const std::string damaged = dir.file("damaged.zmoe");
  std::mt19937_64 rng(7);
  int rejected = 0;
  for (int iteration = 0; iteration < 300; ++iteration) {
    std::vector<std::uint8_t> f = full;
    const ChunkInfo& c = exponent_chunks[rng() % exponent_chunks.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the framing and tables at the front, sometimes anywhere in the payloads.
      const std::uint64_t span = iteration % 2 ? c.stored_size : std::min<std::uint64_t>(c.stored_size, 200);
      f[static_cast<std::size_t>(c.offset + rng() % span)] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
    }
    store_le32(&f[static_cast<std::size_t>(h.chunk_table_offset + c.index * 40 + 32)],
               crc32c(&f[static_cast<std::size_t>(c.offset)], static_cast<std::size_t>(c.stored_size)));
    fix_checksums(&f);
    save(damaged, f);
    const std::string err = open_and_decode_all(damaged, static_cast<IoMode>(iteration % 3));
    if (!err.empty()) {
      ++rejected;
      ZCHECK(contains(err, "FormatError"));
      ZCHECK(contains(err, "chunk " + std::to_string(c.index) + " (exponent plane)"));
    }
  }
  std::fprintf(stderr, "  %d of 300 damaged planes rejected\n", rejected);
  ZCHECK(rejected > 100);
}

ZTEST(container_reader_argument_errors) {
  TempDir dir;
  const std::string path = dir.file("a.zmoe");
  std::vector<Sample> samples = make_samples();
  write_samples(path, samples);
  ContainerReader reader = ContainerReader::open(path);
  const TensorInfo& t = reader.tensors().back();
  std::vector<std::uint8_t> small(16);
  ZCHECK_THROWS(reader.read_chunk(t.exponent_chunk, small.data(), small.size()), InvalidArgumentError);
  ZCHECK_THROWS(reader.read_chunk(99999, small.data(), small.size()), InvalidArgumentError);
  ZCHECK_THROWS(reader.decode_tensor(t, small.data(), small.size()), InvalidArgumentError);
  ZCHECK_THROWS(reader.decode_tensor("no such tensor", small.data(), small.size()), InvalidArgumentError);
  TensorInfo copy = t;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(t.decoded_bytes()));
  ZCHECK_THROWS(reader.decode_tensor(copy, out.data(), out.size()), InvalidArgumentError);
  try {
    ContainerReader::open(dir.file("missing.zmoe"));
    ZCHECK(false);
  } catch (const IoError& e) {
    ZCHECK(contains(e.what(), dir.file("missing.zmoe")));
    ZCHECK(contains(e.what(), "No such file"));
  }
  ZCHECK_THROWS(ContainerReader::open(dir.path), IoError);
  IoMode mode;
  ZCHECK(parse_io_mode("direct", &mode) && mode == IoMode::kDirect);
  ZCHECK(!parse_io_mode("DIRECTX", &mode));
}

ZTEST(file_io_reads_maps_and_writes_atomically) {
  TempDir dir;
  const std::string path = dir.file("data.bin");
  std::vector<std::uint8_t> bytes(3 * 4096 + 100);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7 + 1);
  {
    std::unique_ptr<AtomicOutputFile> out;
    throw_if_error(AtomicOutputFile::create(path, &out));
    // Unnamed where the filesystem allows it (nothing to leave behind if killed), else a recognizable name.
    ZCHECK(out->temp_path().empty() ? dir.entries().empty()
                                    : contains(out->temp_path(), path + ".zipmoe-tmp-" + std::to_string(::getpid())));
    throw_if_error(out->append(bytes.data(), 100));
    throw_if_error(out->pad_to(4096));
    ZCHECK_EQ(out->position(), std::uint64_t(4096));
    throw_if_error(out->append(bytes.data() + 4096, bytes.size() - 4096));
    throw_if_error(out->write_at(100, bytes.data() + 100, 4096 - 100));
    ZCHECK(!out->write_at(bytes.size() - 10, bytes.data(), 20).ok());
    ZCHECK(!exists(path));
    throw_if_error(out->commit());
    ZCHECK(!out->open());
  }
  ZCHECK(load(path) == bytes);
  ZCHECK_EQ(dir.entries().size(), std::size_t(1));

  for (bool direct : {false, true}) {
    std::unique_ptr<File> f;
    throw_if_error(File::open(path, direct, &f));
    ZCHECK_EQ(f->size(), std::uint64_t(bytes.size()));
    if (!direct) ZCHECK(!f->direct_active());
    std::vector<std::uint8_t> got(200);
    throw_if_error(f->read_at(4000, got.data(), got.size()));
    ZCHECK(std::equal(got.begin(), got.end(), bytes.begin() + 4000));
    AlignedBuffer aligned(2 * 4096);
    ZCHECK_EQ(reinterpret_cast<std::uintptr_t>(aligned.data()) % 4096, std::uintptr_t(0));
    throw_if_error(f->read_direct(4096, aligned.data(), aligned.size()));
    ZCHECK(std::equal(aligned.data(), aligned.data() + aligned.size(), bytes.begin() + 4096));
    Status misaligned = f->read_direct(100, aligned.data(), 4096);
    ZCHECK(misaligned.code() == StatusCode::kInvalidArgument);
    ZCHECK(f->read_direct(0, aligned.data() + 1, 4096).code() == StatusCode::kInvalidArgument);
    Status past_end = f->read_at(bytes.size() - 10, got.data(), 20);
    ZCHECK(past_end.code() == StatusCode::kFormat);
    ZCHECK(contains(past_end.message(), "truncated"));
    ZCHECK(contains(past_end.message(), path));
    // A direct read of the last, partial block comes back short: truncated, not garbage.
    ZCHECK(f->read_direct(3 * 4096, aligned.data(), 4096).code() == StatusCode::kFormat);
    MappedRange range;
    throw_if_error(f->map_range(4000, 300, &range));
    ZCHECK(range.size() == 300 && std::equal(range.data(), range.data() + 300, bytes.begin() + 4000));
    ZCHECK(f->map_range(bytes.size() - 10, 20, &range).code() == StatusCode::kFormat);
    ZCHECK(range.data() == nullptr);
    throw_if_error(f->copy_mapped(10, got.data(), got.size()));
    ZCHECK(std::equal(got.begin(), got.end(), bytes.begin() + 10));
  }
  std::unique_ptr<File> missing;
  Status st = File::open(dir.file("nope"), false, &missing);
  ZCHECK(st.code() == StatusCode::kIo);
  ZCHECK(contains(st.message(), "No such file"));

  // Discarded output leaves nothing.
  {
    std::unique_ptr<AtomicOutputFile> out;
    throw_if_error(AtomicOutputFile::create(dir.file("gone.bin"), &out));
    throw_if_error(out->append(bytes.data(), 10));
  }
  ZCHECK(!exists(dir.file("gone.bin")));
  ZCHECK_EQ(dir.entries().size(), std::size_t(1));

  // Named temporaries (filesystems without O_TMPFILE) carry the writer's pid and hold its lock while it lives.
  {
    std::unique_ptr<AtomicOutputFile> out;
    throw_if_error(AtomicOutputFile::create(dir.file("named.bin"), &out, AtomicOutputFile::Naming::kNamed));
    ZCHECK(contains(out->temp_path(), dir.file("named.bin.zipmoe-tmp-" + std::to_string(::getpid()) + "-")));
    ZCHECK(exists(out->temp_path()));
    const int other = ::open(out->temp_path().c_str(), O_RDONLY | O_CLOEXEC);
    ZCHECK(other >= 0);
    ZCHECK(::flock(other, LOCK_EX | LOCK_NB) != 0);  // held by the writer
    throw_if_error(out->append(bytes.data(), 10));
    throw_if_error(out->commit());
    ZCHECK(::flock(other, LOCK_EX | LOCK_NB) == 0);  // released with the file
    ::close(other);
  }
  ZCHECK(load(dir.file("named.bin")) == std::vector<std::uint8_t>(bytes.begin(), bytes.begin() + 10));
  ZCHECK_EQ(dir.entries().size(), std::size_t(2));

  AlignedBuffer buffer(100, 64);
  ZCHECK_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % 64, std::uintptr_t(0));
  std::uint8_t* before = buffer.data();
  buffer.allocate(50, 64);
  ZCHECK(buffer.data() == before && buffer.size() == 50);
  AlignedBuffer moved = std::move(buffer);
  ZCHECK(moved.data() == before && buffer.data() == nullptr);
}

namespace {

// The lines of /proc/self/maps that map `path`, as [start, end) pairs.
std::vector<std::pair<std::uintptr_t, std::uintptr_t>> mappings_of(const std::string& path) {
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.size() < path.size() || line.compare(line.size() - path.size(), path.size(), path) != 0) continue;
    const std::size_t dash = line.find('-'), space = line.find(' ');
    out.emplace_back(std::stoull(line.substr(0, dash), nullptr, 16),
                     std::stoull(line.substr(dash + 1, space - dash - 1), nullptr, 16));
  }
  return out;
}

}  // namespace

// Mapped reads map only the pages of the range asked for, and nothing of the file
// stays mapped after them (so no page of it stays in the resident size).
ZTEST(file_io_mapped_reads_leave_no_pages_behind) {
  TempDir dir;
  const std::string path = dir.file("big.bin");
  std::vector<std::uint8_t> bytes(3 * kMappedCopyWindow + 12345);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 13 + i / 4099);
  save(path, bytes);
  std::unique_ptr<File> f;
  throw_if_error(File::open(path, false, &f));
  const std::uintptr_t page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  {
    MappedRange range;
    const std::uint64_t offset = 5 * page + 17;
    throw_if_error(f->map_range(offset, 2 * page, &range));
    ZCHECK(std::equal(range.data(), range.data() + range.size(), bytes.begin() + offset));
    const auto maps = mappings_of(path);
    ZCHECK_EQ(maps.size(), std::size_t(1));
    ZCHECK_EQ(maps[0].second - maps[0].first, 3 * page);  // the three pages the range touches, nothing around
  }
  ZCHECK(mappings_of(path).empty());
  std::vector<std::uint8_t> copy(bytes.size() - 1001);
  throw_if_error(f->copy_mapped(1001, copy.data(), copy.size()));
  ZCHECK(std::equal(copy.begin(), copy.end(), bytes.begin() + 1001));
  ZCHECK(mappings_of(path).empty());
  throw_if_error(f->copy_mapped(7, copy.data(), 0));
  ::truncate(path.c_str(), static_cast<off_t>(2 * kMappedCopyWindow));
  const Status truncated = f->copy_mapped(1001, copy.data(), copy.size());
  ZCHECK(truncated.code() == StatusCode::kFormat);
  ZCHECK(contains(truncated.message(), "truncated"));
  ZCHECK(mappings_of(path).empty());
}

// A mapping whose file is truncated after it was made (the race map_range's size
// check cannot close): the copy out of it reports the vanished pages instead of
// the process dying of SIGBUS, and the next copy works again.
ZTEST(file_io_copy_from_a_mapping_truncated_under_it_is_an_error) {
  TempDir dir;
  const std::string path = dir.file("shrinks.bin");
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<std::uint8_t> bytes(4 * page);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 7);
  save(path, bytes);
  std::unique_ptr<File> f;
  throw_if_error(File::open(path, false, &f));
  MappedRange range;
  throw_if_error(f->map_range(0, bytes.size(), &range));
  std::vector<std::uint8_t> copy(bytes.size());
  ZCHECK(copy_from_mapping(copy.data(), range.data(), range.size()));
  ZCHECK(copy == bytes);
  ZCHECK(::truncate(path.c_str(), static_cast<off_t>(page)) == 0);
  ZCHECK(!copy_from_mapping(copy.data(), range.data(), range.size()));
  ZCHECK(copy_from_mapping(copy.data(), range.data(), page));  // the page still in the file
  ZCHECK(std::equal(copy.begin(), copy.begin() + page, bytes.begin()));
  ZCHECK(!copy_from_mapping(copy.data(), range.data() + 2 * page, page));
}

ZTEST(container_utf8_validation) {
  auto ok = [](const std::string& s) {
    return format::is_valid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  ZCHECK(ok(""));
  ZCHECK(ok("plain"));
  ZCHECK(ok("模型 ✓ café 🚀 \xf4\x8f\xbf\xbf"));
  ZCHECK(!ok("\x80"));
  ZCHECK(!ok("\xc0\xaf"));           // overlong '/'
  ZCHECK(!ok("\xe0\x80\xaf"));       // overlong
  ZCHECK(!ok("\xed\xa0\x80"));       // surrogate
  ZCHECK(!ok("\xf4\x90\x80\x80"));   // past U+10FFFF
  ZCHECK(!ok("\xe6\xa8"));           // truncated sequence
  ZCHECK(!ok("\xf8\x88\x80\x80\x80"));
}

// Pins the version 1 layout byte for byte (docs/FORMAT.md): raw-coded planes
// keep the file independent of the entropy coders. A change here is a format change.
ZTEST(container_golden_layout) {
  TempDir dir;
  const std::string path = dir.file("golden.zmoe");
  std::vector<std::uint16_t> bf16(300);
  for (std::size_t i = 0; i < bf16.size(); ++i) bf16[i] = static_cast<std::uint16_t>(0x3C00 + i * 37);
  std::vector<std::uint32_t> f32(5);
  for (std::size_t i = 0; i < f32.size(); ++i) f32[i] = 0xBF800000u + static_cast<std::uint32_t>(i * 0x1234);
  {
    ContainerWriter writer(path, R"({"architecture":"golden"})");
    writer.add_tensor("dense.weight", bf16.data(), DType::kBF16, {3, 100}, TensorRole(), Codec::kRaw);
    writer.add_tensor("experts.0.up", f32.data(), DType::kF32, {5}, TensorRole::expert_projection(2, 7, "up"),
                      Codec::kRaw);
    writer.finish();
  }
  const std::vector<std::uint8_t> f = load(path);
  ZCHECK_EQ(f.size(), std::size_t(8 * 4096));  // header, 4 chunks, index, table, metadata
  ZCHECK(std::equal(format::kMagic.begin(), format::kMagic.end(), f.begin()));
  ZCHECK_EQ(load_le16(&f[8]), 1);
  ZCHECK_EQ(load_le16(&f[10]), 0);
  ZCHECK_EQ(load_le32(&f[12]), 4096u);
  ZCHECK_EQ(load_le32(&f[16]), 4096u);
  ZCHECK_EQ(load_le64(&f[24]), std::uint64_t(8 * 4096));
  ZCHECK_EQ(load_le64(&f[32]), std::uint64_t(2));
  ZCHECK_EQ(load_le64(&f[40]), std::uint64_t(4));
  ZCHECK_EQ(load_le64(&f[48]), std::uint64_t(5 * 4096));   // index
  ZCHECK_EQ(load_le64(&f[56]), std::uint64_t(32 + 16 + 12 + 32 + 8 + 12 + 2));
  ZCHECK_EQ(load_le64(&f[64]), std::uint64_t(6 * 4096));   // chunk table
  ZCHECK_EQ(load_le64(&f[72]), std::uint64_t(4 * 40));
  ZCHECK_EQ(load_le64(&f[80]), std::uint64_t(7 * 4096));   // metadata
  ZCHECK_EQ(load_le64(&f[88]), std::uint64_t(25));
  // Chunk 0: the raw coded plane of 300 symbols at 4096; chunk 1: 300 SM bytes at 8192.
  ZCHECK_EQ(f[4096], 0);                                    // codec raw
  ZCHECK_EQ(load_le64(&f[4096 + 8]), std::uint64_t(300));  // num_symbols
  ZCHECK_EQ(f[4096 + 28 + 1], static_cast<std::uint8_t>(bf16[1] >> 7));  // after 24 + 4 (one segment size)
  ZCHECK_EQ(f[8192 + 5], static_cast<std::uint8_t>(((bf16[5] >> 8) & 0x80) | (bf16[5] & 0x7f)));
  // Chunk table entry 3: the F32 SM plane (15 bytes) at 16384, owned by tensor 1.
  const std::size_t e3 = 6 * 4096 + 3 * 40;
  ZCHECK_EQ(f[e3], 2);
  ZCHECK_EQ(load_le32(&f[e3 + 4]), 1u);
  ZCHECK_EQ(load_le64(&f[e3 + 8]), std::uint64_t(4 * 4096));
  ZCHECK_EQ(load_le64(&f[e3 + 16]), std::uint64_t(15));
  ZCHECK_EQ(load_le32(&f[e3 + 32]), crc32c(&f[4 * 4096], 15));
  // Index entry 1 (after entry 0's 32 + 2*8 + 12 bytes): an expert of layer 2, id 7, "up".
  const std::size_t i1 = 5 * 4096 + 32 + 16 + 12;
  ZCHECK_EQ(load_le16(&f[i1]), 12);
  ZCHECK_EQ(f[i1 + 4], 1);
  ZCHECK_EQ(f[i1 + 5], 2);
  ZCHECK_EQ(load_le32(&f[i1 + 8]), 2u);
  ZCHECK_EQ(load_le32(&f[i1 + 12]), 7u);
  ZCHECK_EQ(load_le32(&f[i1 + 16]), 2u);
  ZCHECK_EQ(load_le32(&f[i1 + 20]), 3u);
  ZCHECK_EQ(std::string(reinterpret_cast<const char*>(&f[i1 + 40 + 12]), 2), "up");
  // Everything else, padding included.
  const std::uint32_t whole = crc32c(f.data(), f.size());
  std::fprintf(stderr, "  golden file crc32c 0x%08x\n", whole);
  ZCHECK_EQ(whole, 0xb4bf055fu);
}
