"""`recorded` backend: answers come from a previous run instead of a model.

Sources (`recorded[path=…;side=…]`):
- a toxcmp run dir or its `results.parquet` — `side` is an arm label of that run, or `a`/`b` for its first and
  second arm (the reference first); repeat 0 is replayed;
- a study `backend_comparison_*.parquet` — `side` is `api` or `local`;
- a single-backend study file (`raw_model_response`, `model_reasoning`) — no side.

Requests are matched to recorded rows by example id (`conv_id`), then by the user text's sha256. An example that
is not in the recording is an error row "not in the recording", never a silent skip. Content, reasoning, raw
text, reasoning source, latency and finish reason are the recorded ones (a study file's response column is split
the way a live backend splits a server's content: `toxcmp.domain.recordings`); `served_by` names the file and its
sha256, which is also the backend's cache identity. Uses: drift (a live provider today against last month's run), re-running the
whole pipeline on a colleague's outputs, and offline end-to-end tests on real gpt-oss text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from toxcmp.errors import UsageError
from toxcmp.domain import recordings
from toxcmp.domain.parsing import recorded_source
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.backends import OnResponse
from toxcmp.backends.options import BackendOptions, option

RESULTS_FILE = "results.parquet"


@dataclass(frozen=True)
class RecordedAnswer:
    content: str
    reasoning: str
    raw: str
    latency_s: float
    finish_reason: str | None
    served_by: str | None
    reasoning_source: str | None = None  # as recorded; None: the recording did not say (inferred from the text)


def _source(recorded: str | None, raw: str, reasoning: str) -> str:
    """The recorded reasoning source, else what the recorded text shows."""
    return recorded or recorded_source(raw, reasoning)


def text_key(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve_file(path_text: str | None) -> Path:
    if not path_text:
        raise UsageError("the recorded backend needs a recording", "write recorded[path=RUN_DIR_OR_PARQUET;side=a]")
    path = Path(path_text).expanduser()
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise UsageError(f"no recording at {path}", "pass a toxcmp run dir, a results.parquet, or a study parquet")
    return path


def load_recording(path: Path, side: str | None) -> tuple[dict[str, RecordedAnswer], str, int]:
    """Recorded answers keyed by example id and by text hash, the side that was read, and how many rows it holds."""
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable parquet gets the same one line
        raise UsageError(f"cannot read recording {path}: {str(exc).splitlines()[0][:160]}", "check the file") from None
    columns = set(frame.columns)
    if {"arm", "content"} <= columns:
        labels = list(dict.fromkeys(frame["arm"].to_list()))
        side = _arm_side(path, side, labels)
        rows = [(r["example_id"], r["text"],
                 RecordedAnswer(r["content"] or "", r["reasoning"] or "", r["raw"] or "", float(r["latency_s"] or 0.0),
                                r.get("finish_reason"), r.get("served_by"),
                                _source(r.get("reasoning_source"), r["raw"] or "", r["reasoning"] or "")))
                for r in frame.iter_rows(named=True) if r["arm"] == side and not r.get("repeat") and not r.get("error")]
    elif "a_content" in columns:
        prefix, side = _toxcmp_side(path, side)
        rows = [(r["example_id"], r["text"],
                 RecordedAnswer(r[f"{prefix}_content"] or "", r[f"{prefix}_reasoning"] or "", r[f"{prefix}_raw"] or "",
                                float(r[f"{prefix}_latency_s"] or 0.0), r.get(f"{prefix}_finish_reason"),
                                r.get(f"{prefix}_served_by"),
                                _source(r.get(f"{prefix}_reasoning_source"), r[f"{prefix}_raw"] or "",
                                        r[f"{prefix}_reasoning"] or "")))
                for r in frame.iter_rows(named=True) if not r.get(f"{prefix}_error")]
    elif recordings.is_pair(columns):
        side = (side or "").lower()
        if side not in recordings.PAIR_SIDES:
            raise UsageError(f"{path.name} holds two sides; pick one", "add side=api or side=local")
        rows = [(a.conv_id, a.text, RecordedAnswer(a.content, a.reasoning, a.raw, 0.0, None, a.served_by,
                                                   a.reasoning_source))
                for a in recordings.read_pair(frame, side)]
    elif recordings.is_single(columns):
        side = side or "single"
        rows = [(a.conv_id, a.text, RecordedAnswer(a.content, a.reasoning, a.raw, 0.0, None, a.served_by,
                                                   a.reasoning_source))
                for a in recordings.read_single(frame)]
    else:
        raise UsageError(f"unrecognised recording layout in {path}",
                         "pass a toxcmp run dir, a study backend_comparison parquet, or a study api_* parquet")
    answers: dict[str, RecordedAnswer] = {}
    for example_id, text, answer in rows:
        if example_id:
            answers.setdefault(str(example_id), answer)
        if text:
            answers.setdefault(text_key(text), answer)
    return answers, side, len(rows)


def _arm_side(path: Path, side: str | None, labels: list[str]) -> str:
    if side in labels:
        return side
    if side in ("a", "b") and len(labels) >= 2:
        return labels["ab".index(side)]
    raise UsageError(f"pick an arm of {path.parent.name or path.name}", f"add side=ARM with ARM one of: {', '.join(labels)}")


def _toxcmp_side(path: Path, side: str | None) -> tuple[str, str]:
    import polars as pl

    meta = json.loads(pl.read_parquet_metadata(path).get("toxcmp", "{}"))
    labels = [b.get("label") for b in meta.get("backends", [])]
    if side in ("a", "b"):
        return side, side
    if side and side in labels:
        return "ab"[labels.index(side)], side
    raise UsageError(f"pick a side of {path.parent.name or path.name}",
                     f"add side=a or side=b{' (a = ' + labels[0] + ', b = ' + labels[1] + ')' if len(labels) == 2 else ''}")


@dataclass(frozen=True)
class RecordedOptions(BackendOptions):
    recording: str | None = option(None, changes_answer=True,
                                   help="a toxcmp run dir or results.parquet, or a study parquet")
    side: str | None = option(None, changes_answer=True,
                              help="which arm of the recording: a/b, an arm label, or api/local (study files)")

    aliases = {"path": "recording", "file": "recording"}

    @classmethod
    def default_label(cls, text: str, written: dict[str, str]) -> str:
        """What reports call an arm of this backend that has no `label=`: the side it replays."""
        return f"recorded:{written.get('side') or Path(written.get('recording') or '?').stem}"


class RecordedBackend:
    name = "recorded"
    Options = RecordedOptions

    def __init__(self, config: Any = None):
        """`config`: `RecordedOptions`, or run-wide settings (a `BackendConfig`) to take them from."""
        self.options = config if isinstance(config, RecordedOptions) else RecordedOptions.build(config)
        self.path = _resolve_file(self.options.recording)
        self.sha256 = file_sha256(self.path)
        self.answers, self.side, self.rows = load_recording(self.path, self.options.side)

    @property
    def endpoint(self) -> str:
        return f"recorded:{self.sha256}:{self.side}"

    @property
    def served_by(self) -> str:
        return f"{self.path.name}:{self.side}@sha256:{self.sha256[:12]}"

    def _find(self, request: ChatRequest) -> RecordedAnswer | None:
        if request.example_id and request.example_id in self.answers:
            return self.answers[request.example_id]
        user = next((content for role, content in reversed(request.messages) if role == "user"), "")
        return self.answers.get(text_key(user))

    def covers(self, example_id: str | None, text: str) -> bool:
        return (bool(example_id) and example_id in self.answers) or text_key(text) in self.answers

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        out = []
        for i, request in enumerate(requests):
            found = self._find(request)
            if found is None:
                response = ModelResponse(content="", reasoning="", raw_text="", backend=self.name,
                                         model=request.model.model_id, latency_s=0.0,
                                         error=f"not in the recording {self.path.name} (example {request.example_id})",
                                         served_by=self.served_by, prompt_hash=request.prompt_hash)
            else:
                response = ModelResponse(content=found.content, reasoning=found.reasoning, raw_text=found.raw,
                                         backend=self.name, model=request.model.model_id, latency_s=found.latency_s,
                                         served_by=self.served_by, finish_reason=found.finish_reason,
                                         prompt_hash=request.prompt_hash,
                                         extra={"recorded_by": found.served_by,
                                                "reasoning_source": found.reasoning_source})
            out.append(response)
            if on_response:
                on_response(i, response)
        return out

    def close(self) -> None:
        pass

