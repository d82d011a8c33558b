"""`zipmoe serve` as a real server process on a free localhost port, driven by the `openai` client and raw HTTP.

Every answer is checked against Model.generate in this process with the same arguments (precision "exact", so the
thread count and how a prompt is split by prompt caching cannot change a bit).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import zipmoe

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

MODEL_NAME = "zipmoe-tiny-shakespeare"
START_TIMEOUT = 120
PROMPTS = ["ROMEO.", "What light through yonder window breaks?", "Now is the winter of our discontent",
           "KING HENRY.\nOnce more unto the breach", "Friends, Romans, countrymen", "To be, or not to be"]


class ServerProcess:
    """`python -m zipmoe serve --port 0 ARGS`, its stderr collected, its URL read from the line it prints."""

    def __init__(self, *args, env_extra: dict | None = None, wait_ready: bool = True):
        env = dict(os.environ)
        env.update(env_extra or {})
        self.process = subprocess.Popen([sys.executable, "-m", "zipmoe", "serve", "--port", "0", *map(str, args)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self.lines: list = []
        self._listening = threading.Event()
        self.url = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(START_TIMEOUT) or self.url is None:
            self.stop()
            pytest.fail(f"the server did not start listening:\n{self.stderr}")
        if wait_ready:
            self.wait_ready()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if match:
                self.url = match.group(1)
                self._listening.set()
        self._listening.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60, trust_env=False, **kwargs)

    def post(self, path: str, body=None, **kwargs) -> httpx.Response:
        if body is not None and not isinstance(body, (bytes, str)):
            kwargs["json"] = body
        elif body is not None:
            kwargs["content"] = body
        return httpx.post(self.url + path, timeout=60, trust_env=False, **kwargs)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.stderr}")
            try:
                if self.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"the server did not become ready:\n{self.stderr}")

    def client(self, api_key: str = "unused") -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120,
                             http_client=httpx.Client(trust_env=False))

    def metrics(self) -> dict:
        """{(name, labels as a sorted tuple): value} of every sample of /metrics."""
        response = self.get("/metrics")
        assert response.status_code == 200
        samples = {}
        for family in prometheus_parser.text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture(scope="module")
def model():
    """The built-in model as the server loads it, in this process (for the expected answers)."""
    return zipmoe.load(precision="exact", threads=1)


@pytest.fixture(scope="module")
def server():
    process = ServerProcess("--precision", "exact", "--threads", "2")
    yield process
    assert process.stop() == 0, process.stderr


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def chat(text: str, system: str | None = None) -> list:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


# ---- models, completions, chat ---------------------------------------------------------------------------------

def test_health_and_models(server, client, model):
    assert server.get("/health").json() == {"status": "ok"}
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_NAME]
    assert models[0].model_extra["max_model_len"] == model.max_context
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_small_answers_are_not_held_back(server):
    """TCP_NODELAY on the connections: without it a keep-alive answer waits for a delayed ACK (about 40 ms)."""
    with httpx.Client(trust_env=False) as http:
        http.get(server.url + "/health")
        times = []
        for _ in range(11):
            started = time.perf_counter()
            assert http.get(server.url + "/health").status_code == 200
            times.append(time.perf_counter() - started)
    assert sorted(times)[5] < 0.03, times


@pytest.mark.parametrize("arguments", [
    dict(temperature=0.0),                                   # greedy
    dict(seed=7),                                            # the model's sampling defaults, seeded
    dict(temperature=0.9, top_p=0.8, seed=123),
    dict(temperature=1.0, seed=5, extra={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.3}),
    dict(temperature=0.0, presence_penalty=1.5, extra={"repetition_penalty": 1.0}),
])
def test_completion_is_the_text_of_generate(client, model, arguments):
    arguments = dict(arguments)
    extra = arguments.pop("extra", {})
    answer = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[1], max_tokens=24, extra_body=extra,
                                       **arguments)
    expected = model.generate(PROMPTS[1], max_new_tokens=24, **arguments, **extra)
    stats = model.last_generation_stats
    assert answer.choices[0].text == expected
    assert answer.object == "text_completion" and answer.model == MODEL_NAME
    assert answer.choices[0].finish_reason == ("length" if stats["finish_reason"] == "length" else "stop")
    assert answer.usage.prompt_tokens == len(model.tokenize(PROMPTS[1]))
    assert answer.usage.completion_tokens == len(stats["token_ids"])


def test_chat_is_the_text_of_generate(client, model):
    messages = chat("Speak, Juliet.", system="You are a player.")
    answer = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=40, temperature=0)
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == model.generate(messages, max_new_tokens=40, temperature=0)
    assert answer.object == "chat.completion"
    assert answer.usage.prompt_tokens == len(model.tokenizer.encode(model.apply_chat_template(messages),
                                                                    add_special_tokens=False, parse_special=True))
    # content parts and max_completion_tokens, as newer clients send them
    parts = [{"role": "user", "content": [{"type": "text", "text": "Speak,"}, {"type": "text", "text": "Juliet."}]}]
    answer = client.chat.completions.create(model=MODEL_NAME, messages=parts, max_completion_tokens=12, seed=3)
    assert answer.choices[0].message.content == model.generate(chat("Speak,\nJuliet."), max_new_tokens=12, seed=3)


def test_token_prompts_several_prompts_and_echo(client, model):
    ids = model.tokenize(PROMPTS[2])
    answer = client.completions.create(model=MODEL_NAME, prompt=ids, max_tokens=10, temperature=0)
    assert answer.choices[0].text == model.generate(ids, max_new_tokens=10, temperature=0)
    answer = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[:3], max_tokens=8, temperature=0, echo=True)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    for prompt, choice in zip(PROMPTS, answer.choices):
        assert choice.text == prompt + model.generate(prompt, max_new_tokens=8, temperature=0)
    assert answer.usage.prompt_tokens == sum(len(model.tokenize(p)) for p in PROMPTS[:3])


def test_n_choices_stop_strings_and_frequency_penalty(client, model):
    answer = client.chat.completions.create(model=MODEL_NAME, messages=chat("Good morrow."), max_tokens=16, n=3,
                                            temperature=1.0, seed=40)
    texts = [c.message.content for c in answer.choices]
    assert texts == [model.generate(chat("Good morrow."), max_new_tokens=16, temperature=1.0, seed=40 + i)
                     for i in range(3)]
    assert answer.usage.completion_tokens > 16  # the choices' tokens add up
    stop = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=40, temperature=0, stop=["\n\n"])
    assert stop.choices[0].text == model.generate(PROMPTS[0], max_new_tokens=40, temperature=0, stop=["\n\n"])
    assert "\n\n" not in stop.choices[0].text
    plain = model.generate(PROMPTS[0], max_new_tokens=40, temperature=0, repetition_penalty=1.0)
    penalized = model.generate(PROMPTS[0], max_new_tokens=40, temperature=0, repetition_penalty=1.0,
                               frequency_penalty=1.0)
    assert plain != penalized  # so that the server's answer shows the field was used
    answer = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=40, temperature=0,
                                       frequency_penalty=1.0, extra_body={"repetition_penalty": 1.0})
    assert answer.choices[0].text == penalized


def test_logprobs_are_the_model_distribution(client, model):
    messages = chat("Speak, Juliet.")
    answer = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=12, temperature=0,
                                            logprobs=True, top_logprobs=3, extra_body={"repetition_penalty": 1.0})
    model.generate(messages, max_new_tokens=12, temperature=0, repetition_penalty=1.0, logprobs=3)
    stats = model.last_generation_stats
    eos = set(model.eos_token_ids)
    expected = [(token, entry) for token, entry in zip(stats["token_ids"], stats["logprobs"]) if token not in eos]
    content = answer.choices[0].logprobs.content
    assert len(content) == len(expected)
    for entry, (token, (logprob, top)) in zip(content, expected):
        assert bytes(entry.bytes) == model.tokenizer.token_bytes(token)
        assert entry.logprob == pytest.approx(logprob, abs=1e-12)
        assert [bytes(t.bytes) for t in entry.top_logprobs] == [model.tokenizer.token_bytes(i) for i, _ in top]
        # greedy without penalties: the chosen token is the likeliest
        assert entry.top_logprobs[0].logprob == entry.logprob
    assert "".join(e.token for e in content) == answer.choices[0].message.content
    legacy = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=6, temperature=0, logprobs=2,
                                       extra_body={"repetition_penalty": 1.0})
    arrays = legacy.choices[0].logprobs
    assert len(arrays.tokens) == len(arrays.token_logprobs) == len(arrays.top_logprobs) == 6
    assert arrays.text_offset[0] == 0 and all(len(t) == 2 for t in arrays.top_logprobs)


# ---- streaming -------------------------------------------------------------------------------------------------

def test_streaming_equals_plain(client):
    messages = chat("What say you, my lord?")
    plain = client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=48, seed=11)
    chunks = list(client.chat.completions.create(model=MODEL_NAME, messages=messages, max_tokens=48, seed=11,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"

    plain = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[3], max_tokens=30, n=2, seed=2)
    pieces = {0: [], 1: []}
    for chunk in client.completions.create(model=MODEL_NAME, prompt=PROMPTS[3], max_tokens=30, n=2, seed=2,
                                           stream=True):
        for choice in chunk.choices:
            pieces[choice.index].append(choice.text)
    assert ["".join(pieces[i]) for i in (0, 1)] == [c.text for c in plain.choices]


def test_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": MODEL_NAME, "prompt": PROMPTS[0], "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60, trust_env=False) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    finish = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in events[:-1]]
    assert finish[-1] == "length" and finish[:-1] == [None] * (len(finish) - 1)


# ---- many clients --------------------------------------------------------------------------------------------

def test_concurrent_clients_each_get_their_single_request_answer(server, model):
    jobs = [(prompt, seed) for prompt in PROMPTS for seed in (1, 2)]
    expected = {job: model.generate(chat(job[0]), max_new_tokens=20, seed=job[1]) for job in jobs}

    def ask(job):
        with server.client() as client:
            answer = client.chat.completions.create(model=MODEL_NAME, messages=chat(job[0]), max_tokens=20,
                                                    seed=job[1])
            return answer.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(zip(jobs, pool.map(ask, jobs)))
    assert answers == expected


def test_concurrent_requests_are_decoded_together(server, model):
    """Clients at the same time share the batch's steps (the mean batch is above one sequence), and each answer,
    streamed or not, is still its text alone."""
    jobs = [(prompt, seed, stream) for prompt in PROMPTS[:4] for seed, stream in ((5, False), (6, True))]
    expected = {job: model.generate(chat(job[0]), max_new_tokens=40, seed=job[1], temperature=0.9) for job in jobs}
    start = threading.Barrier(len(jobs))

    def ask(job):
        prompt, seed, stream = job
        with server.client() as client:
            start.wait()
            answer = client.chat.completions.create(model=MODEL_NAME, messages=chat(prompt), max_tokens=40,
                                                    seed=seed, temperature=0.9, stream=stream)
            if stream:
                return "".join(c.choices[0].delta.content or "" for c in answer)
            return answer.choices[0].message.content

    before = server.metrics()
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(zip(jobs, pool.map(ask, jobs)))
    after = server.metrics()
    assert answers == expected
    steps = after[("zipmoe_batch_steps_total", ())] - before[("zipmoe_batch_steps_total", ())]
    decoded = (after[("zipmoe_batch_sequence_steps_total", ())] -
               before[("zipmoe_batch_sequence_steps_total", ())])
    assert steps > 0 and decoded / steps > 1.5, (decoded, steps)
    assert after[("zipmoe_max_sequences", ())] == 4
    assert after[("zipmoe_running_sequences", ())] == 0 and after[("zipmoe_queue_length", ())] == 0


def test_requests_join_and_leave_the_running_batch(model):
    """The engine in this process: requests submitted while one runs join its batch (max_sequences at once, the
    rest queued), a cancelled one leaves it, and every other answer's text, token ids and logprobs are those of
    Model.generate alone."""
    from zipmoe.server.engine import Engine, Finish, SamplingParams

    jobs = {i: (model.tokenize(prompt), SamplingParams(max_tokens=24, temperature=0.8, seed=i, logprobs=2))
            for i, prompt in enumerate(PROMPTS[1:5])}
    expected = {}
    for i, (ids, params) in jobs.items():
        text = model.generate(ids, max_new_tokens=24, temperature=0.8, seed=i, logprobs=2)
        record = model.last_generation_stats
        expected[i] = (text, record["token_ids"], record["logprobs"])
    engine = Engine(model, max_sequences=3, max_queue=8)
    texts, token_ids, logprobs, finishes, seen = {}, {}, {}, {}, []
    request_ids = {}
    ended = threading.Event()

    def listener(name):
        def on_event(event):
            stats = engine.stats()
            seen.append((stats["running"], stats["queued"]))
            token_ids[name] = token_ids.get(name, []) + event.token_ids
            logprobs[name] = logprobs.get(name, []) + (event.logprobs or [])
            if isinstance(event, Finish):
                finishes[name] = event
                if len(finishes) == len(jobs) + 1:
                    ended.set()
                return
            texts[name] = texts.get(name, "") + event.text
            if name == "long" and not request_ids.get("submitted"):  # the others arrive while it runs
                request_ids["submitted"] = True
                for i, (ids, params) in jobs.items():
                    request_ids[i] = engine.submit(ids, params, listener(i), listener(i))
            if name == 0 and not request_ids.get("cancelled"):
                request_ids["cancelled"] = True
                engine.cancel(request_ids["long"])
        return on_event

    try:
        # unless cancelled, 400 tokens (no EOS within them)
        request_ids["long"] = engine.submit(model.tokenize(PROMPTS[5]),
                                            SamplingParams(max_tokens=400, temperature=1.5, seed=3),
                                            listener("long"), listener("long"))
        assert ended.wait(120)
    finally:
        assert engine.close(30)
    assert finishes["long"].reason == "cancelled" and finishes["long"].completion_tokens < 400
    assert max(running for running, _ in seen) == 3
    assert max(queued for _, queued in seen) >= 1
    for i in jobs:
        assert finishes[i].reason in ("stop", "length") and finishes[i].completion_tokens == len(token_ids[i])
        assert (texts.get(i, ""), token_ids[i], logprobs[i]) == expected[i], i
    assert engine.stats()["running"] == 0


def test_prompt_caching_reuses_the_previous_turn(client, model):
    first = chat("Who goes there?", system="A watchman on the walls, one turn of a test.")
    answer = client.chat.completions.create(model=MODEL_NAME, messages=first, max_tokens=24, temperature=0)
    assert answer.usage.prompt_tokens_details.cached_tokens == 0
    second = first + [{"role": "assistant", "content": answer.choices[0].message.content},
                      {"role": "user", "content": "Stand and unfold yourself."}]
    again = client.chat.completions.create(model=MODEL_NAME, messages=second, max_tokens=24, temperature=0)
    # this process's model does the same: same answer, same reuse; a fresh model gives the same answer uncached
    model.reset()
    model.generate(first, max_new_tokens=24, temperature=0)
    expected = model.generate(second, max_new_tokens=24, temperature=0)
    reused = model.last_generation_stats["reused_prompt_tokens"]
    assert reused > 0
    assert again.usage.prompt_tokens_details.cached_tokens == reused
    assert again.choices[0].message.content == expected
    model.reset()
    assert model.generate(second, max_new_tokens=24, temperature=0) == expected
    assert model.last_generation_stats["reused_prompt_tokens"] == 0


def test_tokenize_and_detokenize(server, model):
    tokens = server.post("/tokenize", {"prompt": PROMPTS[1]}).json()
    assert tokens["tokens"] == model.tokenize(PROMPTS[1]) and tokens["count"] == len(tokens["tokens"])
    assert tokens["max_model_len"] == model.max_context
    messages = chat("Hark!")
    ids = model.tokenizer.encode(model.apply_chat_template(messages), add_special_tokens=False, parse_special=True)
    assert server.post("/tokenize", {"messages": messages}).json()["tokens"] == ids
    assert server.post("/detokenize", {"tokens": tokens["tokens"]}).json()["prompt"] == model.detokenize(
        tokens["tokens"])
    assert server.post("/detokenize", {"tokens": [model.vocab_size]}).status_code == 400


# ---- bad input -------------------------------------------------------------------------------------------------

def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


MESSAGES = chat("Hi")


@pytest.mark.parametrize("body, param", [
    ({"messages": MESSAGES, "max_tokens": -1}, "max_tokens"),
    ({"messages": MESSAGES, "max_tokens": 10**9}, "max_tokens"),
    ({"messages": MESSAGES, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": MESSAGES, "max_completion_tokens": 5000}, "max_completion_tokens"),
    ({"messages": MESSAGES, "temperature": 5}, "temperature"),
    ({"messages": MESSAGES, "temperature": True}, "temperature"),
    ({"messages": MESSAGES, "top_p": 0}, "top_p"),
    ({"messages": MESSAGES, "frequency_penalty": 3}, "frequency_penalty"),
    ({"messages": MESSAGES, "n": 100}, "n"),
    ({"messages": MESSAGES, "stop": [""]}, "stop"),
    ({"messages": MESSAGES, "seed": "x"}, "seed"),
    ({"messages": MESSAGES, "top_logprobs": 3}, "top_logprobs"),
    ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type"),
    ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": MESSAGES, "tool_choice": "auto"}, "tool_choice"),
    ({"messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format"),
    ({"messages": MESSAGES, "logit_bias": {"5": 10}}, "logit_bias"),
])
def test_malformed_chat_requests_are_400_naming_the_field(server, body, param):
    error = error_of(server.post("/v1/chat/completions", body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in error["message"]


def test_malformed_requests(server, client, model):
    assert error_of(server.post("/v1/completions", b"{not json"), 400)["code"] == "invalid_json"
    assert error_of(server.post("/v1/completions", b"\xff\xfe"), 400)["code"] == "invalid_json"
    error_of(server.post("/v1/completions", b""), 400)
    error_of(server.post("/v1/completions", [1, 2]), 400)
    assert error_of(server.post("/v1/completions", {"prompt": [1, "a"]}), 400)["param"] == "prompt"
    assert error_of(server.post("/v1/completions", {"prompt": [model.vocab_size]}), 400)["param"] == "prompt"
    assert error_of(server.post("/v1/completions", {"prompt": "x", "suffix": "y"}), 400)["param"] == "suffix"
    long_prompt = {"prompt": [5] * model.max_context, "max_tokens": 1}
    assert error_of(server.post("/v1/completions", long_prompt), 400)["code"] == "context_length_exceeded"
    assert error_of(server.post("/v1/completions", {"prompt": "x", "model": "gpt-4"}), 404)["code"] == \
        "model_not_found"
    assert error_of(server.post("/v1/completions", b" " * (17 << 20)), 413)["code"] == "request_too_large"
    error_of(server.get("/v1/nothing"), 404)
    error_of(server.get("/v1/completions"), 405)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, tools=[
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    # and the server goes on serving
    answer = client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert answer.choices[0].text == model.generate(PROMPTS[0], max_new_tokens=8, temperature=0)


def test_a_client_leaving_mid_stream_cancels_its_sequence(server, client):
    before = server.metrics()
    cancelled = ("zipmoe_sequences_finished_total", (("reason", "cancelled"),))
    # unless cancelled, this generates 1000 tokens (it has no EOS within them)
    body = {"model": MODEL_NAME, "prompt": PROMPTS[5], "max_tokens": 1000, "temperature": 1.5, "seed": 3,
            "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60, trust_env=False) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 10
    while server.metrics().get(cancelled, 0) <= before.get(cancelled, 0):
        assert time.monotonic() < deadline, "the sequence was not cancelled"
        time.sleep(0.05)
    after = server.metrics()
    assert after[("zipmoe_running_sequences", ())] == 0
    assert after[("zipmoe_generation_tokens_total", ())] - before[("zipmoe_generation_tokens_total", ())] < 1000
    # a plain request too: the client gives up waiting
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/completions", json={**body, "stream": False}, timeout=0.2, trust_env=False)
    deadline = time.monotonic() + 10
    while server.metrics().get(cancelled, 0) <= after.get(cancelled, 0):
        assert time.monotonic() < deadline, "the plain request's sequence was not cancelled"
        time.sleep(0.05)
    assert server.get("/health").status_code == 200
    assert client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=4).choices[0].text is not None


def test_metrics_parse_as_prometheus_text(server, client):
    client.completions.create(model=MODEL_NAME, prompt=PROMPTS[0], max_tokens=4, temperature=0)
    samples = server.metrics()
    names = {name for name, _ in samples}
    for name in ("zipmoe_requests_total", "zipmoe_prompt_tokens_total", "zipmoe_generation_tokens_total",
                 "zipmoe_prompt_tokens_cached_total", "zipmoe_queue_length", "zipmoe_running_sequences",
                 "zipmoe_time_per_output_token_seconds_count", "zipmoe_time_to_first_token_seconds_count",
                 "zipmoe_expert_requests_total", "zipmoe_expert_hits_total", "zipmoe_expert_bytes_read_total",
                 "zipmoe_expert_stall_seconds_total", "zipmoe_memory_bytes", "zipmoe_memory_budget_bytes"):
        assert name in names, name
    assert samples[("zipmoe_requests_total", (("code", "200"), ("endpoint", "/v1/completions")))] >= 1
    assert samples[("zipmoe_generation_tokens_total", ())] >= 4
    assert samples[("zipmoe_expert_requests_total", (("tier", "full"),))] > 0  # resident: every expert decoded
    assert samples[("zipmoe_memory_bytes", (("kind", "total"),))] > 0
    assert samples[("zipmoe_memory_budget_bytes", ())] == 0


# ---- load test -----------------------------------------------------------------------------------------------

def test_load_of_hundreds_of_requests_from_16_clients(server, model):
    """320 greedy requests (chat and completions, some streamed) from 16 clients: none fails, each answer exact."""
    jobs = [(kind, prompt, tokens) for kind in ("chat", "completion") for prompt in PROMPTS for tokens in (6, 12)]
    expected = {}
    for kind, prompt, tokens in jobs:
        expected[(kind, prompt, tokens)] = model.generate(chat(prompt) if kind == "chat" else prompt,
                                                          max_new_tokens=tokens, temperature=0)

    def work(worker: int) -> list:
        results = []
        with server.client() as client:
            for i in range(20):
                kind, prompt, tokens = jobs[(worker * 7 + i) % len(jobs)]
                stream = i % 3 == 0
                if kind == "chat":
                    answer = client.chat.completions.create(model=MODEL_NAME, messages=chat(prompt),
                                                            max_tokens=tokens, temperature=0, stream=stream)
                    text = "".join(c.choices[0].delta.content or "" for c in answer) if stream else \
                        answer.choices[0].message.content
                else:
                    answer = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=tokens,
                                                       temperature=0, stream=stream)
                    text = "".join(c.choices[0].text for c in answer) if stream else answer.choices[0].text
                results.append(((kind, prompt, tokens), text))
        return results

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = [r for worker in pool.map(work, range(16)) for r in worker]
    assert len(results) == 320
    wrong = [(job, text) for job, text in results if text != expected[job]]
    assert wrong == []
    assert time.monotonic() - started < 300


# ---- servers of their own --------------------------------------------------------------------------------------

def test_health_is_503_while_the_model_loads_and_prompt_caching_can_be_off(model):
    process = ServerProcess("--threads", "1", "--precision", "exact", "--no-prompt-cache",
                            env_extra={"ZIPMOE_SERVE_TEST_LOAD_DELAY": "3"}, wait_ready=False)
    try:
        loading = process.get("/health")
        assert loading.status_code == 503 and loading.json() == {"status": "loading"}
        assert "retry-after" in loading.headers
        early = process.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
        assert error_of(early, 503)["code"] == "model_loading"
        process.wait_ready()
        assert process.get("/health").json() == {"status": "ok"}
        # the next turn of a chat is evaluated whole, and answered as with the cache
        first = chat("Who goes there?")
        client = process.client()
        answer = client.chat.completions.create(model=MODEL_NAME, messages=first, max_tokens=24, temperature=0)
        second = first + [{"role": "assistant", "content": answer.choices[0].message.content},
                          {"role": "user", "content": "Stand and unfold yourself."}]
        again = client.chat.completions.create(model=MODEL_NAME, messages=second, max_tokens=24, temperature=0)
        assert again.usage.prompt_tokens_details.cached_tokens == 0
        assert again.choices[0].message.content == model.generate(second, max_new_tokens=24, temperature=0)
    finally:
        assert process.stop(signal.SIGINT) == 0, process.stderr


def test_api_key_and_a_full_queue():
    process = ServerProcess("--threads", "1", "--api-key", "s3cret", "--max-sequences", "1", "--max-queue", "1",
                            "--model-name", "bard")
    try:
        assert process.get("/health").status_code == 200  # probes need no key
        assert error_of(process.get("/v1/models"), 401)["code"] == "invalid_api_key"
        error_of(process.get("/metrics"), 401)
        error_of(process.post("/v1/completions", {"prompt": "x"}, headers={"Authorization": "Bearer nope"}), 401)
        with pytest.raises(openai.AuthenticationError):
            process.client("wrong").models.list()
        good = process.client("s3cret")
        assert [m.id for m in good.models.list().data] == ["bard"]

        # while one request runs (1000 tokens), one more may wait; the rest are turned away with Retry-After
        key = {"Authorization": "Bearer s3cret"}
        body = {"model": "bard", "prompt": PROMPTS[5], "max_tokens": 1000, "temperature": 1.5, "seed": 3}
        with httpx.stream("POST", process.url + "/v1/completions", json={**body, "stream": True}, headers=key,
                          timeout=60, trust_env=False) as running:
            lines = running.iter_lines()
            assert next(lines).startswith("data: ")  # it runs

            def ask(_):
                return process.post("/v1/completions", {**body, "max_tokens": 4}, headers=key)

            with concurrent.futures.ThreadPoolExecutor(5) as pool:
                responses = list(pool.map(ask, range(5)))
            assert [line for line in lines if line][-1] == "data: [DONE]"
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes and set(codes) == {200, 503}, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert error_of(busy, 503)["code"] == "server_overloaded" and busy.headers["retry-after"]
    finally:
        assert process.stop() == 0, process.stderr


def test_graceful_shutdown_finishes_or_cancels_and_exits_0():
    process = ServerProcess("--threads", "1")
    body = {"model": MODEL_NAME, "prompt": PROMPTS[0], "max_tokens": 1000, "temperature": 1.5, "seed": 9,
            "stream": True}
    events = []

    def stream():
        with httpx.stream("POST", process.url + "/v1/completions", json=body, timeout=60,
                          trust_env=False) as response:
            for line in response.iter_lines():
                if line:
                    events.append(line)

    reader = threading.Thread(target=stream)
    reader.start()
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    code = process.stop(signal.SIGTERM)
    reader.join(30)
    assert code == 0, process.stderr
    assert time.monotonic() - started < 10
    assert events and events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert "error" in last or last["choices"][0]["finish_reason"] in ("stop", "length")
    assert "shutting down" in process.stderr and "Traceback" not in process.stderr
    with pytest.raises(httpx.TransportError):
        process.get("/health")


def test_shutdown_cancels_what_outlasts_the_timeout():
    process = ServerProcess("--threads", "1", "--shutdown-timeout", "0.3", "--max-sequences", "1")
    # 1000 tokens each (seed 6 meets no EOS within them; seed 3 did after 392, too soon on a quiet machine): the first
    # runs past the timeout, the second waits behind it (one sequence)
    body = {"model": MODEL_NAME, "prompt": PROMPTS[5], "max_tokens": 1000, "temperature": 1.5, "seed": 6,
            "stream": True}
    events = {0: [], 1: []}

    def stream(index):
        with httpx.stream("POST", process.url + "/v1/completions", json=body, timeout=60,
                          trust_env=False) as response:
            for line in response.iter_lines():
                if line:
                    events[index].append(line)

    readers = [threading.Thread(target=stream, args=(i,)) for i in (0, 1)]
    for reader in readers:
        reader.start()
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while not ((events[0] or events[1]) and process.metrics()[("zipmoe_queue_length", ())] == 1):
        assert time.monotonic() < deadline, "the two requests did not reach the engine"
        time.sleep(0.01)
    started = time.monotonic()
    assert process.stop(signal.SIGTERM) == 0, process.stderr
    for reader in readers:
        reader.join(30)
    assert time.monotonic() - started < 5
    for index in (0, 1):
        assert events[index][-1] == "data: [DONE]"
        assert json.loads(events[index][-2][6:]).get("error", {}).get("code") == "shutting_down", events[index][-2]
    assert "Traceback" not in process.stderr


def test_an_engine_failure_fails_one_request_and_the_server_goes_on(tmp_path, model):
    """A container damaged under a running server (experts streamed within a budget): 500 naming the error, the
    server stays healthy, and answers again once the file is back."""
    path = tmp_path / "victim.zmoe"
    shutil.copyfile(zipmoe.default_model_path(), path)
    with pytest.raises(zipmoe.BudgetError) as error:
        zipmoe.load(path, memory_budget=1, threads=1)
    budget = int(re.search(r"the minimum is [^(]*\((\d+) bytes\)", str(error.value)).group(1))
    # the minimum budget holds the KV cache of one sequence
    process = ServerProcess(path, "--threads", "1", "--precision", "exact", "--memory-budget", budget,
                            "--max-sequences", "1")
    original = path.read_bytes()
    body = {"prompt": PROMPTS[1], "max_tokens": 24, "temperature": 0}
    expected = model.generate(PROMPTS[1], max_new_tokens=24, temperature=0)
    try:
        assert process.post("/v1/completions", body).json()["choices"][0]["text"] == expected
        with open(path, "r+b") as f:
            f.seek(4096)
            f.write(bytes(len(original) - 3 * 4096))
        failed = process.post("/v1/completions", body)
        error = error_of(failed, 500)
        assert error["code"] == "engine_error" and "Error" in error["message"]
        streamed = process.post("/v1/completions", {**body, "stream": True})
        assert streamed.status_code == 200 and '"error"' in streamed.text
        assert process.get("/health").status_code == 200
        path.write_bytes(original)
        assert process.post("/v1/completions", body).json()["choices"][0]["text"] == expected
        samples = process.metrics()
        assert samples[("zipmoe_expert_bytes_read_total", ())] > 0
        assert samples[("zipmoe_memory_budget_bytes", ())] == budget
        assert samples[("zipmoe_sequences_finished_total", (("reason", "error"),))] == 2
    finally:
        assert process.stop() == 0, process.stderr


def test_serve_refuses_bad_options_in_one_line(tmp_path):
    not_a_model = tmp_path / "notes.zmoe"
    not_a_model.write_text("hello")
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    cases = ((["--memory-budget", "lots"], "memory_budget"), ([tmp_path / "none.zmoe"], "none.zmoe"),
             ([not_a_model], "notes.zmoe"), (["--port", "70000"], "--port"), (["--max-queue", "0"], "--max-queue"),
             (["--port", port], f"cannot listen on 127.0.0.1:{port}"))
    with taken:
        for args, message in cases:
            done = subprocess.run([sys.executable, "-m", "zipmoe", "serve", "--port", "0", *map(str, args)],
                                  capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert done.returncode == 1 and message in done.stderr, done.stderr
            assert done.stderr.startswith("zipmoe: error:") and "Traceback" not in done.stderr
            assert len(done.stderr.splitlines()) == 1, done.stderr
    # a model that fails to load (here: a budget below its minimum) stops the server, the error on one line
    done = subprocess.run([sys.executable, "-m", "zipmoe", "serve", "--port", "0", "--memory-budget", "1"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("zipmoe: error: memory_budget") and "minimum" in done.stderr


def test_import_zipmoe_does_not_import_the_server_stack():
    stack = ("zipmoe.server", "starlette", "uvicorn", "prometheus_client")
    code = f"import sys, zipmoe; print(sorted(m for m in {stack!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
