// The fetch scheduler: Johnson's order against brute force, and the I/O queue
// (demand reads before prefetch reads, cancellation, promotion) and chunk
// sources (pread, O_DIRECT, mmap) on a real container, with damaged and
// truncated files reported as errors.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/cpu_features.h"
#include "common/file_io.h"
#include "common/memory_ledger.h"
#include "format/container_file.h"
#include "sched/chunk_source.h"
#include "sched/fetch_order.h"
#include "sched/fetch_pipeline.h"
#include "sched/io_queue.h"
#include "test_data.h"
#include "test_framework.h"
#include "zipmoe/container.h"

using namespace zipmoe;
using namespace zipmoe::sched;

ZTEST(sched_johnson_order_is_optimal_for_two_stages) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> time(0.0, 10.0);
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t n = 1 + rng() % 7;
    std::vector<FetchJob> jobs(n);
    for (FetchJob& j : jobs) {
      j.io_seconds = rng() % 4 == 0 ? 0.0 : time(rng);  // some decode-only jobs
      j.decode_seconds = time(rng);
    }
    const std::vector<std::size_t> order = johnson_order(jobs);
    std::vector<std::size_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < n; ++i) ZCHECK_EQ(sorted[i], i);
    std::vector<std::size_t> p(n);
    std::iota(p.begin(), p.end(), 0);
    double best = 1e300;
    do {
      best = std::min(best, flow_shop_makespan(jobs, p));
    } while (std::next_permutation(p.begin(), p.end()));
    ZCHECK(flow_shop_makespan(jobs, order) <= best + 1e-9);
    // decode-only jobs lead
    bool seen_io = false;
    for (std::size_t i : order) {
      if (jobs[i].io_seconds > 0 && jobs[i].io_seconds >= jobs[i].decode_seconds) seen_io = true;
      if (jobs[i].io_seconds == 0) ZCHECK(!seen_io);
    }
  }
  ZCHECK(flow_shop_makespan({{2, 1}, {1, 3}}, {0, 1}) == 6.0);
  ZCHECK(flow_shop_makespan({{2, 1}, {1, 3}}, {1, 0}) == 5.0);
}

namespace {

// The core's reader of the container (sched/ reads through it).
std::unique_ptr<format::ContainerFile> open_file(const std::string& path, IoMode mode = IoMode::kPread) {
  std::unique_ptr<format::ContainerFile> file;
  ZCHECK(format::ContainerFile::open(path, mode, &file).ok());
  return file;
}

std::string temp_path(const std::string& name) {
  const char* base = std::getenv("TMPDIR");
  return std::string(base && *base ? base : "/tmp") + "/zipmoe-sched-" + std::to_string(::getpid()) + "-" + name;
}

// 12 tensors of 20000 BF16 elements (chunks of ~7 kB and 20 kB).
std::string write_container(const std::string& name) {
  const std::string path = temp_path(name);
  ContainerWriter writer(path, "{}");
  for (int i = 0; i < 12; ++i) {
    const std::vector<std::uint8_t> data = ztest::make_weights(DType::kBF16, 20000, 100 + i);
    writer.add_tensor("t" + std::to_string(i), data.data(), DType::kBF16, {20000});
  }
  writer.finish();
  return path;
}

}  // namespace

ZTEST(sched_io_queue_serves_demand_first_and_cancels_and_promotes) {
  const std::string path = write_container("queue.zmoe");
  const auto file = open_file(path, IoMode::kDirect);
  const format::ContainerFile& reader = *file;
  std::unique_ptr<ChunkSource> source;
  ZCHECK(ChunkSource::open(&reader, IoMode::kDirect, &source).ok());
  const std::size_t slot = 32768;
  AlignedBuffer buffers(slot * 24, 4096);
  std::mutex mutex;
  std::condition_variable done;
  std::vector<std::uint32_t> order;
  std::atomic<bool> hold{true};
  IoQueue queue(
      source.get(),
      [&](const ReadRequest& r, const ReadResult& result) {
        while (hold.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        std::lock_guard<std::mutex> lock(mutex);
        ZCHECK(result.status.ok());
        ZCHECK_EQ(result.bytes, reader.chunks()[r.chunk].stored_size);
        order.push_back(r.cookie);
        done.notify_all();
      },
      1);
  // The first read occupies the thread (its completion is held) while the rest queue up.
  queue.submit({0, buffers.data(), slot, 1, 0}, IoPriority::kPrefetch);
  while (queue.queued() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (std::uint32_t i = 1; i <= 6; ++i) {
    queue.submit({i, buffers.data() + i * slot, slot, 10 + i % 3, i}, i % 2 ? IoPriority::kPrefetch : IoPriority::kDemand);
  }
  // tags: 1 -> 11, 2 -> 12, 3 -> 10, 4 -> 11, 5 -> 12, 6 -> 10
  ZCHECK_EQ(queue.cancel(12), 2u);  // cookies 2 and 5
  queue.promote(11);                // cookie 1 (prefetch) joins the demand queue after 4, 6
  hold.store(false);
  {
    std::unique_lock<std::mutex> lock(mutex);
    done.wait(lock, [&] { return order.size() == 5; });
  }
  const std::vector<std::uint32_t> want = {0, 4, 6, 1, 3};
  ZCHECK(order == want);
  ZCHECK_EQ(queue.completed(), 5u);

  // Several readers: every chunk read once, bytes identical to the reader's.
  std::vector<int> seen(reader.chunks().size(), 0);
  int failures = 0;
  std::size_t finished = 0;
  {
    IoQueue many(
        source.get(),
        [&](const ReadRequest& r, const ReadResult& result) {
          AlignedBuffer check(reader.chunk_buffer_size(r.chunk), 4096);
          ZCHECK(reader.read_chunk(r.chunk, check.data(), check.size()).ok());
          std::lock_guard<std::mutex> lock(mutex);
          failures += !result.status.ok() || std::memcmp(check.data(), r.buffer, result.bytes) != 0;
          ++seen[r.chunk];
          ++finished;
          done.notify_all();
        },
        3);
    for (std::uint32_t c = 0; c < reader.chunks().size(); ++c) {
      many.submit({c, buffers.data() + c * slot, slot, c, c}, c % 2 ? IoPriority::kPrefetch : IoPriority::kDemand);
    }
    std::unique_lock<std::mutex> lock(mutex);
    done.wait(lock, [&] { return finished == reader.chunks().size(); });
  }
  ZCHECK_EQ(failures, 0);
  for (int n : seen) ZCHECK_EQ(n, 1);
  ::unlink(path.c_str());
}

ZTEST(sched_chunk_sources_read_verify_and_report_damage) {
  const std::string path = write_container("source.zmoe");
  for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    const auto file = open_file(path, mode == IoMode::kMmap ? IoMode::kPread : mode);
    const format::ContainerFile& reader = *file;
    std::unique_ptr<ChunkSource> source;
    ZCHECK(ChunkSource::open(&reader, mode, &source).ok());
    for (std::uint32_t c = 0; c < reader.chunks().size(); ++c) {
      AlignedBuffer a(reader.chunk_buffer_size(c), 4096), b(reader.chunk_buffer_size(c), 4096);
      ZCHECK(source->read(c, a.data(), a.size()).ok());
      ZCHECK(reader.read_chunk(c, b.data(), b.size()).ok());
      ZCHECK(std::memcmp(a.data(), b.data(), reader.chunks()[c].stored_size) == 0);
    }
  }
  // Damage a chunk in place, then truncate the file: errors naming the file, for every mode.
  const ChunkInfo victim = open_file(path)->chunks()[5];
  std::ifstream in(path, std::ios::binary);
  std::vector<char> damaged_file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  damaged_file[victim.offset + 10] ^= 0x77;
  damaged_file[victim.offset + 11] ^= 0x13;
  for (IoMode mode : {IoMode::kPread, IoMode::kDirect, IoMode::kMmap}) {
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(damaged_file.data(), static_cast<std::streamsize>(damaged_file.size()));
    }
    const auto file = open_file(path, mode == IoMode::kMmap ? IoMode::kPread : mode);
    std::unique_ptr<ChunkSource> source;
    ZCHECK(ChunkSource::open(file.get(), mode, &source).ok());
    AlignedBuffer buffer(65536, 4096);
    const Status damaged = source->read(5, buffer.data(), buffer.size());
    ZCHECK(damaged.code() == StatusCode::kChecksum);
    ZCHECK(damaged.message().find(path) != std::string::npos);
    ZCHECK(damaged.message().find("chunk 5") != std::string::npos);
    ZCHECK_EQ(::truncate(path.c_str(), static_cast<off_t>(victim.offset)), 0);
    const Status truncated = source->read(7, buffer.data(), buffer.size());
    ZCHECK(truncated.code() == StatusCode::kFormat);
    ZCHECK(truncated.message().find("truncated") != std::string::npos);
  }
  ::unlink(path.c_str());
}

// ------------------------------------------------------------------- fetch pipeline

namespace {

// 4 items of 3 parts each (BF16, 6000 elements per part), laid out as the expert cache lays out experts.
struct PipelineFixture {
  std::string path;
  std::unique_ptr<format::ContainerFile> file;
  std::vector<FetchLayout> layouts;
  std::size_t staging_bytes = 0;
  std::size_t decoded_bytes = 0;

  explicit PipelineFixture(const std::string& name) : path(temp_path(name)) {
    ContainerWriter writer(path, "{}");
    for (std::uint32_t item = 0; item < 4; ++item) {
      for (std::uint32_t part = 0; part < 3; ++part) {
        const std::vector<std::uint8_t> data = ztest::make_weights(DType::kBF16, 6000, 10 * item + part);
        writer.add_tensor("t" + std::to_string(item) + "." + std::to_string(part), data.data(), DType::kBF16, {6000},
                          TensorRole::expert_projection(0, item, "p" + std::to_string(part)));
      }
    }
    writer.finish();
    file = open_file(path);
    layouts.resize(4);
    for (std::uint32_t item = 0; item < 4; ++item) {
      FetchLayout& layout = layouts[item];
      layout.part_count = 3;
      std::size_t staging = 0, decoded = 0;
      for (int j = 0; j < 3; ++j) {
        const TensorInfo* t = file->find("t" + std::to_string(item) + "." + std::to_string(j));
        PartLayout& p = layout.parts[j];
        p.tensor = t;
        p.chunk[kExponentPlane] = t->exponent_chunk;
        p.chunk[kSmPlane] = t->sm_chunk;
        for (int plane = 0; plane < kPlanes; ++plane) {
          p.stored_bytes[plane] = file->chunks()[p.chunk[plane]].stored_size;
          p.staging_size[plane] = file->chunk_buffer_size(p.chunk[plane]);
          p.staging_offset[plane] = staging;
          staging += p.staging_size[plane];
        }
        p.decoded_bytes = t->decoded_bytes();
        p.decoded_offset = decoded;
        decoded += (p.decoded_bytes + 63) / 64 * 64;
      }
      staging_bytes = std::max(staging_bytes, staging);
      decoded_bytes = std::max(decoded_bytes, decoded);
    }
  }
  ~PipelineFixture() { ::unlink(path.c_str()); }

  PipelineOptions options(std::size_t decode_buffers, std::size_t staging_buffers) const {
    PipelineOptions o;
    o.decode_buffers = decode_buffers;
    o.staging_buffers = staging_buffers;
    o.decoded_block_bytes = decoded_bytes;
    o.staging_bytes = staging_bytes;
    o.groups = 1;
    o.items_per_request = 2;
    return o;
  }

  FetchSpec spec(std::size_t item, IoPriority priority) const {
    FetchSpec s;
    s.item = item;
    s.layout = &layouts[item];
    s.priority = priority;
    return s;
  }

  // Whether the decode buffer of `fetch` holds item `item`'s parts, bit for bit.
  bool holds(const FetchPipeline& pipeline, FetchId fetch, std::size_t item) const {
    const std::uint8_t* decoded = pipeline.decoded(fetch);
    if (!decoded) return false;
    for (int j = 0; j < 3; ++j) {
      const PartLayout& p = layouts[item].parts[j];
      std::vector<std::uint8_t> expected(p.decoded_bytes);
      if (!file->decode_tensor(*p.tensor, expected.data(), expected.size(), nullptr, Isa::kScalar).ok()) return false;
      if (std::memcmp(decoded + p.decoded_offset, expected.data(), expected.size()) != 0) return false;
    }
    return true;
  }
};

// Decodes until `fetches` are all kDecoded (or one fails); false on a starved or failed pipeline.
bool run_until_decoded(FetchPipeline* pipeline, FetchPipeline::Lock& lock, const std::vector<FetchId>& fetches) {
  for (int step = 0; step < 1000; ++step) {
    bool all = true;
    for (FetchId f : fetches) {
      if (pipeline->state(f) == FetchState::kFailed) return false;
      all &= pipeline->state(f) == FetchState::kDecoded;
    }
    if (all) return true;
    DecodeJob job;
    const FetchPipeline::Work work = pipeline->next_decode(fetches, &job);
    if (work == FetchPipeline::Work::kFound) {
      bool completed = false;
      pipeline->decode(lock, job, &completed);
      if (completed) pipeline->finish(job.fetch);
    } else if (work == FetchPipeline::Work::kStarved) {
      return false;
    } else {
      pipeline->wait(lock);
    }
  }
  return false;
}

}  // namespace

ZTEST(sched_fetch_pipeline_reads_decodes_and_recycles_its_buffers) {
  PipelineFixture fixture("pipeline.zmoe");
  MemoryLedger ledger;
  ThreadPool pool(2);
  FetchPipeline pipeline(fixture.file.get(), &pool, &ledger, default_isa());
  ZCHECK(pipeline.allocate(fixture.options(2, 1)).ok());
  const std::uint64_t working_set = ledger.total();
  ZCHECK_EQ(pipeline.working_set_bytes(), working_set);
  pipeline.start(2);
  FetchPipeline::Lock lock = pipeline.lock();

  // Three demand fetches through one staging buffer and two decode buffers: in
  // Johnson's order, each one's staging buffer passed on once it is finished.
  std::vector<FetchId> fetches;
  for (std::size_t item = 0; item < 3; ++item) fetches.push_back(pipeline.create(fixture.spec(item, IoPriority::kDemand)));
  for (FetchId f : fetches) ZCHECK(pipeline.state(f) == FetchState::kQueued);
  pipeline.schedule(fetches, {{1.0, 0.5}, {0.1, 0.5}, {2.0, 0.1}}, true);
  ZCHECK(pipeline.state(fetches[1]) == FetchState::kActive);  // read < decode: first in Johnson's order
  ZCHECK(pipeline.state(fetches[0]) == FetchState::kQueued);
  ZCHECK(run_until_decoded(&pipeline, lock, {fetches[1]}));
  ZCHECK(fixture.holds(pipeline, fetches[1], 1));
  ZCHECK(pipeline.state(fetches[0]) == FetchState::kActive);  // then by decreasing decode time
  ZCHECK(pipeline.state(fetches[2]) == FetchState::kQueued);
  ZCHECK(run_until_decoded(&pipeline, lock, {fetches[0]}));
  ZCHECK(fixture.holds(pipeline, fetches[0], 0));
  // Both decode buffers are held: the third fetch reads, then starves until one is freed.
  DecodeJob job;
  FetchPipeline::Work work;
  while ((work = pipeline.next_decode({fetches[2]}, &job)) == FetchPipeline::Work::kNone) pipeline.wait(lock);
  ZCHECK(work == FetchPipeline::Work::kStarved);
  ZCHECK(pipeline.decode_buffer_held());
  pipeline.free(fetches[1]);
  ZCHECK(!pipeline.in_progress(fetches[1]));
  ZCHECK(pipeline.state(fetches[1]) == FetchState::kFree);
  ZCHECK(run_until_decoded(&pipeline, lock, {fetches[2]}));
  ZCHECK(fixture.holds(pipeline, fetches[2], 2));
  pipeline.free(fetches[0]);
  pipeline.free(fetches[2]);
  ZCHECK(pipeline.measurements().decoded_bytes == 3u * 3u * 12000u);
  ZCHECK_EQ(pipeline.counters(0).chunks_read, std::uint64_t(18));

  // A handle outlives its fetch: a new fetch in the same record is not mistaken for it.
  const FetchId again = pipeline.create(fixture.spec(3, IoPriority::kDemand));
  ZCHECK(pipeline.in_progress(again));
  ZCHECK(!pipeline.in_progress(fetches[2]));
  pipeline.cancel(fetches[2]);  // stale: does nothing
  ZCHECK(pipeline.in_progress(again));
  pipeline.cancel(again);
  ZCHECK(!pipeline.in_progress(again));
  ZCHECK_EQ(pipeline.working_set_bytes(), working_set);
}

ZTEST(sched_fetch_pipeline_puts_demand_before_guesses) {
  PipelineFixture fixture("pipeline-guess.zmoe");
  MemoryLedger ledger;
  FetchPipeline pipeline(fixture.file.get(), nullptr, &ledger, default_isa());
  ZCHECK(pipeline.allocate(fixture.options(2, 1)).ok());
  pipeline.start(1);
  FetchPipeline::Lock lock = pipeline.lock();

  // A guess takes the only staging buffer; a demand fetch then takes it back
  // (the guess is cancelled), and a guess adopted by a request becomes demand.
  const FetchId guess = pipeline.create(fixture.spec(0, IoPriority::kPrefetch));
  pipeline.dispatch();
  ZCHECK(pipeline.state(guess) == FetchState::kActive);
  const FetchId demand = pipeline.create(fixture.spec(1, IoPriority::kDemand));
  pipeline.schedule({demand}, {{1.0, 1.0}}, true);
  ZCHECK(!pipeline.in_progress(guess));
  ZCHECK_EQ(pipeline.prefetches_cancelled(), std::uint64_t(1));
  ZCHECK(run_until_decoded(&pipeline, lock, {demand}));
  ZCHECK(fixture.holds(pipeline, demand, 1));
  pipeline.free(demand);

  const FetchId adopted = pipeline.create(fixture.spec(2, IoPriority::kPrefetch));
  pipeline.dispatch();
  ZCHECK(!pipeline.adopt(adopted));  // not decoded yet
  pipeline.schedule({}, {}, true);
  ZCHECK(run_until_decoded(&pipeline, lock, {adopted}));
  ZCHECK(fixture.holds(pipeline, adopted, 2));

  // Guesses the request did not confirm are cancelled; the allowance shrinks while they are wrong.
  const std::size_t generous = pipeline.prefetch_allowance();
  ZCHECK(generous > 0);
  for (int round = 0; round < 6; ++round) {
    const FetchId wrong = pipeline.create(fixture.spec(3, IoPriority::kPrefetch));
    pipeline.settle_guesses([](std::size_t) { return false; });
    ZCHECK(!pipeline.in_progress(wrong));
  }
  ZCHECK(pipeline.prefetch_allowance() < generous);
  pipeline.free(adopted);
}
