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
    folder, report = student
    assert report["texts"] == 400 and report["dimension"] == 384
    # the sample's own words: a token each, a row each, in the student's tokenizer
    assert report["words_added"] > 0 and report["vocabulary"] == 30522 + report["words_added"]
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == report["vocabulary"]
    assert max(tokenizer.get_vocab().values()) == report["vocabulary"] - 1
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
    rows = json.loads((folder / "static_model.json").read_text())["vocabulary"]
    with pytest.raises(InputError, match=f"expected float32 \\({rows}, 384\\)"):
        Encoder(str(bad))
    meta = json.loads((bad / "static_model.json").read_text())
    (bad / "static_model.json").write_text(json.dumps({**meta, "dimension": -3}))
    with pytest.raises(InputError, match="'dimension'"):
        Encoder(str(bad))
    result = CliRunner().invoke(app, ["distill", "minilm", str(bad), "-o", str(tmp_path / "x"),
                                      "--student", "pruned"])
    assert result.exit_code != 0 and "unknown --student 'pruned'" in result.output
    result = CliRunner().invoke(app, ["distill", "minilm", str(bad), "-o", str(tmp_path / "x"),
                                      "--student", "layers:2", "--vocabulary", "teacher"])
    assert result.exit_code != 0 and "apply to --student static" in result.output


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


def test_corpus_words_get_a_token_each_and_start_as_their_pieces(minilm, docs):
    from tokenizers import Tokenizer

    from vecdoctor.finetune.static import _add_words, corpus_words, with_words

    texts = [d.content for d in docs]
    words = corpus_words(minilm.tokenizer, texts, min_count=3)
    assert words, "the sample has words the teacher splits"
    vocab = minilm.tokenizer.get_vocab()
    for word, pieces in words:
        assert word not in vocab and len(pieces) > 1
    # most frequent first, each seen at least min_count times
    rare = corpus_words(minilm.tokenizer, texts, min_count=1)
    assert len(rare) > len(words) and [w for w, _ in rare[: len(words)]] == [w for w, _ in words]
    extended = Tokenizer.from_str(with_words(minilm.resolved.tokenizer_path, [w for w, _ in words]))
    extended.no_padding()
    word = words[0][0]
    assert extended.encode(word, add_special_tokens=False).ids == [len(vocab)]
    # before fitting, a text reads the same with the word as with its pieces
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(vocab), 8)).astype(np.float32)
    tokenizer, _, grown, added = _add_words(minilm, texts, table, 3, lambda _m: None)
    assert added == len(words) and grown.shape == (len(vocab) + added, 8)
    text = f"the {word} and the {words[-1][0]} here"
    old = table[minilm.tokenizer.encode(text, add_special_tokens=False).ids].sum(axis=0)
    new = grown[tokenizer.encode(text, add_special_tokens=False).ids].sum(axis=0)
    np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-5)
    assert len(tokenizer.encode(text, add_special_tokens=False).ids) < len(
        minilm.tokenizer.encode(text, add_special_tokens=False).ids)


def test_distill_refuses_unknown_vocabulary_and_min_count(docs, tmp_path):
    from vecdoctor.finetune.static import distill_static

    texts = [d.content for d in docs]
    with pytest.raises(InputError, match="vocabulary must be one of corpus, teacher"):
        distill_static("minilm", texts, tmp_path / "s", vocabulary="words")
    with pytest.raises(InputError, match="min_count must be a whole number >= 1"):
        distill_static("minilm", texts, tmp_path / "s", min_count=0)
    with pytest.raises(InputError, match="relation must be a number in"):
        distill_static("minilm", texts, tmp_path / "s", relation=float("nan"))
    assert not (tmp_path / "s").exists()


def test_the_relational_term_counts_only_when_the_batch_cosines_differ():
    import torch

    from vecdoctor.finetune.static import _loss

    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 8, generator=g)
    pred = target + 0.5 * torch.randn(6, 8, generator=g)
    pointwise = float((1 - torch.nn.functional.cosine_similarity(pred, target)).mean())
    assert float(_loss(pred, target, 0.0)) == pytest.approx(pointwise, abs=1e-6)
    assert float(_loss(pred, target, 10.0)) > pointwise + 1e-3
    # a scaled copy has the teacher's cosines: no loss of either kind
    assert float(_loss(3 * target, target, 10.0)) == pytest.approx(0.0, abs=1e-5)
