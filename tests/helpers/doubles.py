"""Backend test doubles for the run orchestration (resume, interrupts, failures). Rule-based, not models:
the real inference path is tested against SmolLM2 through `local` and a real `transformers serve`."""

from __future__ import annotations

from toxcmp.errors import BackendError
from toxcmp.domain.responses import ModelResponse


class RuleBackend:
    """Answers "1" when the text contains "idiot", else "0". Quirks (keyed on words in the text) let a test plant
    each kind of disagreement. Class-level counters survive the per-run instances."""

    name = "rule"
    calls = 0
    quirks: dict[str, str] = {}
    interrupt_at: int | None = None  # raise KeyboardInterrupt on this call number (Ctrl-C during generation)
    fail_at: int | None = None  # raise BackendError on this call number (backend dies mid-run)
    delay_s = 0.0  # per request, to watch a run progress
    announce: str | None = None  # a phase to announce when generation starts (like "loading the model")

    def __init__(self, config=None):
        self.config = config

    @property
    def endpoint(self) -> str:
        return f"rule://{type(self).__name__}"

    def answer(self, text: str) -> str:
        for word, reply in self.quirks.items():
            if word in text:
                return reply
        return "1" if "idiot" in text else "0"

    def generate(self, requests, on_response=None):
        import time

        from toxcmp import phases

        if type(self).announce:
            phases.phase(type(self).announce)
        out = []
        for i, r in enumerate(requests):
            time.sleep(type(self).delay_s)
            cls = type(self)
            cls.calls += 1
            if cls.interrupt_at is not None and cls.calls == cls.interrupt_at:
                raise KeyboardInterrupt
            if cls.fail_at is not None and cls.calls >= cls.fail_at:
                raise BackendError("server went away", "restart it")
            text = self.answer(r.messages[-1][1])
            resp = ModelResponse(content=text, reasoning=f"thinking about {len(r.messages[-1][1])} chars",
                                 raw_text=text, backend=self.name, model=r.model.model_id, latency_s=0.001,
                                 served_by=self.endpoint, prompt_hash=r.prompt_hash)
            out.append(resp)
            if on_response:
                on_response(i, resp)
        return out

    def close(self):
        pass


class QuirkyBackend(RuleBackend):
    """Same rule, but refuses on "refuse", rambles on "ramble", and flips on "flip"."""

    calls = 0
    quirks = {"refuse": "I'm sorry, but I can't help with that.",
              "ramble": "Well, this message is about many things and I would rather discuss them at length.",
              "flip": "1"}


def reset() -> None:
    for cls in (RuleBackend, QuirkyBackend, SwitchBackend):
        cls.calls = 0
        cls.interrupt_at = None
        cls.fail_at = None
        cls.delay_s = 0.0
        cls.announce = None


from dataclasses import dataclass  # noqa: E402

from toxcmp.backends.options import BackendOptions, option  # noqa: E402


@dataclass(frozen=True)
class SwitchOptions(BackendOptions):
    flip: bool = option(False, changes_answer=True, help="answer the opposite label")
    pause_s: float = option(0.0, changes_answer=False, help="seconds to wait per request")


class SwitchBackend(RuleBackend):
    """An entry-point backend that declares its own options: `flip` changes every answer (so it must be part of
    the cache identity); `pause_s` changes none."""

    Options = SwitchOptions
    calls = 0

    def answer(self, text: str) -> str:
        label = super().answer(text)
        return {"0": "1", "1": "0"}[label] if self.config.flip else label
