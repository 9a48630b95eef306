"""What keeps a busy server from being made busier, shared by the whole run (across chunks) and by every route
the `api` backend sends through (a provider, a base URL, a spawned server):
- per-request timeout: max new tokens × measured seconds per token (plus time to first token) × a safety factor,
  with a floor; a generous one until the first answer is measured; `--timeout` fixes it (`AdaptiveTimeout`);
- retries: exponential backoff + jitter on 408/429/5xx, timeouts and connection errors, honouring Retry-After
  (`backoff_delay`, `retry_after_s`), within a budget for the run (`RetryBudget`);
- a circuit breaker: overload (timeouts, 5xx) piling up pauses new requests, halves the in-flight count and doubles
  the timeouts, said once in the live view; the in-flight count creeps back after a run of successes (`Breaker`),
  enforced by the in-flight slots of one `generate` call (`Gate`).

The module's constants are read at call time (tests and benchmarks shrink them).
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import time
from collections import deque
from typing import Any

from toxcmp import phases

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
OVERLOAD_STATUS = {408, 502, 503, 504, 520, 522, 524, 529}  # the server (or its proxy) could not keep up
_RETRY_BASE_S = float(os.environ.get("TOXCMP_RETRY_BASE_S", "0.5"))
_RETRY_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0
FIRST_TIMEOUT_S = 300.0  # until one answer has been measured (the first one also pays warm-up)
TIMEOUT_FLOOR_S = 60.0
TIMEOUT_SAFETY = 4.0  # × the slowest recent measurement
TIMEOUT_CAP_S = 1800.0
RETRY_BUDGET_MIN = 10  # retries the run may always spend ...
RETRY_BUDGET_RATIO = 0.2  # ... plus this share of the requests it has sent
BREAKER_WINDOW = 10  # recent outcomes the breaker looks at
BREAKER_PAUSE_S = (1.0, 15.0)  # first pause (a quarter of the timeout that expired, a 5xx's Retry-After) within
BREAKER_PAUSE_CAP_S = 60.0  # these bounds; it doubles with every trip, up to this


def retry_after_s(headers: Any) -> float | None:
    """A Retry-After header in seconds (a number or an HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


_retry_after_s = retry_after_s  # the name it had in toxcmp.backends.api


def backoff_delay(attempt: int, retry_after: float | None, base: float | None = None) -> float:
    """Retry-After when the server sent one (capped at 2 min), else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_S)
    base = _RETRY_BASE_S if base is None else base
    return min(_RETRY_CAP_S, base * 2**attempt) * (0.5 + random.random() / 2)


class AdaptiveTimeout:
    """Per-request timeout that scales with the work asked for: TIMEOUT_SAFETY × (time to first token + max new
    tokens × seconds per token), both the slowest of the last 8 answers, never under TIMEOUT_FLOOR_S; until an
    answer is measured, FIRST_TIMEOUT_S. Each timeout of the same request doubles its next attempt's limit, each
    breaker trip doubles every limit (`stretch`). A fixed (user) timeout is used as is."""

    def __init__(self, fixed: float | None):
        self.fixed = fixed
        self.first_token_s: deque[float] = deque(maxlen=8)
        self.per_token_s: deque[float] = deque(maxlen=8)
        self.stretch = 1.0
        self.last_s: float | None = None

    @property
    def measured(self) -> bool:
        return bool(self.per_token_s)

    def seconds(self, max_new_tokens: int, timeouts_so_far: int = 0) -> float:
        if self.fixed is not None:
            value = self.fixed
        elif not self.measured:
            value = FIRST_TIMEOUT_S * self.stretch * 2**timeouts_so_far
        else:
            work = max(self.first_token_s, default=0.0) + max_new_tokens * max(self.per_token_s)
            value = max(TIMEOUT_FLOOR_S, TIMEOUT_SAFETY * work) * self.stretch * 2**timeouts_so_far
            value = min(TIMEOUT_CAP_S, value)
        self.last_s = value
        return value

    def observe(self, latency_s: float, first_token_s: float | None, tokens: int | None, max_new_tokens: int) -> None:
        """One answered request: its wall time, when its first token came (streaming only) and how many tokens."""
        if first_token_s is not None and tokens and tokens >= 2:
            self.first_token_s.append(first_token_s)
            self.per_token_s.append(max(0.0, latency_s - first_token_s) / (tokens - 1))
        else:  # no split known: all of it counts as per-token time, which only makes the limit more generous
            self.per_token_s.append(latency_s / max(1, tokens or max_new_tokens))

    def describe(self) -> dict[str, Any]:
        """What provenance records about the timeouts of this run."""
        return {"mode": "fixed" if self.fixed is not None else "adaptive",
                "last_s": round(self.last_s, 3) if self.last_s else None,
                "first_s": FIRST_TIMEOUT_S, "floor_s": TIMEOUT_FLOOR_S, "safety": TIMEOUT_SAFETY}


class RetryBudget:
    """Retries the whole run may spend: RETRY_BUDGET_MIN plus RETRY_BUDGET_RATIO of the requests sent, so a
    failing server gets at most ~1.2× the traffic of a healthy one, not (1 + max_retries)×."""

    def __init__(self, minimum: int | None = None, ratio: float | None = None):
        self.minimum = RETRY_BUDGET_MIN if minimum is None else minimum
        self.ratio = RETRY_BUDGET_RATIO if ratio is None else ratio
        self.requests = 0
        self.spent = 0
        self.refused = 0

    def allow(self) -> bool:
        if self.spent < self.minimum + self.ratio * self.requests:
            return True
        self.refused += 1
        return False


class Breaker:
    """Overload detector shared by the run. An outcome counts only for requests sent after the last trip (those
    sent before were already judged). Trips when the last two outcomes, or 3 of the last BREAKER_WINDOW, were
    overload (a timeout or a 5xx): pause new sends, halve the in-flight limit, double timeouts."""

    def __init__(self, limit: int, label: str, timeouts: AdaptiveTimeout):
        self.configured = self.limit = limit
        self.label, self.timeouts = label, timeouts
        self.paused_until = 0.0
        self.last_trip = float("-inf")
        self.trips = 0
        self.recent: deque[bool] = deque(maxlen=BREAKER_WINDOW)
        self.successes = 0
        self.said = False
        self.pauses: list[tuple[float, float]] = []  # (from, until) on the monotonic clock, one per trip

    def success(self, sent_at: float) -> None:
        if sent_at < self.last_trip:
            return
        self.recent.append(False)
        self.successes += 1
        if self.limit < self.configured and self.successes >= 4 * self.limit:
            self.limit += 1  # additive increase, never above where the run started
            self.successes = 0

    def overload(self, sent_at: float, what: str, pause_s: float) -> None:
        """`pause_s`: how long the server needs, by this failure (a quarter of the timeout that expired; a 5xx's
        Retry-After); kept within BREAKER_PAUSE_S, doubled per trip."""
        if sent_at < self.last_trip:
            return
        self.recent.append(True)
        recent = list(self.recent)
        if recent[-2:] != [True, True] and sum(recent) < 3:
            return
        old = self.limit
        self.limit = max(1, self.limit // 2)
        self.trips += 1
        self.successes = 0
        self.recent.clear()
        self.timeouts.stretch *= 2
        low, high = BREAKER_PAUSE_S
        cooldown = min(BREAKER_PAUSE_CAP_S, min(high, max(low, pause_s)) * 2 ** (self.trips - 1))
        self.last_trip = time.monotonic()
        self.paused_until = self.last_trip + cooldown
        self.pauses.append((self.last_trip, self.paused_until))
        if not self.said:  # once per run: the live view's "now" line keeps it until something else happens
            self.said = True
            phases.phase(f"{self.label}: the server is overloaded ({what}); backing off {cooldown:.0f}s, "
                         f"{old}→{self.limit} in flight, longer timeouts")


class Gate:
    """In-flight slots for one `generate` call: at most `breaker.limit` requests on the wire, none while paused."""

    def __init__(self, breaker: Breaker):
        self.breaker = breaker
        self.in_flight = 0
        self.freed = asyncio.Event()

    async def acquire(self) -> None:
        while True:
            wait = self.breaker.paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self.in_flight < self.breaker.limit:
                self.in_flight += 1
                return
            self.freed.clear()
            await self.freed.wait()

    def release(self) -> None:
        self.in_flight -= 1
        self.freed.set()


__all__ = ["BREAKER_PAUSE_CAP_S", "BREAKER_PAUSE_S", "BREAKER_WINDOW", "FIRST_TIMEOUT_S", "OVERLOAD_STATUS",
           "RETRYABLE_STATUS", "RETRY_BUDGET_MIN", "RETRY_BUDGET_RATIO", "TIMEOUT_CAP_S", "TIMEOUT_FLOOR_S",
           "TIMEOUT_SAFETY", "AdaptiveTimeout", "Breaker", "Gate", "RetryBudget", "backoff_delay", "retry_after_s"]
