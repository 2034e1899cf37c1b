"""`vecdoctor distill`: a static student of the real MiniLM, fitted on the built-in sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.data import sample_corpus, write_corpus_jsonl
from vecdoctor.errors import InputError


@pytest.fixture(scope="module")
def docs():
    return sample_corpus()[:80]


@pytest.fixture(scope="module")
def student(docs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("student")
    corpus = folder / "corpus.jsonl"
    write_corpus_jsonl(docs, corpus)
    out = folder / "static"
    result = CliRunner().invoke(app, ["distill", "minilm", str(corpus), "-o", str(out),
                                      "--max-texts", "400"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.mark.slow
def test_fitting_brings_the_student_closer_to_the_teacher(student):
    _, report = student
    assert report["texts"] == 400 and report["vocabulary"] == 30522 and report["dimension"] == 384
    # held-out texts: the fitted table is closer to the teacher than the distilled one
    assert report["cosine_to_teacher_after"] > report["cosine_to_teacher_before"] + 0.2
    assert report["best_epoch"] >= 1


@pytest.mark.slow
def test_the_student_is_a_model_like_any_other(student, docs, minilm, tmp_path):
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    folder, report = student
    enc = Encoder(str(folder))
    assert enc.dimension == 384 and enc.tokenizer is None and str(enc.pooling) == "native"
    texts = [d.content for d in docs[:30]]
    vecs = enc.encode_documents(texts)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # the mean of the token rows, by hand
    table = np.load(folder / "embeddings.npy")
    ids = enc.backend.token_ids(texts[:3])
    by_hand = np.stack([table[i].mean(axis=0) for i in ids])
    by_hand /= np.linalg.norm(by_hand, axis=1, keepdims=True)
    np.testing.assert_allclose(vecs[:3], by_hand, atol=1e-5)
    # nearer the teacher than chance: each text's own teacher vector is its nearest
    teacher = minilm.encode_documents(texts)
    cos = np.sum(vecs * teacher, axis=1)
    assert cos.mean() > 0.6
    assert np.mean(np.argmax(vecs @ teacher.T, axis=1) == np.arange(len(texts))) >= 0.7
    index = Index.build(docs, enc, baseline=False)
    hits = Searcher(index, cache_size=0).search("how do I catch an exception", k=3, mode="hybrid")
    assert len(hits) == 3
    # -m STUDENT on the command line
    corpus = tmp_path / "c.jsonl"
    write_corpus_jsonl(docs[:20], corpus)
    made = CliRunner().invoke(app, ["index", str(corpus), "-m", str(folder), "-o", str(tmp_path / "i")])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["model"] == str(folder.resolve())


@pytest.mark.slow
def test_a_damaged_student_is_a_clear_error(student, tmp_path):
    import shutil

    from vecdoctor.encode.encoder import Encoder

    folder, _ = student
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    np.save(bad / "embeddings.npy", np.zeros((10, 384), dtype=np.float32))
    with pytest.raises(InputError, match="expected float32 \\(30522, 384\\)"):
        Encoder(str(bad))
    meta = json.loads((bad / "static_model.json").read_text())
    (bad / "static_model.json").write_text(json.dumps({**meta, "dimension": -3}))
    with pytest.raises(InputError, match="'dimension'"):
        Encoder(str(bad))
    result = CliRunner().invoke(app, ["distill", "minilm", str(bad), "-o", str(tmp_path / "x"),
                                      "--student", "pruned"])
    assert result.exit_code != 0 and "unknown --student 'pruned'" in result.output


@pytest.mark.slow
def test_compare_models_measures_the_student_beside_its_teacher(student, docs):
    from vecdoctor.evaluate.compare import compare_models
    from vecdoctor.evaluate.metrics import self_supervised

    folder, _ = student
    ds = self_supervised(docs, n_queries=40, seed=0)
    result = compare_models(ds, ["minilm", str(folder)], prefer="speed", backends=False)
    rows = {r.model: r for r in result.rows}
    teacher, fast = rows["minilm"], rows[str(folder.resolve())]
    assert fast.error is None and fast.backend == "static" and fast.dimension == 384
    assert fast.docs_per_second > 5 * teacher.docs_per_second
    assert 0 < fast.ndcg_at_10 <= 1 and result.recommended in rows
