"""Issue 23: `toxcmp classify --file` classifies many texts (a .txt file's lines, a .csv/.parquet/.jsonl text
column) through one backend, the cache in front, with a progress bar in a terminal.

Real processes against the scripted loopback server, whose answer depends on the text it is sent (1 when it holds
"idiot"): expected labels, ids and request counts come from the input files and that rule, counted by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import polars as pl

from tests.helpers.terminal import run_in_terminal
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion


def _by_text(payload) -> Reply:
    return Reply(body=completion("1" if "idiot" in payload["messages"][-1]["content"] else "0"))


def _env(tmp_path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}


def _classify(args, tmp_path, server):
    return subprocess.run([sys.executable, "-m", "toxcmp", "classify", "--backend", "api", "--model", "org/m",
                           "--base-url", server.base_url, "--cache-dir", str(tmp_path / "cache"), *args],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=120)


def test_a_text_file_is_one_text_per_line_in_order_and_a_rerun_comes_from_the_cache(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("you are an idiot\n\nhave a nice day\nwhat an idiot move\n", encoding="utf-8")
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        first = _classify(["--file", str(texts), "--json"], tmp_path, server)
        sent = len(server.requests)
        again = _classify(["--file", str(texts), "--json"], tmp_path, server)
        sent_again = len(server.requests) - sent
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert [(r["id"], r["text"], r["binary_label"]) for r in rows] == [
        ("1", "you are an idiot", 1), ("3", "have a nice day", 0), ("4", "what an idiot move", 1)]
    assert sent == 3 and not any(r["cached"] for r in rows)
    cached = [json.loads(line) for line in again.stdout.splitlines()]
    assert sent_again == 0 and all(r["cached"] for r in cached)
    assert [r["binary_label"] for r in cached] == [1, 0, 1]


def test_a_csv_text_column_with_ids_and_the_table_and_summary(tmp_path):
    frame = pl.DataFrame({"id": ["a7", "b2", "c9"], "comment": ["idiot!", "lovely", "so kind"]})
    frame.write_csv(tmp_path / "rows.csv")
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        done = _classify(["--file", str(tmp_path / "rows.csv"), "--text-column", "comment"], tmp_path, server)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    row_of = {text_id: next(line for line in lines if f" {text_id} " in line) for text_id in ("a7", "b2", "c9")}
    assert "idiot!" in row_of["a7"] and " 1 " in row_of["a7"] and " 0 " in row_of["b2"]
    assert "3 texts: 1 violating (label 1), 2 safe (label 0); 0 answered from the cache" in done.stdout


def test_a_jsonl_file_reads_its_text_column(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps({"conv_id": f"c{i}", "user_input": t})
                              for i, t in enumerate(["idiot", "fine", "idiot again"])) + "\n", encoding="utf-8")
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        done = _classify(["--file", str(path), "--json"], tmp_path, server)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["id"], r["binary_label"]) for r in rows] == [("c0", 1), ("c1", 0), ("c2", 1)]


def test_bad_files_are_one_line_naming_what_to_do(tmp_path):
    (tmp_path / "rows.csv").write_text("comment\nhello\n", encoding="utf-8")
    (tmp_path / "doc.docx").write_bytes(b"PK")
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    cases = [(["--file", str(tmp_path / "rows.csv")], "--text-column"),
             (["--file", str(tmp_path / "doc.docx")], ".txt"),
             (["--file", str(tmp_path / "empty.txt")], "holds no text"),
             (["hello", "--file", str(tmp_path / "empty.txt")], "one or the other")]
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        for args, words in cases:
            done = _classify(args, tmp_path, server)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 2 and len(lines) == 1 and words in lines[0], (args, done.stderr)
        assert server.requests == []


def test_a_terminal_shows_a_progress_bar_while_texts_are_answered(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"text number {i}\n" for i in range(6)), encoding="utf-8")
    with FakeChatServer(models=["org/m"], responder=_by_text, delay_s=0.3) as server:
        code, out = run_in_terminal(["classify", "--backend", "api", "--model", "org/m", "--base-url",
                                     server.base_url, "--cache-dir", str(tmp_path / "cache"), "--concurrency", "1",
                                     "--file", str(texts)], _env(tmp_path))
    assert code == 0, out
    bar = re.findall(r"classify .*?(\d)/6 +(\d) from the cache", out)  # the bar, redrawn as rows arrive
    assert len({done for done, _ in bar}) >= 2, out
    assert "6 texts: 0 violating (label 1), 6 safe (label 0)" in out


def test_a_latin1_csv_is_refused_in_one_line_not_read_with_replacement_characters(tmp_path):
    (tmp_path / "rows.csv").write_bytes("text\ncafé idiot\n".encode("latin-1"))
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        done = _classify(["--file", str(tmp_path / "rows.csv")], tmp_path, server)
        sent = list(server.requests)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "not UTF-8" in lines[0] and "iconv" in lines[0], done.stderr
    assert not [r for r in sent if "messages" in r]


def test_a_bom_is_not_part_of_the_first_text_and_blank_lines_are_counted(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_bytes("\ufeffidiot\n\n\nfine\n".encode("utf-8"))
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        done = _classify(["--file", str(texts), "--json"], tmp_path, server)
        first_sent = server.requests[-2]["messages"][-1]["content"] if len(server.requests) >= 2 else ""
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["text"] == "idiot" and "\ufeff" not in first_sent
    assert "note: 2 blank lines of texts.txt skipped" in done.stderr, done.stderr


def test_file_dash_and_a_directory_say_what_to_do(tmp_path):
    with FakeChatServer(models=["org/m"], responder=_by_text) as server:
        dash = _classify(["--file", "-"], tmp_path, server)
        folder = _classify(["--file", str(tmp_path)], tmp_path, server)
    assert dash.returncode == 2 and "classify -" in dash.stderr and len(dash.stderr.strip().splitlines()) == 1
    assert folder.returncode == 2 and "is a directory" in folder.stderr
