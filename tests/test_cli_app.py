"""What every command shares: log levels and progress bars, through the real executable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TEXTS = [
    "Aspirin lowers the risk of heart attack in adults.",
    "Volcanic eruptions in Iceland disrupt flights over Europe.",
    "Insulin regulates the level of sugar in the blood.",
    "Protein folding is studied with cryo electron microscopy.",
]


def index_command(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """``vecdoctor [options] index`` on a four-document corpus; stderr is a pipe, not a terminal."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    exe = str(Path(sys.executable).with_name("vecdoctor"))
    args = [exe, *options, "index", str(corpus), "--max-length", "32", "-o", str(tmp_path / "idx")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["documents"] == len(TEXTS)
    return proc


@pytest.mark.parametrize(
    ("options", "shown"), [(("-q",), set()), ((), {"INFO"})], ids=["quiet", "default"]
)
def test_index_logs_no_bm25s_lines_and_no_bars_off_a_terminal(tmp_path, options, shown):
    stderr = index_command(tmp_path, *options).stderr.replace(str(tmp_path), "TMP")
    lines = stderr.splitlines()
    assert not [line for line in lines if "bm25s" in line.lower()], stderr
    assert {line.split()[0] for line in lines} <= shown, stderr
    assert "%|" not in stderr and "\r" not in stderr, stderr  # no progress bars in a pipe


def test_other_libraries_are_silent_and_a_repeated_line_is_said_once(tmp_path):
    """Without -v: no faiss loader lines, no model-loading bar, and a line the encoder says for
    every batch (texts longer than the model reads) once, with a count at the end; -v shows
    what the libraries say."""
    # long sentences: the documents and the baseline's queries (sentences of them) are both
    # longer than 32 tokens, so the encoder says so in two calls
    long = "Many " + " ".join(["words"] * 50) + "."
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"{t} {long} {long}"}) + "\n"
                              for i, t in enumerate(TEXTS * 10)))
    exe = str(Path(sys.executable).with_name("vecdoctor"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def run(*options: str) -> str:
        args = [exe, *options, "index", str(corpus), "--max-length", "32", "--ann", "hnsw",
                "-o", str(tmp_path / f"idx{len(options)}")]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    quiet = run()
    assert "faiss" not in quiet.lower() and "Loading weights" not in quiet, quiet
    said = [line for line in quiet.splitlines() if "longer than 32 tokens" in line]
    assert len(said) == 2 and "more line" in said[1] and said[0].startswith("INFO"), quiet
    loud = run("-v")
    assert "faiss" in loud.lower()
    assert len([line for line in loud.splitlines() if "longer than 32 tokens" in line]) >= 2


def test_help_screens_show_whole_choices_and_no_types_on_flags():
    from typer.testing import CliRunner

    from vecdoctor.cli import app

    runner = CliRunner()
    index = runner.invoke(app, ["index", "--help"], terminal_width=80)
    assert index.exit_code == 0
    assert "<bool>" not in index.output and "mean|cls|max|subword|attention" in index.output
    search = runner.invoke(app, ["search", "--help"], terminal_width=80).output
    assert "--monitor-window" not in search and "--fields" in search and "--full" in search
    assert "--monitor-window" in runner.invoke(app, ["serve", "--help"]).output


def _on_a_terminal(args: list[str], cols: int = 120) -> str:
    """Run ``args`` with stdin, stdout and stderr on a pseudo-terminal of ``cols`` columns."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    assert proc.wait(timeout=300) == 0, out.decode(errors="replace")[-2000:]
    os.close(master)
    return out.decode(errors="replace")


def test_a_terminal_sees_the_encoding_move_and_quiet_sees_nothing(tmp_path):
    from vecdoctor.data import sample_corpus, write_corpus_jsonl

    corpus = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(sample_corpus()[:300], corpus)
    exe = str(Path(sys.executable).with_name("vecdoctor"))
    shown = _on_a_terminal([exe, "index", str(corpus), "--max-length", "32",
                            "-o", str(tmp_path / "a")])
    steps = {part.split("%")[0].split()[-1] for part in shown.split("\r") if "encoding:" in part
             and "%" in part}
    assert len(steps) >= 3, shown[-1500:]  # the bar moves, not one jump at the end
    assert "INFO vecdoctor.index.store: indexed 300 documents" in shown
    quiet = _on_a_terminal([exe, "-q", "index", str(corpus), "--max-length", "32",
                            "-o", str(tmp_path / "b")])
    assert "encoding:" not in quiet and "INFO" not in quiet
