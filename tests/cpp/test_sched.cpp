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

#include "common/file_io.h"
#include "format/container_file.h"
#include "sched/chunk_source.h"
#include "sched/fetch_order.h"
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
