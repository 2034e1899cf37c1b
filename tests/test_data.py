"""BEIR and plain-text readers: real SciFact and every malformed-input case."""

from __future__ import annotations

import gzip
import json

import pytest

from vecdoctor.data import load_corpus, load_dataset, read_qrels, sample_corpus
from vecdoctor.errors import InputError


def test_scifact_loads_with_test_qrels(scifact_dir):
    ds = load_dataset(scifact_dir, split="test")
    assert len(ds.corpus) == 5183
    assert len(ds.qrels) == 300 and len(ds.queries) == 300
    assert sum(len(r) for r in ds.qrels.values()) == 339
    assert ds.has_labels


def test_crlf_and_lf_qrels_read_the_same(tmp_path):
    (tmp_path / "a.tsv").write_bytes(b"query-id\tcorpus-id\tscore\r\n1\td1\t1\r\n")
    (tmp_path / "b.tsv").write_bytes(b"query-id\tcorpus-id\tscore\n1\td1\t1\n")
    assert read_qrels(tmp_path / "a.tsv") == read_qrels(tmp_path / "b.tsv") == {"1": {"d1": 1}}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_bad_json_names_the_line(tmp_path):
    f = tmp_path / "corpus.jsonl"
    f.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n')
    with pytest.raises(InputError, match=r"corpus.jsonl:2: bad JSON"):
        load_corpus(f)


def test_missing_fields_name_the_field(tmp_path):
    f = tmp_path / "corpus.jsonl"
    _write_jsonl(f, [{"_id": "1", "title": "no text"}])
    with pytest.raises(InputError, match=r":1: missing field 'text'"):
        load_corpus(f)


def test_id_is_read_where_there_is_no_underscore_id(tmp_path):
    # the same rows the Ray engine's reader accepts (index/rows.py reads through corpus_rows)
    f = tmp_path / "corpus.jsonl"
    _write_jsonl(f, [{"id": 7, "text": "seven"}, {"_id": "8", "id": "x", "text": "eight"}])
    assert [(d.id, d.text) for d in load_corpus(f)] == [("7", "seven"), ("8", "eight")]
    _write_jsonl(f, [{"text": "no id"}])
    with pytest.raises(InputError, match=r":1: missing field '_id'"):
        load_corpus(f)


def test_duplicate_ids_error_or_keep_first(tmp_path):
    f = tmp_path / "corpus.jsonl"
    _write_jsonl(f, [{"_id": "1", "text": "a"}, {"_id": "1", "text": "b"}])
    with pytest.raises(InputError, match="duplicate _id '1'"):
        load_corpus(f)
    docs = load_corpus(f, on_duplicate="first")
    assert [d.text for d in docs] == ["a"]


def test_non_utf8_bytes_name_the_line(tmp_path):
    f = tmp_path / "texts.txt"
    f.write_bytes(b"fine line\nbad \xff\xfe line\n")
    with pytest.raises(InputError, match=r"texts.txt:2: not valid UTF-8"):
        load_corpus(f)


def test_gzip_corpus_and_empty_files(tmp_path):
    f = tmp_path / "corpus.jsonl.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(json.dumps({"_id": "a", "text": "x"}) + "\n")
    assert load_corpus(f)[0].id == "a"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        load_corpus(empty)


def test_folder_without_corpus(tmp_path):
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    with pytest.raises(InputError, match="no corpus"):
        load_corpus(tmp_path)


def test_queries_without_qrels_and_qrels_without_queries(tmp_path):
    _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "text": "x"}])
    _write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "x"}])
    (tmp_path / "qrels").mkdir()
    with pytest.raises(InputError, match="test.tsv: not found"):
        load_dataset(tmp_path, split="test")
    (tmp_path / "queries.jsonl").unlink()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(InputError, match="no queries.jsonl"):
        load_dataset(tmp_path)


def test_unknown_ids_in_qrels_are_dropped_and_empty_split_fails(tmp_path, caplog):
    _write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "text": "x"}])
    _write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "x"}])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\nq7\td1\t1\n"
    )
    ds = load_dataset(tmp_path)
    assert ds.qrels == {"q1": {"d1": 1}}
    assert "1 unknown queries and 1 unknown documents" in caplog.text
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(InputError, match="no usable judgements"):
        load_dataset(tmp_path, split="dev")


def test_text_folder_and_line_files(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\nbody")
    (tmp_path / "docs" / "b.txt").write_text("another")
    assert [d.id for d in load_corpus(tmp_path / "docs")] == ["a.md", "b.txt"]
    lines = tmp_path / "lines.txt"
    lines.write_text("one\n\ntwo\n")
    assert [(d.id, d.text) for d in load_corpus(lines)] == [("1", "one"), ("3", "two")]


def test_sample_corpus_is_real_python_documentation():
    docs = sample_corpus()
    assert len(docs) > 150
    assert len({d.id for d in docs}) == len(docs)
    assert any("for" in d.title for d in docs)
    assert all(d.text.strip() for d in docs)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"_id": ' + "9" * 5000 + ', "text": "x"}\n', r"c.jsonl:1: bad JSON \(Exceeds the limit"),
        ('{"_id": "a", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "c.jsonl:1: bad JSON \\(nested too deeply"),
        ('{"_id": "a", "text": "bad \\ud800 text"}\n', "c.jsonl:1: field 'text' holds a lone surrogate"),
    ],
)
def test_hostile_corpus_lines_are_one_clear_error(tmp_path, content, message):
    (tmp_path / "c.jsonl").write_text(content)
    with pytest.raises(InputError, match=message):
        load_corpus(tmp_path / "c.jsonl")


def test_a_corrupt_gzip_is_a_clear_error(tmp_path):
    import gzip

    data = gzip.compress(b'{"_id": "a", "text": "hello there"}\n' * 200)
    (tmp_path / "c.jsonl.gz").write_bytes(data[:40] + b"not deflate" * 20)
    with pytest.raises(InputError, match="c.jsonl.gz: cannot be read"):
        load_corpus(tmp_path / "c.jsonl.gz")


def test_a_model_folder_without_weights_is_a_clear_error(tmp_path, minilm_path):
    import shutil

    from vecdoctor.encode.encoder import Encoder

    folder = tmp_path / "no-weights"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (minilm_path / name).exists():
            shutil.copy(minilm_path / name, folder / name)
    with pytest.raises(InputError, match="cannot be loaded as a model .its weights."):
        Encoder(str(folder)).encode(["hello"])


def test_a_text_folder_gets_real_titles(tmp_path):
    from vecdoctor.data import load_corpus

    (tmp_path / "ls.txt").write_text("LS(1)      User Commands     LS(1)\n\nNAME\n"
                                     "       ls - list directory contents\n\nSYNOPSIS\n"
                                     "       ls [OPTION]... [FILE]...\n")
    (tmp_path / "guide.md").write_text("Intro line\n\n## Install the tool\n\nRun make.\n")
    (tmp_path / "notes.txt").write_text("x\n1 2\n")
    docs = {d.id: d for d in load_corpus(tmp_path)}
    assert docs["ls.txt"].title == "ls - list directory contents"  # not the page header
    assert "list directory contents" not in docs["ls.txt"].text  # said once, as the title
    assert (docs["guide.md"].title, docs["guide.md"].text) == ("Install the tool",
                                                               "Intro line\n\n\nRun make.")
    assert docs["notes.txt"].title == "notes" and docs["notes.txt"].text == "x\n1 2"
