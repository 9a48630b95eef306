"""`toxcmp classify --file`: many texts through one backend (one server for all), the cache in front; a progress bar
on a terminal, then one table row (or one JSON line) per text in the file's order."""

from __future__ import annotations

from typing import Any, Sequence

from rich.table import Table

from toxcmp.cli.classify import JSON_KEYS
from toxcmp.cli.common import console, err_console, print_json
from toxcmp.domain.responses import ClassificationResult



def classify_texts(texts: Sequence[tuple[str, str]], policy: Any, spec: Any, backend: str, generation: Any,
                   config: Any, *, use_cache: bool, api_server: str, render_date: str, as_json: bool,
                   quiet: bool) -> int:
    """Classify `texts` ((id, text) pairs); print the results; return how many ended in a backend error."""
    from toxcmp.core import respond_many, verdict_result

    notify = None if quiet else (lambda note: err_console.print(note, soft_wrap=True))
    with _progress(len(texts), enabled=not quiet and err_console.is_terminal) as advance:
        responses = respond_many(policy, [text for _, text in texts], spec, backend, generation, config,
                                 use_cache=use_cache, api_server=api_server, notify=notify,
                                 render_date=render_date, on_response=lambda i, response: advance(response.cached))
    results = [verdict_result(response, policy) for response in responses]
    if as_json:
        for (text_id, text), result in zip(texts, results):
            data = result.to_dict()
            print_json({"id": text_id, "text": text, **{key: data[key] for key in JSON_KEYS}})
    else:
        console.print(results_table(texts, results))
        console.print(summary_line(results), highlight=False)
    return sum(1 for result in results if result.error)


class _progress:
    """A transient rich bar on stderr: texts answered of all, how many came from the cache, time since start."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.cached = total, enabled, 0

    def __enter__(self):
        if not self.enabled:
            return lambda cached: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("classify"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[cached]} from the cache"), TimeElapsedColumn(),
                            console=err_console, transient=True)
        self.task = self.bar.add_task("classify", total=self.total, cached=0)
        self.bar.start()
        return self.advance

    def advance(self, cached: bool) -> None:
        self.cached += bool(cached)
        self.bar.update(self.task, advance=1, cached=self.cached)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.bar.stop()


def _one_line(text: str, limit: int = 60) -> str:
    from rich.markup import escape

    flat = " ".join(text.split())
    return escape(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def results_table(texts: Sequence[tuple[str, str]], results: Sequence[ClassificationResult]) -> Table:
    table = Table(title=f"toxcmp classify: {len(results)} texts", title_justify="left")
    for name, justify in (("id", "right"), ("text", "left"), ("label", "left"), ("parse", "left"),
                          ("latency", "right"), ("cached", "left")):
        table.add_column(name, justify=justify, overflow="fold" if name == "id" else "ellipsis")
    for (text_id, text), result in zip(texts, results):
        label = "—" if result.binary_label is None else ("[red]1[/]" if result.binary_label else "[green]0[/]")
        if result.error:
            parse = "[red]error[/]"
        else:
            parse = "ok" if result.parse_ok else ("[yellow]refusal[/]" if result.refusal else "[yellow]failed[/]")
        table.add_row(text_id, _one_line(text), label, parse, f"{result.latency_s:.2f}s",
                      "yes" if result.cached else "no")
    return table


def summary_line(results: Sequence[ClassificationResult]) -> str:
    n = len(results)
    violating = sum(1 for r in results if r.binary_label == 1)
    safe = sum(1 for r in results if r.binary_label == 0)
    errors = sum(1 for r in results if r.error)
    unparsed = n - violating - safe - errors
    cached = sum(1 for r in results if r.cached)
    parts = [f"{n} text{'s' if n != 1 else ''}: {violating} violating (label 1), {safe} safe (label 0)"]
    if unparsed:
        parts.append(f"{unparsed} without a label (refusal or unparsable answer)")
    if errors:
        parts.append(f"{errors} backend errors (rerun to retry them; answers so far are cached)")
    return ", ".join(parts) + f"; {cached} answered from the cache"
