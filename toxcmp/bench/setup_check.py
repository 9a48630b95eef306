"""`toxcmp verify-setup`: prove the install works without loading model weights."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = True


REQUIRED_DEPS = ("typer", "rich", "diskcache", "huggingface_hub", "httpx", "polars", "rapidfuzz", "scipy")
LOCAL_DEPS = ("torch", "transformers", "accelerate", "gguf")


def _dep(module: str, required: bool) -> Check:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001
        extra = "" if required else "[local]"
        return Check(f"import {module}", False, f"{type(exc).__name__}: {exc}",
                     f"pip install 'toxcmp{extra}'", required)
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
    return Check(f"import {module}", True, str(version), required=required)


def run_checks(cache_dir: Path) -> list[Check]:
    from toxcmp import classify
    from toxcmp.backends import backend_names
    from toxcmp.config import configs_dir
    from toxcmp.core import InferenceBackend
    from toxcmp.domain.models import bundled_gguf_path, model_aliases, resolve_model
    from toxcmp.domain.policies import builtin_names, load_policy

    checks = [Check("python ≥ 3.11", sys.version_info >= (3, 11), sys.version.split()[0], "use Python 3.11+")]
    checks += [_dep(m, True) for m in REQUIRED_DEPS]
    checks += [_dep(m, False) for m in LOCAL_DEPS]

    names = backend_names()
    checks.append(Check("backends registered", {"api", "local"} <= set(names), ", ".join(names),
                        "reinstall toxcmp"))
    for name in builtin_names():
        try:
            policy = load_policy(name)
            checks.append(Check(f"policy {name}", True, f"{len(policy.categories)} labels, {policy.output} answer"))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check(f"policy {name}", False, str(exc), "fix the policy file"))
    for alias, entry in model_aliases().items():
        if "random_config" in entry:  # random weights, built on first use: checking must not build them
            found = (configs_dir() / "models" / entry["random_config"]).is_file()
            checks.append(Check(f"model {alias}", found, f"random weights, built on first use from "
                                f"configs/models/{entry['random_config']}", "reinstall toxcmp", required=False))
            continue
        try:
            spec = resolve_model(alias)
            if spec.is_bundled:
                path = bundled_gguf_path(spec)
                detail = f"{path.name} ({path.stat().st_size / 1e6:.0f} MB, {spec.revision})"
            else:
                detail = f"{spec.model_id}@{spec.revision}"
            checks.append(Check(f"model {alias}", True, detail))
        except Exception as exc:  # noqa: BLE001
            hint = getattr(exc, "hint", None) or "check configs/models.toml"
            checks.append(Check(f"model {alias}", False, getattr(exc, "message", str(exc)), hint,
                                required=not alias.startswith("gpt-oss")))
    checks.append(_cache_check(cache_dir))
    token = os.environ.get("HF_TOKEN")
    checks.append(Check("HF token", True, "present (hidden)" if token else "absent (only needed for Inference Providers)",
                        required=False))
    checks.append(_torch_device())
    serve = Path(sys.executable).parent / "transformers"
    checks.append(Check("transformers serve (for --api-server local)", serve.exists() or bool(importlib.util.find_spec("fastapi")),
                        str(serve) if serve.exists() else "not found", "pip install 'toxcmp[serve]'", required=False))
    checks.append(_llamacpp_check())
    default_backend = inspect.signature(classify).parameters["backend"].default
    checks.append(Check("public API: classify(backend=API)", default_backend == InferenceBackend.API,
                        f"default backend = {getattr(default_backend, 'value', default_backend)}",
                        "classify's default backend must stay InferenceBackend.API"))
    return checks


def _llamacpp_check() -> Check:
    from toxcmp.backends.server import LLAMACPP_HINT, llamacpp_version
    from toxcmp.errors import BackendError

    name = "llama.cpp server (for --api-server llamacpp)"
    try:
        version = llamacpp_version()
    except BackendError:
        return Check(name, False, "not installed", LLAMACPP_HINT, required=False)
    return Check(name, True, f"llama-cpp-python {version}", required=False)


def _cache_check(cache_dir: Path) -> Check:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".probe-"):
            pass
        return Check("cache dir writable", True, str(cache_dir))
    except OSError as exc:
        return Check("cache dir writable", False, f"{cache_dir}: {exc.strerror}", "pass --cache-dir or set TOXCMP_CACHE_DIR")


def _torch_device() -> Check:
    try:
        import torch
    except Exception:  # noqa: BLE001
        return Check("torch device", False, "torch not installed", "pip install torch==2.13.0 (CPU) first", False)
    if torch.cuda.is_available():
        return Check("torch device", True, f"cuda ({torch.cuda.get_device_name(0)})", required=False)
    return Check("torch device", True, f"cpu ({torch.get_num_threads()} threads)", required=False)
