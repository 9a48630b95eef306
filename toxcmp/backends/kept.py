"""What the local backend keeps per loaded model between calls (the shared prefix's KV, prompt tails): keyed by the
model object, weakly, so a model dropped from the process takes what was kept for it; least recently used first."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Hashable


class KeptPerModel:
    def __init__(self) -> None:
        self.lock = threading.RLock()  # callers hold it across a put and the evictions it calls for
        self._held: "weakref.WeakKeyDictionary[Any, OrderedDict[Hashable, Any]]" = weakref.WeakKeyDictionary()

    def find(self, model: Any, key: Hashable) -> Any:
        with self.lock:
            kept = self._held.get(model)
            value = kept.get(key) if kept else None
            if value is not None:
                kept.move_to_end(key)  # used: now the most recent
            return value

    def put(self, model: Any, key: Hashable, value: Any) -> None:
        """Keep `value` as the most recent of `model` (in place of any value under `key`)."""
        with self.lock:
            kept = self._held.setdefault(model, OrderedDict())
            kept.pop(key, None)
            kept[key] = value

    def values(self) -> list[Any]:
        """Everything kept, every model (a model collected since is gone from here too)."""
        with self.lock:
            return [value for kept in self._held.values() for value in kept.values()]

    def count(self, model: Any) -> int:
        with self.lock:
            return len(self._held.get(model) or ())

    def pop_oldest(self, model: Any | None = None) -> Any:
        """The least recently used value of `model` (of the first model holding any, when None), removed; None
        when there is none."""
        with self.lock:
            kept = self._held.get(model) if model is not None else next((k for k in self._held.values() if k), None)
            return kept.popitem(last=False)[1] if kept else None

    def forget(self, model: Any | None = None) -> None:
        """Drop what is kept for `model` (every model when None)."""
        with self.lock:
            for m in [model] if model is not None else list(self._held):
                self._held.pop(m, None)
