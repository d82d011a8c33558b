// The GPU decoders' logic, tested without a GPU.
//
// cpp/cuda/*.cuh hold the decoding kernels' bodies (Huffman: one block per
// segment, rANS: one warp per segment, raw/constant: elementwise) written
// against a handful of SIMT primitives (ballot, shuffle, block barrier). Here
// the host compiler builds those same functions and a small emulator runs
// them: every GPU thread is a fiber that yields at each primitive, so the code
// executes exactly as written for the GPU, with the GPU's semantics wherever
// threads exchange data. The planner (cpp/cuda/decode_plan.h) is the one the
// CUDA host code uses. Every result is compared byte for byte with the CPU
// scalar decoder: random and special values in BF16/F16/F32, many segment
// sizes, every alphabet shape, batches of mixed planes, and corrupt planes
// (which must fail exactly when the CPU decoder fails, with no access outside
// any buffer: every buffer here has its exact size, for the sanitizer builds).
//
// When the build has CUDA (ZIPMOE_HAVE_CUDA) and a GPU is present, the last
// tests run the real kernels through the public API on the same inputs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "codec/coded_plane.h"
#include "codec/coder.h"
#include "codec/planes.h"
#include "common/bytes.h"
#include "cuda/decode_plan.h"
#include "cuda/huffman_device.cuh"
#include "cuda/merge_device.cuh"
#include "cuda/rans_device.cuh"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/types.h"

#if defined(ZIPMOE_HAVE_CUDA)
#include "cuda/cuda_decode.h"
#endif

// The emulator's fibers need glibc's getcontext/makecontext/swapcontext.
#if defined(__GLIBC__) && defined(__has_include)
#if __has_include(<ucontext.h>)
#define ZIPMOE_HAVE_SIMT_EMULATOR 1
#endif
#endif

#if defined(ZIPMOE_HAVE_SIMT_EMULATOR)
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#define ZIPMOE_EMULATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZIPMOE_EMULATOR_ASAN 1
#endif
#endif
#if defined(ZIPMOE_EMULATOR_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif

// ---------------------------------------------------------------------------
// The emulator of one thread block.
//
// A fiber runs until it reaches a primitive, deposits its operand and yields to
// the scheduler; when the last thread of the warp (or block) arrives, the result
// is computed and the participants resume with it. The scheduler resumes fibers
// forward, in reverse or shuffled, so that a missing barrier changes a result. A
// warp whose threads reach different primitives (divergence: undefined with a
// full mask on the GPU) or threads waiting at a barrier that others never reach
// abort the test binary with a message: both are bugs of the kernel code.
namespace simt_emulator {

enum class Order { kForward, kReverse, kShuffled };

class BlockEmulator {
 public:
  static constexpr unsigned kWarp = 32;
  static constexpr std::size_t kStackBytes = std::size_t(1) << 20;  // sanitizer frames are large

  // Runs body(thread) for threads 0..threads-1 of one block (a multiple of 32).
  void run(unsigned threads, const std::function<void(unsigned)>& body, Order order, std::mt19937_64* rng) {
    if (threads == 0 || threads % kWarp != 0) fail("block size must be a positive multiple of 32");
    body_ = &body;
    threads_ = threads;
    if (fibers_.size() < threads) fibers_.resize(threads);
    warps_.assign(threads / kWarp, Warp{});
    barrier_arrived_ = 0;
    for (unsigned t = 0; t < threads; ++t) {
      Fiber& f = fibers_[t];
      if (!f.stack) f.stack.reset(new char[kStackBytes]);
      f.finished = false;
      if (getcontext(&f.context) != 0) fail("getcontext failed");
      f.context.uc_stack.ss_sp = f.stack.get();
      f.context.uc_stack.ss_size = kStackBytes;
      f.context.uc_link = &scheduler_;
      makecontext(&f.context, &BlockEmulator::trampoline, 0);
    }
    std::vector<unsigned> sequence(threads);
    for (unsigned t = 0; t < threads; ++t) sequence[t] = order == Order::kReverse ? threads - 1 - t : t;
    unsigned unfinished = threads;
    active_ = this;
    while (unfinished > 0) {
      if (order == Order::kShuffled) std::shuffle(sequence.begin(), sequence.end(), *rng);
      const std::uint64_t progress_before = progress_;
      for (unsigned t : sequence) {
        if (fibers_[t].finished) continue;
        current_ = t;
        resume(t);
        if (fibers_[t].finished) --unfinished;
      }
      if (unfinished > 0 && progress_ == progress_before) {
        fail("deadlock: threads wait at a barrier or warp primitive that others never reach");
      }
    }
    active_ = nullptr;
  }

  static BlockEmulator& active() {
    if (!active_) fail("a SIMT primitive was called outside an emulated block");
    return *active_;
  }

  std::uint32_t ballot(bool predicate) {
    const unsigned me = current_;
    Warp& w = warps_[me / kWarp];
    arrive(w, Op::kBallot);
    w.predicate[me % kWarp] = predicate;
    if (++w.arrived == kWarp) {
      std::uint32_t bits = 0;
      for (unsigned l = 0; l < kWarp; ++l) bits |= std::uint32_t(w.predicate[l]) << l;
      w.ballot = bits;
      release(w);
      return bits;
    }
    wait_for(me, w);
    return w.ballot;
  }

  std::uint32_t shuffle(std::uint32_t value, unsigned source) {
    const unsigned me = current_;
    Warp& w = warps_[me / kWarp];
    arrive(w, Op::kShuffle);
    if (source >= kWarp) fail("shuffle from a lane outside the warp");
    w.value[me % kWarp] = value;
    w.source[me % kWarp] = source;
    if (++w.arrived == kWarp) {
      for (unsigned l = 0; l < kWarp; ++l) w.result[l] = w.value[w.source[l]];
      release(w);
      return w.result[me % kWarp];
    }
    wait_for(me, w);
    return w.result[me % kWarp];
  }

  void barrier() {
    const unsigned me = current_;
    ++progress_;
    if (++barrier_arrived_ == threads_) {
      barrier_arrived_ = 0;
      ++barrier_generation_;
      return;
    }
    const std::uint64_t generation = barrier_generation_;
    while (barrier_generation_ == generation) yield(me);
  }

 private:
  enum class Op { kBallot, kShuffle };
  struct Warp {
    unsigned arrived = 0;
    std::uint64_t generation = 0;
    Op op = Op::kBallot;
    bool predicate[kWarp] = {};
    std::uint32_t value[kWarp] = {};
    unsigned source[kWarp] = {};
    std::uint32_t result[kWarp] = {};
    std::uint32_t ballot = 0;
  };
  struct Fiber {
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    bool finished = false;
    void* fake_stack = nullptr;  // ASan's bookkeeping while the fiber is switched out
  };

  [[noreturn]] static void fail(const char* what) {
    std::fprintf(stderr, "SIMT emulator: %s\n", what);
    std::fflush(stderr);
    std::abort();
  }

  void arrive(Warp& w, Op op) {
    ++progress_;
    if (w.arrived == 0) {
      w.op = op;
    } else if (w.op != op) {
      fail("divergent warp: its lanes reached different primitives");
    }
  }

  static void release(Warp& w) {
    w.arrived = 0;
    ++w.generation;
  }

  void wait_for(unsigned me, const Warp& w) {
    const std::uint64_t generation = w.generation;
    while (w.generation == generation) yield(me);
  }

  static void trampoline() {
    BlockEmulator& self = *active_;
    const unsigned me = self.current_;
    self.entered(me);
    (*self.body_)(me);
    self.fibers_[me].finished = true;
    ++self.progress_;
#if defined(ZIPMOE_EMULATOR_ASAN)
    __sanitizer_start_switch_fiber(nullptr, self.scheduler_stack_bottom_, self.scheduler_stack_size_);
#endif
    // Returning resumes uc_link: the scheduler.
  }

  void resume(unsigned t) {
#if defined(ZIPMOE_EMULATOR_ASAN)
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, fibers_[t].stack.get(), kStackBytes);
    swapcontext(&scheduler_, &fibers_[t].context);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    swapcontext(&scheduler_, &fibers_[t].context);
#endif
  }

  void yield(unsigned me) {
#if defined(ZIPMOE_EMULATOR_ASAN)
    __sanitizer_start_switch_fiber(&fibers_[me].fake_stack, scheduler_stack_bottom_, scheduler_stack_size_);
#endif
    swapcontext(&fibers_[me].context, &scheduler_);
    entered(me);
  }

  void entered(unsigned me) {
#if defined(ZIPMOE_EMULATOR_ASAN)
    const void* bottom = nullptr;
    std::size_t size = 0;
    __sanitizer_finish_switch_fiber(fibers_[me].fake_stack, &bottom, &size);
    scheduler_stack_bottom_ = bottom;
    scheduler_stack_size_ = size;
#else
    (void)me;
#endif
  }

  static inline BlockEmulator* active_ = nullptr;
  const std::function<void(unsigned)>* body_ = nullptr;
  unsigned threads_ = 0;
  unsigned current_ = 0;
  std::uint64_t progress_ = 0;
  std::vector<Fiber> fibers_;
  std::vector<Warp> warps_;
  unsigned barrier_arrived_ = 0;
  std::uint64_t barrier_generation_ = 0;
  ucontext_t scheduler_;
#if defined(ZIPMOE_EMULATOR_ASAN)
  const void* scheduler_stack_bottom_ = nullptr;
  std::size_t scheduler_stack_size_ = 0;
#endif
};

}  // namespace simt_emulator

namespace zipmoe::cuda::simt {
std::uint32_t warp_ballot(bool predicate) { return simt_emulator::BlockEmulator::active().ballot(predicate); }
std::uint32_t warp_shuffle(std::uint32_t value, unsigned source_lane) {
  return simt_emulator::BlockEmulator::active().shuffle(value, source_lane);
}
void block_barrier() { simt_emulator::BlockEmulator::active().barrier(); }
// Fibers switch only at the primitives, so a read-modify-write is atomic here.
void atomic_min_u64(unsigned long long* address, unsigned long long value) {
  if (value < *address) *address = value;
}
}  // namespace zipmoe::cuda::simt

#endif  // ZIPMOE_HAVE_SIMT_EMULATOR

namespace {

using zipmoe::Codec;
using zipmoe::DType;
using zipmoe::Status;
namespace codec = zipmoe::codec;
namespace cuda = zipmoe::cuda;

// A heap copy that ends exactly where the data ends (reads past it are caught by
// ASan), starting `misalign` bytes into the allocation.
class ExactCopy {
 public:
  ExactCopy(const std::uint8_t* data, std::size_t size, std::size_t misalign = 0)
      : storage_(new std::uint8_t[misalign + size + (misalign + size == 0)]), data_(storage_.get() + misalign),
        size_(size) {
    if (size) std::memcpy(data_, data, size);
  }
  explicit ExactCopy(const std::vector<std::uint8_t>& v, std::size_t misalign = 0)
      : ExactCopy(v.data(), v.size(), misalign) {}
  std::uint8_t* data() { return data_; }
  std::size_t size() const { return size_; }

 private:
  std::unique_ptr<std::uint8_t[]> storage_;
  std::uint8_t* data_;
  std::size_t size_;
};

struct PlaneCase {
  std::string name;
  DType dtype = DType::kBF16;
  std::size_t n = 0;
  bool symbols_only = false;
  std::vector<std::uint8_t> plane;  // the coded exponent plane
  std::vector<std::uint8_t> sm;     // its SM plane
  Codec codec = Codec::kRaw;        // as encoded
};

std::size_t output_bytes(const PlaneCase& c) { return c.symbols_only ? c.n : c.n * zipmoe::dtype_size(c.dtype); }

PlaneCase encode_case(std::string name, DType dtype, const std::vector<std::uint8_t>& symbols,
                      std::vector<std::uint8_t> sm, Codec codec, std::uint32_t segment_symbols) {
  PlaneCase c;
  c.dtype = dtype;
  c.n = symbols.size();
  c.sm = std::move(sm);
  codec::EncodeOptions options;
  options.codec = codec;
  options.segment_symbols = segment_symbols;
  codec::PlaneEncodeResult result;
  const Status st = codec::encode_plane(symbols.data(), symbols.size(), options, nullptr, &c.plane, &result);
  if (!st.ok()) ztest::report_failure(__FILE__, __LINE__, "encode_plane: " + st.message());
  c.codec = result.codec;
  c.name = std::move(name) + " [" + zipmoe::codec_name(c.codec) + ", " + zipmoe::dtype_name(dtype) + ", n=" +
           std::to_string(c.n) + ", segment " + std::to_string(segment_symbols) + "]";
  return c;
}

// A plane coded with `codec` whatever its size (encode_plane would store small
// planes raw), framed as coded_plane.h describes.
PlaneCase forced_case(std::string name, DType dtype, std::vector<std::uint8_t> symbols, std::vector<std::uint8_t> sm,
                      Codec codec, std::uint32_t segment_symbols) {
  // rANS codes two symbols at least (a constant plane is never rANS-coded).
  if (codec == Codec::kRans && symbols.size() >= 2 &&
      std::count(symbols.begin(), symbols.end(), symbols[0]) == std::ptrdiff_t(symbols.size())) {
    symbols[0] ^= 1;
  }
  PlaneCase c;
  c.dtype = dtype;
  c.n = symbols.size();
  c.sm = std::move(sm);
  c.codec = codec;
  c.name = std::move(name) + " [forced " + zipmoe::codec_name(codec) + ", " + zipmoe::dtype_name(dtype) +
           ", n=" + std::to_string(c.n) + ", segment " + std::to_string(segment_symbols) + "]";
  const codec::Coder& coder = *codec::find_coder(codec);
  std::vector<std::uint8_t> table;
  Status st = coder.build_table(codec::compute_histogram(symbols.data(), symbols.size()), &table);
  const std::size_t segments = (c.n + segment_symbols - 1) / segment_symbols;
  std::vector<std::vector<std::uint8_t>> payloads(segments);
  for (std::size_t s = 0; s < segments && st.ok(); ++s) {
    const std::size_t first = s * segment_symbols;
    st = coder.encode_segment(table.data(), table.size(), symbols.data() + first,
                              std::min<std::size_t>(segment_symbols, c.n - first), &payloads[s]);
  }
  if (!st.ok()) ztest::report_failure(__FILE__, __LINE__, c.name + ": " + st.message());
  c.plane.push_back(static_cast<std::uint8_t>(codec));
  c.plane.push_back(codec::kCodedPlaneVersion);
  zipmoe::append_le16(&c.plane, 0);
  zipmoe::append_le32(&c.plane, segment_symbols);
  zipmoe::append_le64(&c.plane, c.n);
  zipmoe::append_le32(&c.plane, static_cast<std::uint32_t>(table.size()));
  zipmoe::append_le32(&c.plane, static_cast<std::uint32_t>(segments));
  c.plane.insert(c.plane.end(), table.begin(), table.end());
  for (const auto& p : payloads) zipmoe::append_le32(&c.plane, static_cast<std::uint32_t>(p.size()));
  for (const auto& p : payloads) c.plane.insert(c.plane.end(), p.begin(), p.end());
  return c;
}

PlaneCase forced_element_case(const std::string& name, DType dtype, const std::vector<std::uint8_t>& elements,
                              Codec codec, std::uint32_t segment_symbols) {
  const std::size_t n = elements.size() / zipmoe::dtype_size(dtype);
  std::vector<std::uint8_t> symbols(n), sm(n * codec::sm_bytes_per_element(dtype));
  codec::split_planes(dtype, elements.data(), n, symbols.data(), sm.data());
  return forced_case(name, dtype, symbols, std::move(sm), codec, segment_symbols);
}

// A case from elements of `dtype`.
PlaneCase element_case(const std::string& name, DType dtype, const std::vector<std::uint8_t>& elements,
                       Codec codec, std::uint32_t segment_symbols) {
  const std::size_t n = elements.size() / zipmoe::dtype_size(dtype);
  std::vector<std::uint8_t> symbols(n), sm(n * codec::sm_bytes_per_element(dtype));
  codec::split_planes(dtype, elements.data(), n, symbols.data(), sm.data());
  return encode_case(name, dtype, symbols, std::move(sm), codec, segment_symbols);
}

// A case from a symbol plane, with random sign/mantissa bits.
PlaneCase symbol_case(const std::string& name, DType dtype, const std::vector<std::uint8_t>& symbols, Codec codec,
                      std::uint32_t segment_symbols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint8_t> sm(symbols.size() * codec::sm_bytes_per_element(dtype));
  for (auto& b : sm) b = static_cast<std::uint8_t>(rng());
  return encode_case(name, dtype, symbols, std::move(sm), codec, segment_symbols);
}

std::vector<std::uint8_t> draw_symbols(const std::vector<double>& weights, std::size_t n, std::uint64_t seed,
                                       int first_symbol = 0) {
  std::mt19937_64 rng(seed);
  std::discrete_distribution<int> pick(weights.begin(), weights.end());
  std::vector<std::uint8_t> out(n);
  for (auto& s : out) s = static_cast<std::uint8_t>(first_symbol + pick(rng));
  return out;
}

struct Decoded {
  Status status;
  std::vector<std::uint8_t> out;
};

// The reference: the CPU scalar decoder.
Decoded cpu_decode(const PlaneCase& c, const std::vector<std::uint8_t>& plane) {
  Decoded d;
  d.out.assign(output_bytes(c), 0);
  ExactCopy bytes(plane);
  codec::CodedPlane parsed;
  d.status = codec::CodedPlane::parse(bytes.data(), bytes.size(), &parsed);
  if (!d.status.ok()) return d;
  if (parsed.num_symbols() != c.n) {
    d.status = Status::Format("plane holds another number of symbols");
    return d;
  }
  const codec::MergeTarget target = c.symbols_only
                                        ? codec::make_symbol_target(d.out.data())
                                        : codec::make_merge_target(c.dtype, c.sm.data(), c.n, d.out.data());
  d.status = parsed.decode(target, nullptr, zipmoe::Isa::kScalar);
  return d;
}

void expect_same(const std::string& what, const Decoded& cpu, const Decoded& gpu, int line) {
  if (cpu.status.ok() != gpu.status.ok()) {
    ztest::report_failure(__FILE__, line,
                          what + ": CPU says '" + (cpu.status.ok() ? "ok" : cpu.status.message()) + "', GPU says '" +
                              (gpu.status.ok() ? "ok" : gpu.status.message()) + "'");
    return;
  }
  if (!cpu.status.ok()) return;
  if (cpu.out != gpu.out) {
    std::size_t i = 0;
    while (i < cpu.out.size() && cpu.out[i] == gpu.out[i]) ++i;
    ztest::report_failure(__FILE__, line,
                          what + ": output differs from the CPU decoder's at byte " + std::to_string(i) + " of " +
                              std::to_string(cpu.out.size()));
  }
}

#if defined(ZIPMOE_HAVE_SIMT_EMULATOR)

using simt_emulator::BlockEmulator;
using simt_emulator::Order;

// One plane of an emulated batch: which bytes stand for the plane (a corrupt
// variant, maybe), placed `misalign` bytes off alignment.
struct EmulatedItem {
  const PlaneCase* plane_case;
  const std::vector<std::uint8_t>* plane;
  std::size_t misalign;
};

// Runs one batch the way cuda_decode.cu launches it, every block on the emulator.
std::vector<Decoded> emulate_batch(const std::vector<EmulatedItem>& items, Order order, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Decoded> results(items.size());
  std::vector<std::unique_ptr<ExactCopy>> planes, sms;
  std::vector<std::unique_ptr<ExactCopy>> outs;
  std::vector<cuda::PlanePlan> plans(items.size());
  std::vector<cuda::BatchItem> batch;
  std::vector<std::size_t> batch_index_of;  // item -> index in batch, or SIZE_MAX
  for (std::size_t i = 0; i < items.size(); ++i) {
    const PlaneCase& c = *items[i].plane_case;
    planes.push_back(std::make_unique<ExactCopy>(*items[i].plane, items[i].misalign));
    sms.push_back(std::make_unique<ExactCopy>(c.sm));
    // Poisoned with a pattern, so that an element the kernels never write shows up.
    std::vector<std::uint8_t> poison(output_bytes(c), 0xA5);
    outs.push_back(std::make_unique<ExactCopy>(poison));
    results[i].status = cuda::plan_plane(planes[i]->data(), planes[i]->size(), &plans[i]);
    if (results[i].status.ok() && plans[i].num_symbols != c.n) {
      results[i].status = Status::Format("plane holds another number of symbols");
    }
    if (!results[i].status.ok()) {
      batch_index_of.push_back(SIZE_MAX);
      continue;
    }
    cuda::BatchItem b;
    b.plan = &plans[i];
    b.device_plane = planes[i]->data();
    b.device_sm = sms[i]->data();
    b.device_out = outs[i]->data();
    b.output_kind = c.symbols_only ? cuda::kOutputSymbols : cuda::output_kind_for(c.dtype);
    batch_index_of.push_back(batch.size());
    batch.push_back(b);
  }
  cuda::BatchLayout layout;
  const Status built = cuda::build_batch(batch.data(), batch.size(), &layout);
  if (!built.ok()) {
    ztest::report_failure(__FILE__, __LINE__, "build_batch: " + built.message());
    return results;
  }
  // Device scratch starts as garbage: nothing may depend on it being cleared.
  std::vector<cuda::HuffmanChunkState> chunks(layout.num_huffman_chunks);
  for (auto& chunk : chunks) std::memset(&chunk, 0xC3, sizeof(chunk));
  std::vector<unsigned long long> errors(batch.size(), cuda::kNoDecodeError);
  const cuda::BatchArgs args = layout.args(layout.bytes.data(), chunks.data(), errors.data());

  BlockEmulator emulator;
  auto huffman_shared = std::make_unique<cuda::HuffmanShared>();
  auto rans_shared = std::make_unique<cuda::RansShared>();
  std::vector<std::size_t> jobs;
  auto job_order = [&](std::size_t n) {
    jobs.resize(n);
    for (std::size_t j = 0; j < n; ++j) jobs[j] = j;
    if (order == Order::kShuffled) std::shuffle(jobs.begin(), jobs.end(), rng);
    if (order == Order::kReverse) std::reverse(jobs.begin(), jobs.end());
  };
  job_order(layout.num_huffman_segments);
  for (std::size_t job : jobs) {
    std::memset(huffman_shared.get(), 0x5C, sizeof(cuda::HuffmanShared));
    emulator.run(
        cuda::kHuffmanBlockThreads,
        [&](unsigned thread) { cuda::huffman_decode_segment(args, job, *huffman_shared, thread); }, order, &rng);
  }
  job_order(layout.num_rans_blocks);
  for (std::size_t job : jobs) {
    std::memset(rans_shared.get(), 0x5C, sizeof(cuda::RansShared));
    emulator.run(
        cuda::kRansWarpsPerBlock * cuda::kWarpSize,
        [&](unsigned thread) { cuda::rans_decode_block(args, job, *rans_shared, thread); }, order, &rng);
  }
  for (std::size_t job = 0; job < layout.num_fill_slices; ++job) {
    for (unsigned thread = 0; thread < cuda::kFillBlockThreads; ++thread) cuda::fill_slice(args, job, thread);
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (batch_index_of[i] == SIZE_MAX) continue;
    results[i].status = cuda::decode_error_status(errors[batch_index_of[i]]);
    results[i].out.assign(outs[i]->data(), outs[i]->data() + outs[i]->size());
  }
  return results;
}

Decoded emulate_one(const PlaneCase& c, const std::vector<std::uint8_t>& plane, Order order, std::uint64_t seed,
                    std::size_t misalign = 0) {
  return emulate_batch({EmulatedItem{&c, &plane, misalign}}, order, seed)[0];
}

Order order_of(std::size_t i) { return static_cast<Order>(i % 3); }

// Each case through the emulated GPU, against the CPU decoder.
void check_cases(const std::vector<PlaneCase>& cases, int line) {
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const PlaneCase& c = cases[i];
    const Decoded cpu = cpu_decode(c, c.plane);
    if (!cpu.status.ok()) {
      ztest::report_failure(__FILE__, line, c.name + ": the CPU decoder fails: " + cpu.status.message());
      continue;
    }
    expect_same(c.name, cpu, emulate_one(c, c.plane, order_of(i), 1000 + i, i % 4), line);
  }
}

std::vector<std::uint8_t> element_bytes(DType dtype, std::size_t n, std::uint32_t seed, bool specials = true) {
  return ztest::make_weights(dtype, n, seed, 0.02, specials);
}

// ---------------------------------------------------------------------------

ZTEST(cuda_logic_huffman_matches_cpu_on_weights) {
  struct Size {
    std::size_t n;
    std::uint32_t segment;
  };
  const Size sizes[] = {{1, 131072},  {2, 131072},     {3, 131072},   {5, 4},       {31, 8},
                        {64, 64},     {65, 64},        {127, 5},      {1000, 100},  {4099, 1024},
                        {70001, 131072}, {300000, 131072}, {262161, 65536}};
  std::vector<PlaneCase> cases;
  std::uint32_t seed = 1;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (const Size& s : sizes) {
      cases.push_back(
          forced_element_case("weights", dtype, element_bytes(dtype, s.n, seed++), Codec::kHuffman, s.segment));
      if (s.n == 4099) {
        cases.push_back(
            forced_element_case("weights", dtype, element_bytes(dtype, s.n, seed++), Codec::kHuffman, s.segment));
        cases.back().symbols_only = true;
      }
    }
  }
  // Sizes straddling the chunk boundaries of a stream.
  for (std::size_t n : {std::size_t(1570), std::size_t(1581), std::size_t(6400), std::size_t(12345)}) {
    cases.push_back(element_case("weights", DType::kBF16, element_bytes(DType::kBF16, n, seed++), Codec::kHuffman,
                                 131072));
  }
  check_cases(cases, __LINE__);
}

ZTEST(cuda_logic_rans_matches_cpu_on_weights) {
  struct Size {
    std::size_t n;
    std::uint32_t segment;
  };
  const Size sizes[] = {{2, 131072},   {3, 3},        {31, 8},      {63, 64},    {64, 64},
                        {65, 64},    {127, 128},    {129, 64},     {1000, 100},  {4099, 1024},
                        {40000, 131072}, {70000, 16384}};
  std::vector<PlaneCase> cases;
  std::uint32_t seed = 100;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (const Size& s : sizes) {
      cases.push_back(
          forced_element_case("weights", dtype, element_bytes(dtype, s.n, seed++), Codec::kRans, s.segment));
      if (s.n == 4099) {
        cases.push_back(
            forced_element_case("weights", dtype, element_bytes(dtype, s.n, seed++), Codec::kRans, s.segment));
        cases.back().symbols_only = true;
      }
    }
  }
  check_cases(cases, __LINE__);
}

ZTEST(cuda_logic_every_alphabet_shape_matches_cpu) {
  std::vector<PlaneCase> cases;
  std::uint64_t seed = 7;
  auto add = [&](const std::string& name, const std::vector<std::uint8_t>& symbols, std::size_t rans_limit) {
    for (Codec codec : {Codec::kHuffman, Codec::kRans, Codec::kAuto}) {
      if (codec == Codec::kRans && symbols.size() > rans_limit) continue;
      for (std::uint32_t segment : {std::uint32_t(4096), std::uint32_t(131072)}) {
        const DType dtype = static_cast<DType>(1 + seed % 3);
        cases.push_back(symbol_case(name, dtype, symbols, codec, segment, seed++));
      }
    }
  };
  // Two symbols, balanced and skewed (1-bit codes; 7 symbols per lookup).
  add("two symbols", draw_symbols({1, 1}, 50000, 1, 126), 20000);
  add("two symbols skewed", draw_symbols({99, 1}, 50000, 2, 0), 20000);
  add("two symbols far apart", draw_symbols({1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3}, 30000, 3, 245), 20000);
  // Fixed-length codes never resynchronize at a chunk boundary that is not a
  // multiple of their length: the link step corrects every chunk.
  add("8 uniform symbols (3-bit codes)", draw_symbols(std::vector<double>(8, 1.0), 60000, 4, 100), 20000);
  add("3 uniform symbols", draw_symbols({1, 1, 1}, 60000, 5, 10), 20000);
  add("5 uniform symbols", draw_symbols(std::vector<double>(5, 1.0), 60000, 6, 200), 20000);
  // Fibonacci weights: the 11-bit length limit binds.
  {
    std::vector<double> fib;
    double a = 1, b = 1;
    for (int i = 0; i < 30; ++i) {
      fib.push_back(a);
      const double next = a + b;
      a = b;
      b = next;
    }
    add("fibonacci weights", draw_symbols(fib, 80000, 7, 90), 20000);
  }
  // 256 symbols, geometric: many code lengths.
  {
    std::vector<double> geometric(256);
    for (int i = 0; i < 256; ++i) geometric[i] = std::pow(0.93, i);
    add("256 symbols geometric", draw_symbols(geometric, 80000, 8, 0), 20000);
  }
  // Nearly constant: one symbol and a few outliers (long codes for the outliers).
  {
    auto symbols = std::vector<std::uint8_t>(40000, 127);
    for (std::size_t i = 0; i < symbols.size(); i += 997) symbols[i] = static_cast<std::uint8_t>(i % 256);
    add("nearly constant", symbols, 20000);
  }
  add("constant", std::vector<std::uint8_t>(10000, 0x7f), 20000);
  add("empty", {}, 20000);
  // Every 16-bit pattern as BF16 and F16 elements (256 symbols, each 256 times).
  const auto patterns = ztest::all_16bit_patterns();
  cases.push_back(element_case("all 16-bit patterns", DType::kBF16, patterns, Codec::kHuffman, 131072));
  cases.push_back(element_case("all 16-bit patterns", DType::kF16, patterns, Codec::kAuto, 16384));
  check_cases(cases, __LINE__);
}

ZTEST(cuda_logic_raw_and_constant_planes_match_cpu) {
  std::vector<PlaneCase> cases;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    cases.push_back(element_case("raw", dtype, element_bytes(dtype, 70000, 31), Codec::kRaw, 4096));
    cases.push_back(element_case("raw", dtype, element_bytes(dtype, 3, 32), Codec::kRaw, 131072));
    cases.push_back(symbol_case("constant", dtype, std::vector<std::uint8_t>(66000, 0x80), Codec::kAuto, 1000, 33));
  }
  cases.push_back(symbol_case("raw symbols", DType::kBF16, draw_symbols(std::vector<double>(256, 1.0), 5000, 34),
                              Codec::kRaw, 131072, 35));
  cases.back().symbols_only = true;
  check_cases(cases, __LINE__);
}

ZTEST(cuda_logic_u8_planes_decode_to_their_bytes) {
  // U8 tensors (raw bytes): the symbols are the output, through the planner's output kind for the dtype.
  ZCHECK_EQ(cuda::output_kind_for(DType::kU8), cuda::kOutputSymbols);
  std::vector<double> integer_like(256, 0.01);
  integer_like[0] = 50.0;  // little-endian small integers: mostly zero bytes
  std::vector<PlaneCase> cases;
  for (Codec codec : {Codec::kHuffman, Codec::kRans, Codec::kRaw}) {
    cases.push_back(symbol_case("u8", DType::kU8, draw_symbols(integer_like, 70001, 41), codec, 4096, 42));
  }
  check_cases(cases, __LINE__);
}

ZTEST(cuda_logic_batches_of_mixed_planes_match_cpu) {
  std::vector<PlaneCase> cases;
  cases.push_back(element_case("bf16 huffman", DType::kBF16, element_bytes(DType::kBF16, 200000, 41), Codec::kHuffman,
                               65536));
  cases.push_back(element_case("f32 rans", DType::kF32, element_bytes(DType::kF32, 20000, 42), Codec::kRans, 4096));
  cases.push_back(element_case("f16 raw", DType::kF16, element_bytes(DType::kF16, 1000, 43), Codec::kRaw, 300));
  cases.push_back(symbol_case("constant", DType::kBF16, std::vector<std::uint8_t>(5000, 3), Codec::kAuto, 4096, 44));
  cases.push_back(element_case("f16 huffman", DType::kF16, element_bytes(DType::kF16, 33333, 45), Codec::kHuffman,
                               10000));
  cases.push_back(element_case("bf16 rans", DType::kBF16, element_bytes(DType::kBF16, 9000, 46), Codec::kRans, 1000));
  cases.push_back(element_case("empty", DType::kBF16, {}, Codec::kHuffman, 4096));
  cases.push_back(element_case("f32 huffman", DType::kF32, element_bytes(DType::kF32, 5000, 47), Codec::kHuffman, 700));
  cases.push_back(element_case("bf16 rans one-symbol segments", DType::kBF16, element_bytes(DType::kBF16, 100, 48),
                               Codec::kRans, 1));
  cases.push_back(element_case("bf16 huffman symbols", DType::kBF16, element_bytes(DType::kBF16, 7777, 49),
                               Codec::kHuffman, 2048));
  cases.back().symbols_only = true;
  std::vector<EmulatedItem> items;
  for (std::size_t i = 0; i < cases.size(); ++i) items.push_back(EmulatedItem{&cases[i], &cases[i].plane, i % 4});
  for (Order order : {Order::kForward, Order::kReverse, Order::kShuffled}) {
    const std::vector<Decoded> gpu = emulate_batch(items, order, 77);
    for (std::size_t i = 0; i < cases.size(); ++i) {
      expect_same("batch item " + std::to_string(i) + " " + cases[i].name, cpu_decode(cases[i], cases[i].plane),
                  gpu[i], __LINE__);
    }
  }
}

// Corrupt variants of `c`: every one must fail exactly when the CPU decoder
// fails, and decode to the CPU's output when both accept it.
void check_corruptions(const PlaneCase& c, std::size_t trials, std::uint64_t seed, int line) {
  std::mt19937_64 rng(seed);
  const std::size_t size = c.plane.size();
  std::size_t rejected = 0;
  std::vector<std::vector<std::uint8_t>> variants;
  std::vector<std::string> names;
  for (std::size_t t = 0; t < trials; ++t) {
    std::vector<std::uint8_t> v = c.plane;
    std::string name;
    switch (t % 8) {
      case 0:
      case 1:
      case 2: {  // one bit flip in the payload area (past header and tables, mostly)
        const std::size_t at = size / 8 + rng() % (size - size / 8);
        v[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        name = "bit flip at byte " + std::to_string(at);
        break;
      }
      case 3: {  // a bit flip anywhere, headers and tables included
        const std::size_t at = rng() % size;
        v[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        name = "bit flip anywhere at byte " + std::to_string(at);
        break;
      }
      case 4: {  // a run of random bytes
        const std::size_t at = rng() % size;
        const std::size_t length = 1 + rng() % 64;
        for (std::size_t i = at; i < std::min(size, at + length); ++i) v[i] = static_cast<std::uint8_t>(rng());
        name = "garbage at byte " + std::to_string(at);
        break;
      }
      case 5: {  // truncated
        v.resize(rng() % size);
        name = "truncated to " + std::to_string(v.size());
        break;
      }
      case 6: {  // the last byte of the plane (end of the last stream / last words)
        v[size - 1] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        name = "last byte flipped";
        break;
      }
      default: {  // every payload byte random, framing intact
        for (std::size_t i = size / 4; i < size; ++i) v[i] = static_cast<std::uint8_t>(rng());
        name = "random payload";
        break;
      }
    }
    variants.push_back(std::move(v));
    names.push_back(name);
  }
  // A few at a time in one batch, as the kernels see them in production.
  for (std::size_t first = 0; first < variants.size(); first += 8) {
    std::vector<EmulatedItem> items;
    for (std::size_t i = first; i < std::min(variants.size(), first + 8); ++i) {
      items.push_back(EmulatedItem{&c, &variants[i], i % 4});
    }
    const std::vector<Decoded> gpu = emulate_batch(items, order_of(first / 8), seed + first);
    for (std::size_t i = 0; i < items.size(); ++i) {
      const Decoded cpu = cpu_decode(c, variants[first + i]);
      rejected += !cpu.status.ok();
      expect_same(c.name + " " + names[first + i], cpu, gpu[i], line);
    }
  }
  ZCHECK(rejected * 4 > trials);  // the corruptions are mostly caught
}

ZTEST(cuda_logic_corrupt_huffman_planes_fail_like_the_cpu) {
  check_corruptions(element_case("corrupt", DType::kBF16, element_bytes(DType::kBF16, 9000, 51), Codec::kHuffman, 2500),
                    240, 1, __LINE__);
  check_corruptions(element_case("corrupt", DType::kF32, element_bytes(DType::kF32, 3000, 52), Codec::kHuffman, 131072),
                    80, 2, __LINE__);
  // Long streams: corruption in the middle of many chunks.
  check_corruptions(element_case("corrupt", DType::kBF16, element_bytes(DType::kBF16, 60000, 53), Codec::kHuffman,
                                 131072),
                    40, 3, __LINE__);
}

ZTEST(cuda_logic_corrupt_rans_planes_fail_like_the_cpu) {
  check_corruptions(element_case("corrupt", DType::kBF16, element_bytes(DType::kBF16, 3000, 61), Codec::kRans, 700),
                    200, 4, __LINE__);
  check_corruptions(forced_element_case("corrupt", DType::kF16, element_bytes(DType::kF16, 130, 62), Codec::kRans,
                                        131072),
                    80, 5, __LINE__);
}

ZTEST(cuda_logic_huffman_stream_end_rules) {
  // Targeted: extra stream bytes, missing stream bytes and non-zero padding, each
  // built by editing a valid segment's stream-size header and bytes.
  const PlaneCase c = element_case("ends", DType::kBF16, element_bytes(DType::kBF16, 4000, 71), Codec::kHuffman, 131072);
  ZCHECK(c.codec == Codec::kHuffman);
  codec::CodedPlane parsed;
  ZCHECK(codec::CodedPlane::parse(c.plane.data(), c.plane.size(), &parsed).ok());
  const std::size_t payload_at = codec::kCodedPlaneHeaderSize + parsed.table_size() + 4 * parsed.num_segments();
  std::vector<std::vector<std::uint8_t>> variants;
  // Move one byte from stream 1 to stream 0 (stream 0 gets a trailing byte, stream 1 is cut).
  {
    auto v = c.plane;
    zipmoe::store_le32(&v[payload_at], zipmoe::load_le32(&v[payload_at]) + 1);
    variants.push_back(v);
  }
  // Stream 0 one byte shorter.
  {
    auto v = c.plane;
    zipmoe::store_le32(&v[payload_at], zipmoe::load_le32(&v[payload_at]) - 1);
    variants.push_back(v);
  }
  // Set the top bit of the last byte of every stream (padding, or the last code).
  for (int k = 0; k < 4; ++k) {
    auto v = c.plane;
    std::size_t end = payload_at + 12;
    for (int j = 0; j <= k; ++j) {
      end += j < 3 ? zipmoe::load_le32(&v[payload_at + 4 * j])
                   : c.plane.size() - end;  // stream 3 runs to the end of the plane
    }
    v[end - 1] |= 0x80;
    variants.push_back(v);
  }
  for (std::size_t i = 0; i < variants.size(); ++i) {
    expect_same("stream-end variant " + std::to_string(i), cpu_decode(c, variants[i]),
                emulate_one(c, variants[i], order_of(i), i), __LINE__);
  }
  ZCHECK(!cpu_decode(c, variants[0]).status.ok());
  ZCHECK(!cpu_decode(c, variants[1]).status.ok());
}

// The plane with segment s's payload replaced by edit(payload), framing adjusted.
std::vector<std::uint8_t> edit_segment(const std::vector<std::uint8_t>& plane, std::size_t s,
                                       const std::function<void(std::vector<std::uint8_t>*)>& edit) {
  const std::size_t table_size = zipmoe::load_le32(&plane[16]);
  const std::size_t segments = zipmoe::load_le32(&plane[20]);
  const std::size_t sizes_at = codec::kCodedPlaneHeaderSize + table_size;
  std::vector<std::vector<std::uint8_t>> payloads(segments);
  std::size_t at = sizes_at + 4 * segments;
  for (std::size_t i = 0; i < segments; ++i) {
    const std::size_t size = zipmoe::load_le32(&plane[sizes_at + 4 * i]);
    payloads[i].assign(plane.begin() + at, plane.begin() + at + size);
    at += size;
  }
  edit(&payloads[s]);
  std::vector<std::uint8_t> out(plane.begin(), plane.begin() + sizes_at);
  for (const auto& p : payloads) zipmoe::append_le32(&out, static_cast<std::uint32_t>(p.size()));
  for (const auto& p : payloads) out.insert(out.end(), p.begin(), p.end());
  return out;
}

ZTEST(cuda_logic_rans_payload_length_rules) {
  // Words left over, words missing, and words shifted: found only by the
  // end-of-segment checks (all lanes back in the initial state, all words read).
  std::mt19937_64 rng(8);
  for (std::size_t n : {std::size_t(5), std::size_t(64), std::size_t(200), std::size_t(3000)}) {
    const PlaneCase c = forced_element_case("lengths", DType::kBF16, element_bytes(DType::kBF16, n, 90 + n),
                                            Codec::kRans, 1000);
    const std::size_t segments = (n + 999) / 1000;
    std::vector<std::vector<std::uint8_t>> variants;
    for (std::size_t s = 0; s < segments; ++s) {
      variants.push_back(edit_segment(c.plane, s, [](auto* p) { p->insert(p->end(), {0, 0}); }));
      variants.push_back(edit_segment(c.plane, s, [&](auto* p) {
        p->insert(p->end(), {static_cast<std::uint8_t>(rng()), static_cast<std::uint8_t>(rng())});
      }));
      variants.push_back(edit_segment(c.plane, s, [](auto* p) { p->resize(p->size() >= 2 ? p->size() - 2 : 0); }));
      variants.push_back(edit_segment(c.plane, s, [](auto* p) {
        const std::size_t states = 4 * std::min<std::size_t>(p->size() / 4, codec::kRansLanes);
        if (p->size() >= states) p->insert(p->begin() + std::ptrdiff_t(std::min(states, p->size())), {1, 2});
      }));
      variants.push_back(edit_segment(c.plane, s, [](auto* p) { p->insert(p->end(), 4, 0); }));
    }
    std::size_t rejected = 0;
    for (std::size_t i = 0; i < variants.size(); ++i) {
      const Decoded cpu = cpu_decode(c, variants[i]);
      rejected += !cpu.status.ok();
      expect_same(c.name + " length variant " + std::to_string(i), cpu, emulate_one(c, variants[i], order_of(i), i),
                  __LINE__);
    }
    ZCHECK_EQ(rejected, variants.size());
  }
}

ZTEST(cuda_logic_schedule_orders_agree) {
  const PlaneCase h = element_case("orders", DType::kBF16, element_bytes(DType::kBF16, 50000, 81), Codec::kHuffman,
                                   131072);
  const PlaneCase r = element_case("orders", DType::kF32, element_bytes(DType::kF32, 5000, 82), Codec::kRans, 2048);
  for (const PlaneCase* c : {&h, &r}) {
    const Decoded cpu = cpu_decode(*c, c->plane);
    for (Order order : {Order::kForward, Order::kReverse, Order::kShuffled}) {
      for (std::size_t misalign = 0; misalign < 4; ++misalign) {
        expect_same(c->name, cpu, emulate_one(*c, c->plane, order, 5 + misalign, misalign), __LINE__);
      }
    }
  }
}

ZTEST(cuda_logic_plans_reject_what_the_cpu_rejects) {
  // Framing and table errors are found on the host, before any launch.
  const PlaneCase c = element_case("plan", DType::kBF16, element_bytes(DType::kBF16, 3000, 91), Codec::kRans, 1000);
  for (std::size_t size = 0; size < c.plane.size(); size += 1 + size / 16) {
    std::vector<std::uint8_t> cut(c.plane.begin(), c.plane.begin() + size);
    ExactCopy bytes(cut);
    cuda::PlanePlan plan;
    ZCHECK(!cuda::plan_plane(bytes.data(), bytes.size(), &plan).ok());
  }
  cuda::PlanePlan plan;
  ZCHECK(cuda::plan_plane(c.plane.data(), c.plane.size(), &plan).ok());
  ZCHECK_EQ(plan.rans_segments.size(), std::size_t(3));
  ZCHECK(plan.table.size() == cuda::kRansTableEntries / 2);
}

#endif  // ZIPMOE_HAVE_SIMT_EMULATOR

ZTEST(cuda_logic_huffman_table_entries_are_whole_codes) {
  // The device table of a small known code: lengths a:1 b:2 c:3 d:3 (canonical
  // codes 0, 10, 110, 111, read first bit lowest).
  std::uint8_t lengths[256] = {};
  lengths['a'] = 1;
  lengths['b'] = 2;
  lengths['c'] = 3;
  lengths['d'] = 3;
  std::vector<std::uint64_t> table(cuda::kHuffmanLookupEntries);
  cuda::plan_detail::build_huffman_table(lengths, table.data());
  auto symbols_of = [](std::uint64_t e) {
    std::string s;
    for (unsigned j = 0; j < ((e >> cuda::kHuffmanEntryCountShift) & 15u); ++j) s += char((e >> (8 * j)) & 0xff);
    return s;
  };
  // Window 0: eleven 0 bits = six 'a' (the entry holds at most six symbols).
  ZCHECK_EQ(symbols_of(table[0]), std::string("aaaaaa"));
  ZCHECK_EQ((table[0] >> cuda::kHuffmanEntryTotalBitsShift) & 15u, 6u);
  // Bits 1,0 (first bit lowest: 0b01 = bit0 1, bit1 0) -> 'b', then zeros -> 'a's.
  ZCHECK_EQ(symbols_of(table[1]), std::string("baaaaa"));
  ZCHECK_EQ((table[1] >> cuda::kHuffmanEntryFirstLengthShift) & 15u, 2u);
  // 1,1,1 -> 'd' then 1,1,1 -> 'd' then 1,1,1 -> 'd', then bits 1,1 = incomplete 'c'/'d' prefix.
  ZCHECK_EQ(symbols_of(table[2047]), std::string("ddd"));
  ZCHECK_EQ((table[2047] >> cuda::kHuffmanEntryTotalBitsShift) & 15u, 9u);
}

#if defined(ZIPMOE_HAVE_CUDA)

// The real kernels, when this machine has a GPU.
Decoded device_decode(cuda::Decoder& decoder, const PlaneCase& c, const std::vector<std::uint8_t>& plane) {
  Decoded d;
  cuda::PreparedPlane prepared;
  d.status = cuda::PreparedPlane::prepare(plane.data(), plane.size(), &prepared);
  if (!d.status.ok()) return d;
  if (prepared.num_symbols() != c.n) {
    d.status = Status::Format("plane holds another number of symbols");
    return d;
  }
  cuda::DeviceBuffer device_plane, device_sm, device_out;
  const std::vector<std::uint8_t> poison(output_bytes(c), 0xA5);
  Status st = cuda::DeviceBuffer::allocate(plane.size(), &device_plane);
  if (st.ok()) st = device_plane.upload(plane.data(), plane.size());
  if (st.ok()) st = cuda::DeviceBuffer::allocate(c.sm.size(), &device_sm);
  if (st.ok()) st = device_sm.upload(c.sm.data(), c.sm.size());
  if (st.ok()) st = cuda::DeviceBuffer::allocate(poison.size(), &device_out);
  if (st.ok()) st = device_out.upload(poison.data(), poison.size());
  if (!st.ok()) {
    ztest::report_failure(__FILE__, __LINE__, "device buffers: " + st.message());
    d.status = st;
    return d;
  }
  cuda::DecodeJob job;
  job.plane = &prepared;
  job.device_plane = static_cast<const std::uint8_t*>(device_plane.data());
  job.device_sm = static_cast<const std::uint8_t*>(device_sm.data());
  job.dtype = c.dtype;
  job.device_out = device_out.data();
  job.symbols_only = c.symbols_only;
  d.status = decoder.decode(&job, 1);
  d.out.resize(poison.size());
  const Status down = device_out.download(d.out.data(), d.out.size());
  if (!down.ok()) ztest::report_failure(__FILE__, __LINE__, "download: " + down.message());
  return d;
}

ZTEST(cuda_device_decoders_match_cpu) {
  if (!cuda::cuda_available()) {
    std::fprintf(stderr, "  (no CUDA GPU on this machine: the device checks are skipped)\n");
    return;
  }
  // Under compute-sanitizer (tools/device_check.sh) kernels run far slower: smaller inputs.
  const bool small = std::getenv("ZIPMOE_CUDA_TEST_SMALL") != nullptr;
  std::vector<PlaneCase> cases;
  std::uint32_t seed = 500;
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (Codec codec : {Codec::kHuffman, Codec::kRans, Codec::kRaw, Codec::kAuto}) {
      for (std::size_t n : {std::size_t(1), std::size_t(65), std::size_t(4099), std::size_t(small ? 20000 : 300000),
                            std::size_t(small ? 140000 : 1000003)}) {
        cases.push_back(element_case("device", dtype, element_bytes(dtype, n, seed++), codec, 131072));
      }
    }
  }
  cases.push_back(symbol_case("device 8 uniform", DType::kBF16,
                              draw_symbols(std::vector<double>(8, 1.0), small ? 50000 : 500000, 9, 3),
                              Codec::kHuffman, 131072, 1));
  cases.push_back(symbol_case("device constant", DType::kBF16, std::vector<std::uint8_t>(100000, 1), Codec::kAuto,
                              4096, 2));
  cuda::Decoder decoder;
  for (const PlaneCase& c : cases) expect_same(c.name, cpu_decode(c, c.plane), device_decode(decoder, c, c.plane), __LINE__);
  // Corrupt planes.
  std::mt19937_64 rng(3);
  for (Codec codec : {Codec::kHuffman, Codec::kRans}) {
    const PlaneCase c = element_case("device corrupt", DType::kBF16, element_bytes(DType::kBF16, 20000, 600), codec, 3000);
    for (int t = 0; t < (small ? 40 : 300); ++t) {
      std::vector<std::uint8_t> v = c.plane;
      const std::size_t at = rng() % v.size();
      if (t % 3 == 2) {
        for (std::size_t i = at; i < std::min(v.size(), at + 40); ++i) v[i] = static_cast<std::uint8_t>(rng());
      } else {
        v[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
      }
      expect_same(c.name + " variant " + std::to_string(t), cpu_decode(c, v), device_decode(decoder, c, v), __LINE__);
    }
  }
}

#endif  // ZIPMOE_HAVE_CUDA

}  // namespace
