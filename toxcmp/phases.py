"""What a run is doing right now ("loading the model", "starting the server"), said by whoever is doing it.

Backends and loaders call `phase(...)`; the run installs a handler (the live view) for its duration. Without a
handler a phase goes nowhere, so library users see nothing unless they ask.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_handlers: list[Callable[[str], None]] = []
_lock = threading.Lock()


def phase(message: str) -> None:
    with _lock:
        handlers = list(_handlers)
    for handler in handlers:
        try:
            handler(message)
        except Exception:  # noqa: BLE001 - a display problem must never stop the work it describes
            pass


@contextmanager
def handler(fn: Callable[[str], None]) -> Iterator[None]:
    with _lock:
        _handlers.append(fn)
    try:
        yield
    finally:
        with _lock:
            _handlers.remove(fn)
