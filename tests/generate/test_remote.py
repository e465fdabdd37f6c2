"""The openai: backend against a real local server that answers like an instruct model."""

import httpx
import pytest

from moecoder.errors import UserError
from moecoder.generate import SamplingParams, extract_code, make_backend
from moecoder.generate.prompts import COMPLETION_STOP
from moecoder.generate.remote import retry_after_seconds

from instruct_server import SOLUTION, InstructServer, serve_in_thread


def backend(url, **opts):
    return make_backend("openai:test-model", base_url=f"{url}/v1", backoff=0.01, **opts)


def ask(name):
    return [{"role": "user", "content": f"Write the function {name}"}]


def test_chat_replies_are_extracted_despite_think_drafts_and_examples():
    server = InstructServer()
    with serve_in_thread(server.app) as url:
        replies = backend(url).chat([ask("alpha"), ask("beta")], SamplingParams(n=2, temperature=0.8))
    assert [len(r) for r in replies] == [2, 2]
    for name, reply in zip(["alpha", "beta"], replies):
        code = extract_code(reply[0], name)
        assert code == SOLUTION.format(name=name)
        namespace = {}
        exec(code, namespace)
        assert namespace[name](3) == 7


def test_429_with_retry_after_is_honoured_and_500_is_retried():
    server = InstructServer()
    server.failures = [(429, {"Retry-After": "1"}), (500, {})]
    with serve_in_thread(server.app) as url:
        client = backend(url)
        replies = client.chat([ask("gamma")], SamplingParams())
    assert extract_code(replies[0][0], "gamma") == SOLUTION.format(name="gamma")
    times = [t for t, _, _ in server.requests]
    assert len(times) == 3 and client.retries == 2
    assert times[1] - times[0] >= 0.95  # waited as long as Retry-After asked, not the 0.01 s backoff
    assert client.describe()["revision"] == "fp-test"


def test_client_errors_are_not_retried_and_persistent_failures_give_up():
    server = InstructServer()
    server.failures = [(400, {})]
    with serve_in_thread(server.app) as url:
        with pytest.raises(UserError, match="refused the request.*HTTP 400: scripted 400"):
            backend(url).chat([ask("delta")], SamplingParams())
        assert len(server.requests) == 1
        server.failures = [(503, {})] * 3
        with pytest.raises(UserError, match="failed 3 times.*HTTP 503"):
            backend(url, max_retries=2).chat([ask("delta")], SamplingParams())
    assert len(server.requests) == 4


def test_concurrency_is_limited_and_results_keep_input_order():
    server = InstructServer(delay=0.05)
    names = [f"f{i}" for i in range(12)]
    done = []
    with serve_in_thread(server.app) as url:
        replies = backend(url, concurrency=3).chat([ask(n) for n in names], SamplingParams(),
                                                   on_result=lambda i, texts: done.append(i))
    assert [extract_code(r[0], n) for r, n in zip(replies, names)] == [SOLUTION.format(name=n) for n in names]
    assert 2 <= server.max_in_flight <= 3
    assert sorted(done) == list(range(12))


def test_completion_mode_sends_four_stop_sequences_cuts_all_client_side_and_tops_up_missing_choices():
    server = InstructServer(choices_per_request=1)  # a server that ignores n and refuses a 5th stop sequence
    assert len(COMPLETION_STOP) == 5 and COMPLETION_STOP[4] == "\n#"  # the server's text has "\n#" first
    params = SamplingParams(n=3, temperature=0.2, stop=COMPLETION_STOP, max_new_tokens=64)
    with serve_in_thread(server.app) as url:
        samples = backend(url).complete(["def f(x):\n"], params)
    assert samples == [["    return x + 0\n\n", "    return x + 1\n\n", "    return x + 2\n\n"]]
    bodies = [body for _, _, body in server.requests]
    assert [b["n"] for b in bodies] == [3, 2, 1]
    assert bodies[0]["stop"] == list(COMPLETION_STOP[:4]) and bodies[0]["max_tokens"] == 64


def test_unreachable_server_is_a_clear_error():
    with pytest.raises(UserError, match="failed 2 times.*ConnectError"):
        backend("http://127.0.0.1:9", max_retries=1).complete(["x"], SamplingParams())


def test_retry_after_forms():
    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after_seconds(httpx.Headers({})) is None


def test_infilling_sends_prefix_as_prompt_and_the_suffix_to_the_completions_api():
    server = InstructServer()
    with serve_in_thread(server.app) as url:
        middles = backend(url).infill([("def f(x):\n", "\nprint(f(1))\n")], SamplingParams(stop=("\n",)))
    _, path, body = server.requests[0]
    assert path == "completions" and body["prompt"] == "def f(x):\n" and body["suffix"] == "\nprint(f(1))\n"
    assert middles == [["    return x + 0"]]  # cut at the first newline
