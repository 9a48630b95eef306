"""The exact request a run sent for one example, rebuilt from the run's provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import ChatRequest, build_request
from toxcmp.errors import UsageError


def request_from_run(run_dir: Path, example_id: str | None = None, prompt_hash: str | None = None,
                     arm: str | None = None) -> tuple[ChatRequest, dict[str, Any], str | None]:
    """The exact request a run sent for one example (by id, or by a prefix of its prompt hash; `arm`: whose
    request, default the reference), rebuilt from the run's own provenance; and a note when the policy or the
    model files changed since the run (the hash then differs)."""
    from toxcmp.config import GenerationConfig
    from toxcmp.results.io import read_results

    rows, meta, layout, _ = read_results([Path(run_dir)])
    if not layout.startswith("toxcmp"):
        raise UsageError(f"{run_dir} is not a toxcmp run", "pass a run dir written by toxcmp compare")
    if not example_id and not prompt_hash:
        raise UsageError("which example?", "pass --example ID or --prompt-hash HASH")
    found = [r for r in rows if (example_id and r["example_id"] == example_id and (arm is None or r["arm"] == arm))
             or (prompt_hash and (r.get("prompt_hash") or "").startswith(prompt_hash))]
    if not found:
        raise UsageError(f"no example {example_id or prompt_hash!r} in {run_dir}", "see example_id in results.parquet")
    row = found[0]
    arms = {a.get("label"): a for a in meta.get("arms") or []}
    described = arms.get(row["arm"]) or {}
    model = meta.get("model") or {}
    spec = resolve_model(described.get("model") or model.get("name") or model.get("model_id"),
                         described.get("revision") or model.get("revision"))
    policy = load_policy(described.get("policy") or (meta.get("policy") or {}).get("name"))
    known = set(GenerationConfig.__dataclass_fields__)
    values = {k: v for k, v in (meta.get("generation") or {}).items() if k in known}
    values.update({k: described[k] for k in ("reasoning_effort", "max_new_tokens") if k in described})
    # the date the run's templates rendered at (None for a run from before dates were pinned: its own clock)
    render_date = meta.get("render_date") if isinstance(meta.get("render_date"), str) else None
    request = build_request(policy, row["text"], spec, GenerationConfig(**values), example_id=row["example_id"],
                            render_date=render_date)
    recorded = row.get("prompt_hash")
    note = None
    if recorded and recorded != request.prompt_hash:
        note = (f"the rebuilt prompt hash {request.prompt_hash[:12]} differs from the run's {recorded[:12]} "
                f"(policy {policy.name} or model files changed since the run)")
    return request, row, note
