from __future__ import annotations

import os

os.environ["COLUMNS"] = "120"  # fixed console width for rich/CliRunner output, before toxcmp imports rich
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOXICCHAT_CSV = SHARED_DATA / "toxicchat0124" / "test.csv"
RECORDED = SHARED_DATA / "gptoss_recorded"


def require_shared(path: Path) -> Path:
    """Skip a data-backed test when ../shared is missing; fail instead under TOXCMP_REQUIRE_SHARED=1 (CI has it)."""
    if not path.exists():
        message = f"shared test data not found at {path} (clone next to ../shared/)"
        if os.environ.get("TOXCMP_REQUIRE_SHARED") == "1":
            pytest.fail(f"{message}; TOXCMP_REQUIRE_SHARED=1 forbids skipping", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Converted bundled models are shared by the whole session (the GGUF conversion takes ~30 s).

    Under pytest-xdist every worker is a session of its own: they share the run's base temp dir (its parent)
    instead of converting once each; `materialize` converts into a temp dir and renames, so two workers converting
    at once is safe. `make test` sets TOXCMP_TEST_MODELS_DIR so the parallel and the serial pass share it too."""
    if os.environ.get("TOXCMP_TEST_MODELS_DIR"):
        return Path(os.environ["TOXCMP_TEST_MODELS_DIR"])
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "models"
        path.mkdir(exist_ok=True)
        return path
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module", autouse=True)
def module_env(tmp_path_factory, models_dir):
    """A module's own fixtures (one run shared by its tests) get a cache dir of their own and no HF token — never
    the user's cache, never another module's: there a loopback server on a port an earlier test's server had,
    answering the same requests, was answered from that server's cache (seen in a fresh-clone CI)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOXCMP_CACHE_DIR", str(tmp_path_factory.mktemp("module-cache")))
        patch.setenv("TOXCMP_MODELS_DIR", str(models_dir))
        patch.delenv("HF_TOKEN", raising=False)
        patch.delenv("TOXCMP_DEBUG", raising=False)
        yield


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch, models_dir):
    """Every test gets its own cache dir and no HF token."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TOXCMP_CACHE_DIR", str(cache))
    monkeypatch.setenv("TOXCMP_MODELS_DIR", str(models_dir))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("TOXCMP_DEBUG", raising=False)
    return cache


@pytest.fixture
def cli():
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(app, list(args), **kwargs)

    return invoke
