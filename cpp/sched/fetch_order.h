// The order in which one layer's expert fetches go through the two stages of
// the fetch pipeline: the I/O thread (storage reads) and the decode threads.
//
// A fetch is a job with an I/O time a (0 for an expert whose planes are all in
// RAM) and a decode time b (its decoded bytes over the throughput of all decode
// threads: the segments of one tensor are spread over every thread, so the
// decode stage acts as one machine L times as fast as one thread). Jobs go
// through I/O then decode in the same order: a two-machine flow shop, for which
// Johnson's rule gives the shortest makespan:
//   first the jobs with a < b, by increasing a   (decode-only jobs lead: they
//                                                 keep the threads busy while
//                                                 the first read is in flight)
//   then the jobs with a >= b, by decreasing b
// This refines the ZipMoE paper's cache-affinity order (jobs that need storage
// first on the drive, decode-only jobs filling the workers), whose list schedule
// over L independent workers is within (3 - 1/L) of optimal; with malleable
// decoding the two-stage model is solved exactly. Ties keep the given order, so
// the result is deterministic.
#pragma once

#include <cstddef>
#include <vector>

namespace zipmoe::sched {

struct FetchJob {
  double io_seconds = 0;
  double decode_seconds = 0;
};

// A permutation of [0, jobs.size()).
std::vector<std::size_t> johnson_order(const std::vector<FetchJob>& jobs);

// Makespan of running `jobs` in `order` through I/O then decode (each stage one
// job at a time, a job's decode after its read).
double flow_shop_makespan(const std::vector<FetchJob>& jobs, const std::vector<std::size_t>& order);

}  // namespace zipmoe::sched
