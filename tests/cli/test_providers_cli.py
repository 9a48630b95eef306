"""`toxcmp providers MODEL`: who serves a model, from the Hub's provider mapping, asked through the real
huggingface_hub client of a loopback Hub (`tests/helpers/fake_hub.py`), never a mocked one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.fake_hub import GPT_OSS_20B, MAPPING, UNSERVED, FakeHub, client_online, reset_sessions

TOKEN = "hf_PROVIDERSsecret0123456789"
ROWS = [["provider", "status", "provider model id", "task"],
        ["groq", "live", "openai/gpt-oss-20b", "conversational"],
        ["novita", "staging", "openai/gpt-oss-20b-staging", "conversational"],
        ["fireworks-ai", "live", "accounts/fireworks/models/gpt-oss-20b", "conversational"],
        ["together", "live", "OpenAI/gpt-oss-20B", "conversational"]]


@pytest.fixture
def hub(monkeypatch):
    with FakeHub() as server:
        client_online(monkeypatch, server.url)
        yield server
    reset_sessions()


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def _table_rows(text: str) -> list[list[str]]:
    """The header and body rows of a rich table, cell by cell."""
    lines = [line.replace("┃", "│") for line in text.splitlines()]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.count("│") == 5]


def test_the_table_lists_every_provider_of_the_mapping_live_and_staging(cli, hub):
    result = cli("providers", GPT_OSS_20B)
    assert result.exit_code == 0, result.output
    assert _table_rows(result.stdout) == ROWS  # the Hub's order, staging included
    assert f"Inference Providers serving {GPT_OSS_20B}" in result.stdout
    assert "3 of 4 live" in result.stdout
    [request] = hub.requests
    assert request["path"] == f"/api/models/{GPT_OSS_20B}"
    assert request["query"] == {"expand": ["inferenceProviderMapping"]}


def test_json_is_the_mapping_as_the_hub_sent_it(cli, hub):
    result = cli("providers", GPT_OSS_20B, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "model": GPT_OSS_20B, "model_id": GPT_OSS_20B,
        "providers": [{"provider": name, "status": m["status"], "provider_id": m["providerId"], "task": m["task"]}
                      for name, m in MAPPING.items()]}


def test_the_list_shape_of_the_mapping_reads_the_same(cli, monkeypatch):
    listed = [{"provider": name, **m} for name, m in MAPPING.items()]  # what the Hub's list endpoints send
    with FakeHub({GPT_OSS_20B: listed}) as server:
        client_online(monkeypatch, server.url)
        result = cli("providers", GPT_OSS_20B)
    reset_sessions()
    assert result.exit_code == 0, result.output
    assert _table_rows(result.stdout) == ROWS


def test_an_alias_is_resolved_to_its_hub_id(cli, hub):
    result = cli("providers", "gpt-oss-20b", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == "gpt-oss-20b"
    assert json.loads(result.stdout)["model_id"] == GPT_OSS_20B
    assert [r["path"] for r in hub.requests] == [f"/api/models/{GPT_OSS_20B}"]


def test_a_model_no_provider_serves_says_so_in_one_line(cli, hub):
    result = cli("providers", UNSERVED)
    assert result.exit_code == 2
    assert f"no Inference Provider serves {UNSERVED}" in _one_line(result)


def test_a_model_the_hub_does_not_have_is_a_usage_error(cli, hub):
    result = cli("providers", "nobody/no-such-model")
    assert result.exit_code == 2
    assert "the Hugging Face Hub has no model 'nobody/no-such-model'" in _one_line(result)


def test_a_bundled_model_is_served_by_no_provider_and_the_hub_is_not_asked(cli, hub):
    result = cli("providers", "smollm2-135m")
    assert result.exit_code == 2
    assert "exists only on this machine: no Inference Provider serves it" in _one_line(result)
    assert hub.requests == []


def test_offline_says_the_hub_cannot_be_reached_and_sends_nothing(cli, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("providers", GPT_OSS_20B)
    assert result.exit_code == 4
    assert "the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE=1 is set" in _one_line(result)
    assert hub.requests == []


def test_an_unreachable_hub_is_one_line_at_once(cli, monkeypatch):
    client_online(monkeypatch, "http://127.0.0.1:9")  # the discard port: nothing listens
    started = time.monotonic()
    result = cli("providers", GPT_OSS_20B)
    reset_sessions()
    assert result.exit_code == 4
    assert "the Hugging Face Hub cannot be reached at http://127.0.0.1:9" in _one_line(result)
    assert time.monotonic() - started < 3.0  # one 2-second probe at most, no retries


def test_a_hub_that_hangs_up_is_one_line(cli, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts (the probe passes), then closes at once
        def hang_up():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:  # the listener is closed: the test is over
                    return
                conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        client_online(monkeypatch, f"http://127.0.0.1:{listener.getsockname()[1]}")
        result = cli("providers", GPT_OSS_20B)
    reset_sessions()
    assert result.exit_code == 4
    assert "the Hugging Face Hub cannot be reached at http://127.0.0.1:" in _one_line(result)


def test_a_failing_hub_is_asked_once(cli, monkeypatch):
    with FakeHub(status=503) as server:
        client_online(monkeypatch, server.url)
        result = cli("providers", GPT_OSS_20B)
    reset_sessions()
    assert result.exit_code == 4
    assert f"the Hugging Face Hub did not list the providers of {GPT_OSS_20B} (HTTP 503)" in _one_line(result)
    assert len(server.requests) == 1  # no retry storm


def test_the_token_goes_to_the_hub_and_is_never_printed(cli, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    ok = cli("providers", GPT_OSS_20B, "--json")
    failed = cli("providers", UNSERVED)
    assert ok.exit_code == 0 and failed.exit_code == 2
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    assert TOKEN not in ok.output + failed.output


def test_the_command_reads_hf_endpoint_in_a_fresh_process(hub):
    """No test setup at all: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import, as for a user."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "TOXCMP_DEBUG")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", COLUMNS="120")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "toxcmp", "providers", "gpt-oss-20b", "--json"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [p["provider"] for p in json.loads(done.stdout)["providers"]] == list(MAPPING)
