"""What ``GET /metrics`` shows, in Prometheus' text format: the server's requests, tokens and latencies, the
engine's queue, and the expert cache's and memory budget's state, read from the model at each scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Latency buckets in seconds: a token takes milliseconds resident and can take seconds under a tight budget.
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_FIRST_TOKEN_BUCKETS = _TOKEN_BUCKETS + (30.0, 60.0, 120.0)


class Metrics:
    """The server's metrics in a registry of their own (no process-global state)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("zipmoe_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "code"], registry=registry)
        self.sequences = Counter("zipmoe_sequences_finished", "Sequences (choices) finished, by reason: stop, "
                                 "length, cancelled (client gone or shutdown), error", ["reason"], registry=registry)
        self.prompt_tokens = Counter("zipmoe_prompt_tokens", "Prompt tokens of finished sequences",
                                     registry=registry)
        self.cached_prompt_tokens = Counter("zipmoe_prompt_tokens_cached", "Prompt tokens found in the KV cache "
                                            "(prompt caching), not evaluated again", registry=registry)
        self.generation_tokens = Counter("zipmoe_generation_tokens", "Tokens generated", registry=registry)
        self.time_to_first_token = Histogram("zipmoe_time_to_first_token_seconds", "From a request's arrival to "
                                             "its first generated text, queueing included",
                                             buckets=_FIRST_TOKEN_BUCKETS, registry=registry)
        self.time_per_output_token = Histogram("zipmoe_time_per_output_token_seconds", "Generation time of a "
                                               "sequence divided by its tokens", buckets=_TOKEN_BUCKETS,
                                               registry=registry)
        self.request_duration = Histogram("zipmoe_request_duration_seconds", "From a generation request's arrival "
                                          "to its last byte", buckets=_REQUEST_BUCKETS, registry=registry)
        self._source = _EngineCollector()
        registry.register(self._source)

    def attach(self, model, engine, memory_budget: int) -> None:
        """Starts reporting the engine's queue and the model's cache and memory (once the model is loaded)."""
        self._source.model, self._source.engine, self._source.memory_budget = model, engine, memory_budget

    def finished(self, finish) -> None:
        """Counts one sequence's end (an engine Finish)."""
        self.sequences.labels(finish.reason).inc()
        self.prompt_tokens.inc(finish.prompt_tokens)
        self.cached_prompt_tokens.inc(finish.cached_tokens)
        self.generation_tokens.inc(finish.completion_tokens)
        if finish.completion_tokens and finish.reason in ("stop", "length"):
            self.time_per_output_token.observe(finish.generation_seconds / finish.completion_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector:
    """Gauges and counters read at scrape time from the engine and the model (zero while loading)."""

    def __init__(self):
        self.model = None
        self.engine = None
        self.memory_budget = 0

    def describe(self):
        return []

    def collect(self):
        engine = self.engine.stats() if self.engine is not None else {}
        yield GaugeMetricFamily("zipmoe_queue_length", "Requests waiting for the engine", engine.get("queued", 0))
        yield GaugeMetricFamily("zipmoe_running_sequences", "Sequences being generated", engine.get("running", 0))
        yield GaugeMetricFamily("zipmoe_max_sequences", "Sequences decoded together at most (--max-sequences)",
                                engine.get("max_sequences", 0))
        yield CounterMetricFamily("zipmoe_batch_steps", "Forward steps the batch of sequences ran",
                                  engine.get("steps", 0))
        yield CounterMetricFamily("zipmoe_batch_sequence_steps", "Sequences each forward step decoded, summed "
                                  "(divided by zipmoe_batch_steps_total: the mean batch)",
                                  engine.get("sequence_steps", 0))
        yield GaugeMetricFamily("zipmoe_memory_budget_bytes", "The memory budget (0: none, every expert resident)",
                                self.memory_budget)
        if self.model is None:
            return
        memory = self.model.memory()
        held = GaugeMetricFamily("zipmoe_memory_bytes", "Bytes the engine holds, by kind (total: all of them, "
                                 "counted against the budget)", labels=["kind"])
        for kind in ("dense_weights", "experts", "kv_cache", "scratch", "total", "peak"):
            held.add_metric([kind], memory[kind])
        yield held
        stats = self.model.stats()
        total = stats["total"]
        served = CounterMetricFamily("zipmoe_expert_requests", "Experts the forward pass asked the cache for, by "
                                     "the tier that served them (absent: a miss, read from storage)",
                                     labels=["tier"])
        for tier, count in total["served_from"].items():
            served.add_metric([tier], count)
        yield served
        yield CounterMetricFamily("zipmoe_expert_hits", "Expert requests served from memory", total["hits"])
        yield CounterMetricFamily("zipmoe_expert_misses", "Expert requests read from storage", total["misses"])
        yield CounterMetricFamily("zipmoe_expert_prefetch_hits", "Expert requests a prefetch had already served",
                                  total["prefetch_hits"])
        yield CounterMetricFamily("zipmoe_expert_bytes_read", "Bytes read from the container for experts "
                                  "(prefetches included)", total["bytes_read"])
        yield CounterMetricFamily("zipmoe_expert_read_seconds", "Seconds the I/O threads spent reading experts",
                                  total["read_seconds"])
        yield CounterMetricFamily("zipmoe_expert_decode_seconds", "Seconds spent decoding experts",
                                  total["decode_seconds"])
        yield CounterMetricFamily("zipmoe_expert_stall_seconds", "Seconds the forward pass waited for experts",
                                  total["stall_seconds"])
        tiers = GaugeMetricFamily("zipmoe_expert_cache_bytes", "Bytes each expert cache tier holds", labels=["tier"])
        for tier, size in stats["tier_bytes"].items():
            tiers.add_metric([tier], size)
        yield tiers
        yield CounterMetricFamily("zipmoe_prompt_cache_hits", "Requests whose prompt began with tokens the KV cache "
                                  "held", engine.get("prompt_cache_hits", 0))
