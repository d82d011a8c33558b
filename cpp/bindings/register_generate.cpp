// The generation loop (zipmoe/generate.h) for python/zipmoe/model.py: a native
// Generation whose next() and run() release the GIL, taking it back only to ask
// the Python side whether to go on (Ctrl-C, a callback) once per token.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "zipmoe/generate.h"
#include "zipmoe/model.h"

namespace zipmoe::bindings {

namespace {

using TokenArray = py::array_t<std::int64_t, py::array::c_style>;

// A Generation with the context it holds kept alive, closed on demand (a
// Python generator's close() gives the context back at once).
class PyGeneration {
 public:
  PyGeneration(std::shared_ptr<Context> context, const std::vector<std::int32_t>& prompt,
               const GenerateOptions& options)
      : context_(std::move(context)) {
    generation_ = std::make_unique<Generation>(*context_, prompt, options);
  }

  // The next piece, or None at the end. keep_going (None or a callable
  // returning a bool) is asked once per token, after Python's own signal check.
  std::optional<std::string> next(const py::object& keep_going) {
    Generation& generation = open();
    std::optional<py::error_already_set> error;
    const KeepGoing ask = asker(keep_going, &error);
    std::string piece;
    bool more = false;
    {
      py::gil_scoped_release release;
      more = generation.next(&piece, ask);
    }
    if (error) throw std::move(*error);
    if (!more) return std::nullopt;
    return piece;
  }

  // The whole text (every piece, joined).
  std::string run(const py::object& keep_going) {
    Generation& generation = open();
    std::optional<py::error_already_set> error;
    const KeepGoing ask = asker(keep_going, &error);
    std::string text, piece;
    {
      py::gil_scoped_release release;
      while (generation.next(&piece, ask)) text += piece;
    }
    if (error) throw std::move(*error);
    return text;
  }

  void cancel() { open().cancel(); }
  // Gives the context back (the generation is cancelled unless it ended).
  void close() {
    if (generation_) stats_ = generation_->stats();
    generation_.reset();
  }
  const GenerationStats& stats() const { return generation_ ? generation_->stats() : stats_; }

 private:
  Generation& open() {
    if (!generation_) throw InvalidArgumentError("the generation is closed");
    return *generation_;
  }

  // Python's signal handlers (Ctrl-C), then the callback; an exception either
  // raises ends the generation and is raised again once the native call returns.
  static KeepGoing asker(const py::object& callback, std::optional<py::error_already_set>* error) {
    return [callback, error]() -> bool {
      py::gil_scoped_acquire gil;
      try {
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        if (callback.is_none()) return true;
        return py::cast<bool>(callback());
      } catch (py::error_already_set& e) {
        error->emplace(std::move(e));
        return false;
      }
    };
  }

  std::shared_ptr<Context> context_;
  std::unique_ptr<Generation> generation_;
  GenerationStats stats_;
};

std::vector<std::int32_t> prompt_ids(const TokenArray& prompt) {
  if (prompt.ndim() != 1) throw InvalidArgumentError("the prompt must be one-dimensional");
  std::vector<std::int32_t> ids(static_cast<std::size_t>(prompt.shape(0)));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int64_t id = prompt.data()[i];
    if (id < 0 || id > INT32_MAX) {
      throw InvalidArgumentError("token id " + std::to_string(id) + " at index " + std::to_string(i) +
                                 " is out of range");
    }
    ids[i] = static_cast<std::int32_t>(id);
  }
  return ids;
}

GenerateOptions generate_options(float temperature, int top_k, float top_p, float min_p, float repetition_penalty,
                                 float presence_penalty, float frequency_penalty, std::size_t penalty_last_n,
                                 std::uint64_t seed, std::size_t max_new_tokens, const std::vector<std::string>& stop,
                                 bool skip_special_tokens, std::optional<int> logprobs, std::size_t sequence) {
  GenerateOptions options;
  options.sampling.temperature = temperature;
  options.sampling.top_k = top_k;
  options.sampling.top_p = top_p;
  options.sampling.min_p = min_p;
  options.sampling.repetition_penalty = repetition_penalty;
  options.sampling.presence_penalty = presence_penalty;
  options.sampling.frequency_penalty = frequency_penalty;
  options.sampling.penalty_last_n = penalty_last_n;
  options.sampling.seed = seed;
  options.max_new_tokens = max_new_tokens;
  options.stop = stop;
  options.skip_special_tokens = skip_special_tokens;
  if (logprobs && *logprobs < 0) throw InvalidArgumentError("logprobs must be >= 0 or None");
  options.logprobs = logprobs ? *logprobs : -1;
  options.sequence = sequence;
  return options;
}

// A BatchScheduler with its context kept alive, closed on demand.
class PyBatch {
 public:
  PyBatch(std::shared_ptr<Context> context, const BatchOptions& options) : context_(std::move(context)) {
    scheduler_ = std::make_unique<BatchScheduler>(*context_, options);
  }

  std::size_t add(const std::vector<std::int32_t>& prompt, const GenerateOptions& options) {
    return open().add(prompt, options);
  }

  // One step's pieces as [(id, text)], or None when every generation has ended.
  std::optional<std::vector<std::pair<std::size_t, std::string>>> step() {
    BatchScheduler& scheduler = open();
    std::vector<BatchScheduler::Piece> pieces;
    bool more = false;
    {
      py::gil_scoped_release release;
      more = scheduler.step(&pieces);
    }
    if (!more) return std::nullopt;
    std::vector<std::pair<std::size_t, std::string>> out;
    for (BatchScheduler::Piece& p : pieces) out.emplace_back(p.id, std::move(p.text));
    return out;
  }

  BatchScheduler& open() {
    if (!scheduler_) throw InvalidArgumentError("the batch is closed");
    return *scheduler_;
  }
  void close() {
    if (!scheduler_) return;
    for (std::size_t id = 0; id < scheduler_->size(); ++id) {
      if (!scheduler_->done(id)) scheduler_->cancel(id);
      stats_.push_back(scheduler_->stats(id));
    }
    scheduler_.reset();
  }
  const GenerationStats& stats(std::size_t id) const {
    if (scheduler_) return scheduler_->stats(id);
    if (id >= stats_.size()) throw InvalidArgumentError("no generation " + std::to_string(id));
    return stats_[id];
  }

 private:
  std::shared_ptr<Context> context_;
  std::unique_ptr<BatchScheduler> scheduler_;
  std::vector<GenerationStats> stats_;  // once closed
};

// The statistics as a dict; token_ids and logprobs from index `first` on (a
// stream asks for what is new since its last look, so a long generation costs
// no more than its tokens).
py::dict stats_dict(const GenerationStats& s, std::size_t first = 0) {
  py::dict d;
  d["prompt_tokens"] = s.prompt_tokens;
  d["reused_prompt_tokens"] = s.reused_prompt_tokens;
  d["prompt_seconds"] = s.prompt_seconds;
  d["prompt_tokens_per_second"] = s.prompt_tokens_per_second;
  d["generated_tokens"] = s.generated_tokens;
  d["generation_seconds"] = s.generation_seconds;
  d["generation_tokens_per_second"] = s.generation_tokens_per_second;
  d["finish_reason"] = s.finish_reason == FinishReason::kNone ? py::object(py::none())
                                                               : py::object(py::str(finish_reason_name(s.finish_reason)));
  d["seed"] = s.seed;
  py::list ids;
  for (std::size_t i = first; i < s.token_ids.size(); ++i) ids.append(s.token_ids[i]);
  d["token_ids"] = ids;
  // as zipmoe._core.token_logprobs gives them: (logprob, [(id, logprob) of the likeliest]) per sampled id
  py::list logprobs;
  for (std::size_t i = first; i < s.logprobs.size(); ++i) {
    const TokenLogprobs& entry = s.logprobs[i];
    py::list top;
    for (const TokenLogprob& t : entry.top) top.append(py::make_tuple(t.token, t.logprob));
    logprobs.append(py::make_tuple(entry.chosen.logprob, top));
  }
  d["logprobs"] = logprobs;
  return d;
}

}  // namespace

void register_generate(py::module_& m) {
  py::class_<PyGeneration>(m, "Generation",
                           "One generation on a context (include/zipmoe/generate.h); zipmoe.Context.generate uses it.")
      .def(py::init([](std::shared_ptr<Context> context, const TokenArray& prompt, float temperature, int top_k,
                       float top_p, float min_p, float repetition_penalty, float presence_penalty,
                       float frequency_penalty, std::size_t penalty_last_n, std::uint64_t seed,
                       std::size_t max_new_tokens, const std::vector<std::string>& stop, bool skip_special_tokens,
                       std::optional<int> logprobs, std::size_t sequence) {
             const std::vector<std::int32_t> ids = prompt_ids(prompt);
             const GenerateOptions options =
                 generate_options(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                                  frequency_penalty, penalty_last_n, seed, max_new_tokens, stop,
                                  skip_special_tokens, logprobs, sequence);
             py::gil_scoped_release release;  // the constructor evaluates nothing, but takes locks
             return std::make_unique<PyGeneration>(std::move(context), ids, options);
           }),
           py::arg("context"), py::arg("prompt"), py::arg("temperature") = 1.0f, py::arg("top_k") = 0,
           py::arg("top_p") = 1.0f, py::arg("min_p") = 0.0f, py::arg("repetition_penalty") = 1.0f,
           py::arg("presence_penalty") = 0.0f, py::arg("frequency_penalty") = 0.0f, py::arg("penalty_last_n") = 0,
           py::arg("seed") = 0, py::arg("max_new_tokens") = 256, py::arg("stop") = std::vector<std::string>(),
           py::arg("skip_special_tokens") = true, py::arg("logprobs") = py::none(), py::arg("sequence") = 0)
      .def("next", &PyGeneration::next, py::arg("keep_going") = py::none())
      .def("run", &PyGeneration::run, py::arg("keep_going") = py::none())
      .def("cancel", &PyGeneration::cancel)
      .def("close", &PyGeneration::close)
      .def_property_readonly("stats", [](const PyGeneration& g) { return stats_dict(g.stats()); })
      .def(
          "stats_since", [](const PyGeneration& g, std::size_t first) { return stats_dict(g.stats(), first); },
          py::arg("first"), "The statistics with token_ids and logprobs from index `first` on.");

  py::class_<PyBatch>(m, "BatchScheduler",
                      "Generations stepped together on one context (include/zipmoe/generate.h); "
                      "zipmoe.Context.generate uses it for a list of prompts.")
      .def(py::init([](std::shared_ptr<Context> context, std::size_t step_tokens, std::size_t prompt_chunk,
                       bool reuse_prefixes) {
             BatchOptions options;
             options.step_tokens = step_tokens;
             options.prompt_chunk = prompt_chunk;
             options.reuse_prefixes = reuse_prefixes;
             return std::make_unique<PyBatch>(std::move(context), options);
           }),
           py::arg("context"), py::arg("step_tokens") = 0, py::arg("prompt_chunk") = 0,
           py::arg("reuse_prefixes") = true)
      .def(
          "add",
          [](PyBatch& batch, const TokenArray& prompt, float temperature, int top_k, float top_p, float min_p,
             float repetition_penalty, float presence_penalty, float frequency_penalty, std::size_t penalty_last_n,
             std::uint64_t seed, std::size_t max_new_tokens, const std::vector<std::string>& stop,
             bool skip_special_tokens, std::optional<int> logprobs) {
            return batch.add(prompt_ids(prompt),
                             generate_options(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                                              frequency_penalty, penalty_last_n, seed, max_new_tokens, stop,
                                              skip_special_tokens, logprobs, 0));
          },
          py::arg("prompt"), py::arg("temperature") = 1.0f, py::arg("top_k") = 0, py::arg("top_p") = 1.0f,
          py::arg("min_p") = 0.0f, py::arg("repetition_penalty") = 1.0f, py::arg("presence_penalty") = 0.0f,
          py::arg("frequency_penalty") = 0.0f, py::arg("penalty_last_n") = 0, py::arg("seed") = 0,
          py::arg("max_new_tokens") = 256, py::arg("stop") = std::vector<std::string>(),
          py::arg("skip_special_tokens") = true, py::arg("logprobs") = py::none())
      .def("step", &PyBatch::step)
      .def("cancel", [](PyBatch& batch, std::size_t id) { batch.open().cancel(id); }, py::arg("id"))
      .def("done", [](PyBatch& batch, std::size_t id) { return batch.open().done(id); }, py::arg("id"))
      .def("stats", [](const PyBatch& batch, std::size_t id) { return stats_dict(batch.stats(id)); }, py::arg("id"))
      .def(
          "stats_since",
          [](const PyBatch& batch, std::size_t id, std::size_t first) { return stats_dict(batch.stats(id), first); },
          py::arg("id"), py::arg("first"), "A generation's statistics with token_ids and logprobs from `first` on.")
      .def_property_readonly("running", [](PyBatch& batch) { return batch.open().running(); })
      .def_property_readonly("steps", [](PyBatch& batch) { return batch.open().steps(); })
      .def("close", &PyBatch::close);
}

}  // namespace zipmoe::bindings
