"""The library works with the CLI's defaults and speaks in keyword arguments (issue 23)."""

from __future__ import annotations

import pytest

import toxcmp
from toxcmp.core import flags_as_keywords
from toxcmp.errors import UsageError


def test_an_error_from_the_library_names_keyword_arguments_not_flags():
    with pytest.raises(UsageError) as info:
        toxcmp.classify("hello", model="smollm2-135m", backend="api", api_server="none")
    text = info.value.one_line()
    assert "--" not in text, text
    assert "api_server='local'" in text and "base_url=URL" in text and "backend='local'" in text


@pytest.mark.parametrize("flags, keywords", [
    ("add --api-server local (or --base-url URL)", "add api_server='local' (or base_url=URL)"),
    ("pass --max-new-tokens 64", "pass max_new_tokens=64"),
    ("e.g. --render-date 2025-08-05", "e.g. render_date='2025-08-05'"),
    ("--render-date must be a day", "render_date=… must be a day"),
    ("use --no-cache", "use use_cache=False"),
    ("set HF_TOKEN (or --token) to a valid token", "set HF_TOKEN (or token=…) to a valid token"),
])
def test_flags_read_as_keywords(flags, keywords):
    assert flags_as_keywords(flags) == keywords


def test_the_library_default_is_the_clis_auto(monkeypatch):
    """With no api_server given, a bundled model on the api backend gets a local server, as `toxcmp classify`
    does — the library no longer refuses what the CLI runs (the spawn itself is stopped before it happens)."""
    from toxcmp import core

    seen = {}

    def stop_before_generating(policy, text, spec, backend, generation, config, use_cache=True, api_server=None,
                               notify=None, render_date=None):
        seen["api_server"] = api_server
        raise UsageError("stopped here")

    monkeypatch.setattr(core, "respond", stop_before_generating)
    with pytest.raises(UsageError):
        toxcmp.classify("hello", model="smollm2-135m", backend="api")
    assert seen["api_server"] == "auto"
