"""Wire fidelity (issue 22): every documented gpt-oss response shape gets the same final answer, reasoning, label
and reasoning source on every path — the live `api` backend (plain and streamed, through the loopback server),
the `recorded` backend and `rescore` of a toxcmp run, and `recorded`/`rescore` of a study-layout file — and the
raw text recorded is the content exactly as the server sent it.

The payloads are written out by hand after the providers' documented message shapes; the expected values are
read off the payloads by eye, never produced by toxcmp.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.analysis.arms import tidy_row
from toxcmp.backends import BackendConfig, get_backend
from toxcmp.backends.recorded import RecordedBackend, RecordedOptions
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.results.io import write_outputs
from toxcmp.run.rescore import rescore
from toxcmp.testing.fake_server import FakeChatServer, Reply
from toxcmp.testing.fake_server import completion as completion_body

POLICY = load_policy("toxic_simple")
GPT_OSS = resolve_model("gpt-oss-20b")

# (shape, the message as the server sends it, finish_reason,
#  expected: content, reasoning, binary label, parse failure, reasoning_source,
#  on a study file (no field name, no finish reason recorded): reasoning_source, parse failure)
SHAPES = [
    ("field_reasoning",  # Groq, Cerebras, Together, the HF router
     {"role": "assistant", "content": "1", "reasoning": "The user insults a person directly. Toxic."}, "stop",
     "1", "The user insults a person directly. Toxic.", 1, None, "field:reasoning", "field", None),
    ("field_reasoning_content",  # vLLM, SGLang, llama.cpp, Fireworks
     {"role": "assistant", "content": "0", "reasoning_content": "A question about the weather. Safe."}, "stop",
     "0", "A question about the weather. Safe.", 0, None, "field:reasoning_content", "field", None),
    ("harmony_tokens",  # a server that leaks the Harmony token text into content
     {"role": "assistant", "content": "<|channel|>analysis<|message|>It threatens violence.<|end|>"
                                      "<|start|>assistant<|channel|>final<|message|>1<|return|>"}, "stop",
     "1", "It threatens violence.", 1, None, "harmony", "harmony", None),
    ("collapsed",  # special tokens stripped: channel names run into the text
     {"role": "assistant", "content": "analysisA polite greeting, nothing harmful.assistantfinal0"}, "stop",
     "0", "A polite greeting, nothing harmful.", 0, None, "collapsed", "collapsed", None),
    ("think_tag",  # reasoning returned raw (e.g. Groq's reasoning_format=raw)
     {"role": "assistant", "content": "<think>A slur aimed at a group of people.</think>\n\n1"}, "stop",
     "1", "A slur aimed at a group of people.", 1, None, "think_tag", "think_tag", None),
    ("reasoning_tag",  # a gateway that wraps the reasoning in <reasoning> tags
     {"role": "assistant", "content": "<reasoning>Asks for a soup recipe. Benign.</reasoning>\n0"}, "stop",
     "0", "Asks for a soup recipe. Benign.", 0, None, "reasoning_tag", "reasoning_tag", None),
    ("plain",
     {"role": "assistant", "content": "0"}, "stop",
     "0", "", 0, None, "none", "none", None),
    ("cut_off_in_field",  # the budget ran out while reasoning: reasoning in its field, no content
     {"role": "assistant", "content": "", "reasoning": "The user asks whether the"}, "length",
     "", "The user asks whether the", None, "truncated", "field:reasoning", "field", "no_final"),
    ("cut_off_in_harmony",
     {"role": "assistant", "content": "<|channel|>analysis<|message|>The user asks whether the"}, "length",
     "", "The user asks whether the", None, "truncated", "harmony", "harmony", "no_final"),
]
IDS = [s[0] for s in SHAPES]


def _text(shape: str) -> str:
    return f"example text for the {shape} shape"


def _completion(message: dict, finish: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": GPT_OSS.model_id,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


def _requests() -> list:
    return [build_request(POLICY, _text(s[0]), GPT_OSS, GenerationConfig(), example_id=s[0]) for s in SHAPES]


def _example(shape: str) -> dict:
    return {"example_id": shape, "text": _text(shape), "toxicity": 0, "weight": 1.0}


def _observed(row: dict, p: str = "") -> tuple:
    return (row[f"{p}content"], row[f"{p}reasoning"], row[f"{p}binary"], row[f"{p}parse_failure"],
            row[f"{p}reasoning_source"])


def _expected(shape: tuple, study: bool = False) -> tuple:
    _, _, _, content, reasoning, binary, failure, source, study_source, study_failure = shape
    return (content, reasoning, binary, study_failure if study else failure, study_source if study else source)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> dict[str, list[dict]]:
    """Tidy rows of the api backend, plain and streamed, against a server answering each text in its shape."""
    by_text = {_text(s[0]): _completion(s[1], s[2]) for s in SHAPES}

    def respond(payload: dict) -> Reply:
        user = next(m["content"] for m in reversed(payload["messages"]) if m["role"] == "user")
        return Reply(body=by_text[user])

    rows: dict[str, list[dict]] = {}
    with FakeChatServer(models=[GPT_OSS.model_id], responder=respond) as server:
        for label, stream in (("live", False), ("streamed", True)):
            backend = get_backend("api", BackendConfig(base_url=server.base_url, stream=stream))
            responses = backend.generate(_requests())
            assert [r.error for r in responses] == [None] * len(SHAPES)
            # raw_text is the content exactly as the server sent it (never rewritten)
            assert [r.raw_text for r in responses] == [s[1]["content"] for s in SHAPES]
            assert [r.finish_reason for r in responses] == [s[2] for s in SHAPES]
            assert [r.extra["streamed"] for r in responses] == [stream] * len(SHAPES)
            rows[label] = [tidy_row(_example(s[0]), label, 0, r, POLICY, GPT_OSS.harmony)
                           for s, r in zip(SHAPES, responses)]
        assert server.streams_finished == len(SHAPES)  # the streamed arm really streamed
    return rows


@pytest.fixture(scope="module")
def run_dir(live, tmp_path_factory) -> Path:
    """The live rows written as a toxcmp run (what `compare` writes)."""
    out = tmp_path_factory.mktemp("run")
    arms = [{"label": label, "policy": POLICY.name, "harmony": True} for label in ("live", "streamed")]
    meta = {"run_id": "wire", "arms": arms, "reference": "live", "model": {"name": GPT_OSS.name, "harmony": True},
            "policy": {"name": POLICY.name}}
    write_outputs(out, live["live"] + live["streamed"], [], {"metadata": meta})
    return out


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> Path:
    """A study `backend_comparison_*` file holding each shape as a provider client records it: the content in
    `api_response`, the reasoning field (if any) in `api_reasoning`; no finish reason."""
    out = tmp_path_factory.mktemp("study") / "backend_comparison_gpt-oss-20b_toxic_simple_n9.parquet"
    reasoning = [next((s[1][k] for k in ("reasoning", "reasoning_content") if k in s[1]), None) for s in SHAPES]
    pl.DataFrame({"conv_id": IDS, "text": [_text(i) for i in IDS], "ground_truth": [0] * len(SHAPES),
                  "api_response": [s[1]["content"] for s in SHAPES], "api_reasoning": reasoning,
                  "local_response": ["0"] * len(SHAPES), "local_reasoning": ["Fine."] * len(SHAPES)}).write_parquet(out)
    return out


@pytest.mark.parametrize("arm", ["live", "streamed"])
@pytest.mark.parametrize("i", range(len(SHAPES)), ids=IDS)
def test_the_api_backend_reads_each_shape(live, arm, i):
    assert _observed(live[arm][i]) == _expected(SHAPES[i])


@pytest.mark.parametrize("i", range(len(SHAPES)), ids=IDS)
def test_recorded_replay_of_a_toxcmp_run_reads_each_shape_the_same(run_dir, i):
    [response] = RecordedBackend(RecordedOptions(recording=str(run_dir), side="live")).generate([_requests()[i]])
    assert response.raw_text == SHAPES[i][1]["content"] and response.finish_reason == SHAPES[i][2]
    row = tidy_row(_example(SHAPES[i][0]), "replay", 0, response, POLICY, GPT_OSS.harmony)
    assert _observed(row) == _expected(SHAPES[i])


@pytest.fixture(scope="module")
def rescored_run(run_dir):
    return {row["example_id"]: row for row in rescore([run_dir], output_dir=None).comparisons["streamed"]}


@pytest.mark.parametrize("i", range(len(SHAPES)), ids=IDS)
def test_rescore_of_a_toxcmp_run_reads_each_shape_the_same(rescored_run, i):
    row = rescored_run[SHAPES[i][0]]
    assert _observed(row, "a_") == _observed(row, "b_") == _expected(SHAPES[i])
    assert row["a_raw"] == SHAPES[i][1]["content"]


@pytest.fixture(scope="module")
def rescored_study(study_file):
    result = rescore([study_file], policy=POLICY.name, output_dir=None)
    assert result.layout == "study-pair"
    return {row["example_id"]: row for row in result.rows}


@pytest.mark.parametrize("i", range(len(SHAPES)), ids=IDS)
def test_rescore_of_a_study_file_reads_each_shape_the_same(rescored_study, i):
    assert _observed(rescored_study[SHAPES[i][0]], "a_") == _expected(SHAPES[i], study=True)


@pytest.mark.parametrize("i", range(len(SHAPES)), ids=IDS)
def test_recorded_replay_of_a_study_file_reads_each_shape_the_same(study_file, i):
    [response] = RecordedBackend(RecordedOptions(recording=str(study_file), side="api")).generate([_requests()[i]])
    row = tidy_row(_example(SHAPES[i][0]), "study", 0, response, POLICY, GPT_OSS.harmony)
    assert _observed(row) == _expected(SHAPES[i], study=True)


def test_a_row_written_by_an_older_toxcmp_rescores_the_same(tmp_path):
    """Before issue 22 the api backend stored reasoning sent in a field as synthetic Harmony raw text; such rows
    still read as the same answer (the label and final answer of the same wire content today)."""
    old = [("1", "The user insults a person directly. Toxic.", "stop", 1, None),
           ("", "The user asks whether the", "length", None, "truncated")]
    rows = []
    for k, (content, reasoning, finish, _, _) in enumerate(old):
        raw = f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>{content}"
        for arm in ("a", "b"):
            rows.append({"example_id": f"e{k}", "text": f"t{k}", "toxicity": 0, "weight": 1.0, "arm": arm,
                         "repeat": 0, "raw": raw, "content": content, "reasoning": reasoning, "latency_s": 0.1,
                         "cached": False, "finish_reason": finish, "reasoning_source": "harmony"})
    meta = {"arms": [{"label": arm, "policy": POLICY.name, "harmony": True} for arm in ("a", "b")]}
    write_outputs(tmp_path, rows, [], {"metadata": meta})
    got = {r["example_id"]: r for r in rescore([tmp_path], output_dir=None).rows}
    for k, (content, reasoning, _, binary, failure) in enumerate(old):
        row = got[f"e{k}"]
        assert (row["a_content"], row["a_reasoning"], row["a_binary"], row["a_parse_failure"]) == (
            content, reasoning, binary, failure)
        assert row["a_reasoning_source"] == "harmony"  # as recorded then: rescore never rewrites what arrived


def test_the_cut_off_answer_is_explained_with_the_option_to_raise(live):
    row = live["live"][IDS.index("cut_off_in_field")]
    assert "raise --max-new-tokens" in row["parse_error"]
    assert json.dumps(row, default=str)  # a plain row, writable as it is


class _Tokenizer:
    """Decodes ids to the pieces a gpt-oss tokenizer would; 9 is the end of a turn."""

    eos_token_id = 9
    PIECES = {1: "<|channel|>", 2: "analysis", 3: "<|message|>", 4: "The user asks whether the", 5: "<|end|>",
              6: "<|start|>assistant", 7: "final", 8: "1", 9: "<|return|>"}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.PIECES[i] for i in ids)


@pytest.mark.parametrize("tokens,finish,content,binary,failure", [
    ([1, 2, 3, 4, 5, 6, 1, 7, 3, 8, 9], "stop", "1", 1, None),
    ([1, 2, 3, 4], "length", "", None, "truncated"),  # the budget ran out in the analysis channel
])
def test_the_local_backend_records_the_same_source_and_cut_off_verdict(tokens, finish, content, binary, failure):
    from types import SimpleNamespace

    from toxcmp.backends.local import LocalBackend

    loaded = SimpleNamespace(tokenizer=_Tokenizer(), model=SimpleNamespace(generation_config=SimpleNamespace()),
                             commit="c0")
    response = LocalBackend(BackendConfig(device="cpu"))._response(loaded, _requests()[0], tokens, 10, 0.1, {})
    assert response.raw_text == _Tokenizer().decode(tokens) and response.finish_reason == finish
    assert response.extra["reasoning_source"] == "harmony"  # recorded on the response, not guessed later
    row = tidy_row(_example("local"), "local", 0, response, POLICY, GPT_OSS.harmony)
    assert _observed(row) == (content, "The user asks whether the", binary, failure, "harmony")


def test_a_stream_asks_for_the_usage_it_records():
    """OpenAI's rule, which `transformers serve` 5.25 follows and the fake server too: a stream carries usage only
    when the request asks for it (`stream_options.include_usage`). Both arms record the server's own counts."""
    usage = {"prompt_tokens": 37, "completion_tokens": 2, "total_tokens": 39}
    reply = Reply(body=dict(completion_body("a b"), usage=usage))
    with FakeChatServer(models=[GPT_OSS.model_id], default=reply) as fake:
        for stream in (False, True):
            backend = get_backend("api", BackendConfig(base_url=fake.base_url, stream=stream))
            [response] = backend.generate(_requests()[:1])
            assert (response.extra["prompt_tokens"], response.extra["completion_tokens"]) == (37, 2), stream
        plain, streamed = fake.requests
    assert "stream_options" not in plain and streamed["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("refusal", ["Unexpected fields in the request: {'stream_options'}",
                                     "unknown field `include_usage`"])
def test_a_server_that_refuses_stream_options_is_asked_without_them_and_no_row_is_marked(refusal):
    """`stream_options` is toxcmp's own transport setting: refused (by name, or by its inner field), the request is
    sent again without it and later ones never carry it; it changes no answer, so no row records a refused
    parameter (that finding makes an arm suspect) — the backend's reliability counts it."""
    usage = {"prompt_tokens": 37, "completion_tokens": 2, "total_tokens": 39}

    def respond(payload: dict) -> Reply:
        if "stream_options" in payload:
            return Reply(status=422, body={"error": {"message": refusal}})
        return Reply(body=dict(completion_body("a b"), usage=usage))

    with FakeChatServer(models=[GPT_OSS.model_id], responder=respond) as fake:
        backend = get_backend("api", BackendConfig(base_url=fake.base_url, stream=True, concurrency=1))
        responses = backend.generate(_requests()[:3])
        sent = fake.requests
    assert [r.error for r in responses] == [None] * 3 and [r.raw_text for r in responses] == ["a b"] * 3
    assert all(r.extra["rejected_parameters"] == [] for r in responses)
    assert all(r.extra["prompt_tokens"] is None for r in responses)  # no usage in the stream: said, never guessed
    assert ["stream_options" in p for p in sent] == [True, False, False, False]
    assert list(backend.reliability()["rejected_parameters"]) == ["stream_options"]
