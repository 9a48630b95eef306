"""`--backends 'api[provider=*]'`: one arm per LIVE Inference Provider of the model, from the Hub's provider
mapping (the real huggingface_hub client against a loopback Hub), settled before any data or model is loaded."""

from __future__ import annotations

import pytest

from toxcmp.backends import BackendConfig, providers
from toxcmp.config import configs_dir
from toxcmp.errors import BackendError, UnknownNameError, UsageError
from toxcmp.run.config import CompareConfig
from toxcmp.run.orchestrate import run_compare
from toxcmp.run.specs import parse_backend_specs
from toxcmp.testing.fake_server import FakeChatServer

from tests.helpers.fake_hub import GPT_OSS_20B, MAPPING, UNSERVED, FakeHub, client_online, reset_sessions

LIVE = ["fireworks-ai", "groq", "together"]  # MAPPING's live providers, sorted; novita is in staging
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
TOKEN = "hf_ARMStoken0123456789"


@pytest.fixture
def hub(monkeypatch):
    with FakeHub({GPT_OSS_20B: MAPPING, UNSERVED: {},
                  "someone/staging-only": {"novita": MAPPING["novita"]}}) as server:
        client_online(monkeypatch, server.url)
        yield server
    reset_sessions()


def test_every_live_provider_becomes_an_arm_labelled_by_it(hub):
    notes: list[str] = []
    specs = parse_backend_specs("api[provider=*;reasoning_effort=high]", model="gpt-oss-20b", notes=notes)
    assert [s.text for s in specs] == [f"api[provider={p};reasoning_effort=high]" for p in LIVE]
    assert [s.label for s in specs] == [f"api:{p}" for p in LIVE]
    assert [dict(s.options)["reasoning_effort"] for s in specs] == ["high"] * 3  # the other options are kept
    assert [s.backend_options for s in specs] == [{"provider": p} for p in LIVE]
    assert notes == [(f"api[provider=*;reasoning_effort=high]: one arm per live provider of {GPT_OSS_20B}: "
                      "fireworks-ai, groq, together; skipped, not live: novita (staging)")]
    assert len(hub.requests) == 1  # one mapping request for the whole list


def test_other_arms_stay_and_an_arms_own_model_is_the_one_asked_about(hub):
    specs = parse_backend_specs(f"local,api[provider=*;model={GPT_OSS_20B}]", model="smollm2-135m")
    assert [s.label for s in specs] == ["local", *(f"api:{p}" for p in LIVE)]
    assert specs[1].text == f"api[provider=fireworks-ai;model={GPT_OSS_20B}]"
    assert [r["path"] for r in hub.requests] == [f"/api/models/{GPT_OSS_20B}"]


def test_a_run_wide_provider_star_expands_too_and_a_written_label_is_kept(hub):
    specs = parse_backend_specs("api,api[label=hi;max_new_tokens=8]", model="gpt-oss-20b",
                                settings=BackendConfig(provider="*"))
    assert [s.label for s in specs] == [*(f"api:{p}" for p in LIVE), *(f"hi:{p}" for p in LIVE)]
    assert specs[3].text == "api[provider=fireworks-ai;label=hi:fireworks-ai;max_new_tokens=8]"
    assert len(hub.requests) == 1  # the model's mapping is asked for once


def test_named_arms_are_left_alone_and_the_hub_is_not_asked(hub):
    specs = parse_backend_specs("api[provider=groq],api", model="gpt-oss-20b")
    assert [s.text for s in specs] == ["api[provider=groq]", "api"]
    assert hub.requests == []


def test_offline_is_one_line_before_anything_else(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError) as info:
        parse_backend_specs("api[provider=*]", model="gpt-oss-20b")
    assert info.value.one_line().startswith("the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE=1 is set")
    assert hub.requests == []


@pytest.mark.parametrize("model, message", [
    (UNSERVED, f"no Inference Provider serves {UNSERVED}"),
    ("someone/staging-only", ("no Inference Provider serves someone/staging-only live ('api[provider=*]'): "
                              "novita (staging)")),
    ("smollm2-135m", "smollm2-135m exists only on this machine: no Inference Provider serves it")])
def test_no_live_provider_is_a_usage_error(hub, model, message):
    with pytest.raises(UsageError) as info:
        parse_backend_specs("api[provider=*]", model=model)
    assert info.value.one_line().startswith(message)


def test_a_star_with_a_base_url_is_a_usage_error(hub):
    with pytest.raises(UsageError, match="provider=\\* picks Inference Providers"):
        parse_backend_specs("api[provider=*;base_url=http://127.0.0.1:9/v1],local", model="gpt-oss-20b")


def test_an_unknown_provider_lists_those_serving_the_model_when_the_hub_can_say(hub, monkeypatch):
    with pytest.raises(UnknownNameError) as info:
        parse_backend_specs("api[provider=grok],local", model="gpt-oss-20b")
    assert info.value.valid == ["auto", *LIVE]
    assert "did you mean 'groq'?" in info.value.one_line() and GPT_OSS_20B in info.value.one_line()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub cannot say: every provider huggingface_hub knows
    with pytest.raises(UnknownNameError) as info:
        parse_backend_specs("api[provider=grok],local", model="gpt-oss-20b")
    assert info.value.valid == sorted(providers.valid_providers())


def test_a_compare_runs_one_arm_per_live_provider_through_the_router(hub, monkeypatch, tmp_path):
    class Notes:
        def __init__(self):
            self.logged: list[str] = []

        def log(self, message):
            self.logged.append(message)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    with FakeChatServer(models=[GPT_OSS_20B]) as router:
        monkeypatch.setattr(providers, "ROUTER_URL", router.base_url)
        observer = Notes()
        result = run_compare(CompareConfig(
            model="gpt-oss-20b", revision="0" * 40, dataset=str(SAMPLE), sample_size=2, backends="api[provider=*]",
            backend=BackendConfig(token=TOKEN, cache_dir=tmp_path / "cache"), output_dir=tmp_path / "out",
            margins=False), observer)
    assert result.status == "complete"
    assert [a["label"] for a in result.summary["arms"]] == [f"api:{p}" for p in LIVE]
    assert sorted({r["model"] for r in router.requests}) == [f"{GPT_OSS_20B}:{p}" for p in LIVE]
    assert any("skipped, not live: novita (staging)" in n for n in observer.logged)


def test_the_expansion_comes_before_the_data(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE=1 is set"):  # not the missing dataset
        run_compare(CompareConfig(model="gpt-oss-20b", dataset=str(tmp_path / "missing.csv"),
                                  backends="api[provider=*]", output_dir=tmp_path / "out"))
