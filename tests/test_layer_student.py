"""`vecdoctor distill --student layers:K`: a layer-pruned student of the real MiniLM, trained on
the built-in sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.data import sample_corpus, write_corpus_jsonl
from vecdoctor.errors import InputError
from vecdoctor.finetune.layers import kept_layers, parse_student


@pytest.fixture(scope="module")
def docs():
    return sample_corpus()[:60]


@pytest.fixture(scope="module")
def student(docs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("layers")
    corpus = folder / "corpus.jsonl"
    write_corpus_jsonl(docs, corpus)
    out = folder / "student"
    result = CliRunner().invoke(app, ["distill", "minilm", str(corpus), "-o", str(out),
                                      "--student", "layers:2", "--epochs", "2",
                                      "--max-texts", "240"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.mark.slow
def test_training_brings_the_pruned_student_closer_to_the_teacher(student):
    folder, report = student
    assert report["layers_kept"] == [0, 5] and report["teacher_layers"] == 6
    assert report["texts"] == 240 and report["held_out"] == 12
    # held-out texts: trained is closer to the teacher than pruned-and-untrained
    assert report["cosine_to_teacher_after"] > report["cosine_to_teacher_before"] + 0.05
    assert 1 <= report["best_epoch"] <= report["epochs_run"] <= 2
    meta = json.loads((folder / "vecdoctor_student.json").read_text())
    assert meta["class"] == "LayerStudent" and meta["layers_kept"] == [0, 5]
    assert meta["fitted_on"]["cosine_to_teacher"] == round(report["cosine_to_teacher_after"], 4)


@pytest.mark.slow
def test_the_student_is_a_model_like_any_other(student, docs, minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    from vecdoctor.encode.encoder import Encoder

    folder, _ = student
    enc = Encoder(str(folder))
    assert enc.backend.num_layers == 2 and enc.max_length == minilm.max_length
    assert str(enc.pooling) == "mean" and enc.dimension == 384
    texts = [d.content for d in docs[:24]]
    vecs = enc.encode_documents(texts)
    # the same vectors as sentence-transformers reading the folder
    st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    np.testing.assert_allclose(vecs, st.encode(texts, normalize_embeddings=True), atol=1e-4)
    # nearer its teacher than the same two layers untrained, and than chance (1 in 24)
    from vecdoctor.finetune.layers import prune_layers
    from vecdoctor.models import resolve

    teacher = minilm.encode_documents(texts)
    untrained = SentenceTransformer(str(resolve("minilm").path), device="cpu", local_files_only=True)
    prune_layers(untrained[0].auto_model, [0, 5])
    before = untrained.encode(texts, normalize_embeddings=True)
    trained_cos = np.sum(vecs * teacher, axis=1).mean()
    assert trained_cos > np.sum(before * teacher, axis=1).mean() + 0.05
    assert np.mean(np.argmax(vecs @ teacher.T, axis=1) == np.arange(len(texts))) >= 0.4
    corpus = tmp_path / "c.jsonl"
    write_corpus_jsonl(docs[:20], corpus)
    made = CliRunner().invoke(app, ["index", str(corpus), "-m", str(folder), "-o", str(tmp_path / "i")])
    assert made.exit_code == 0, made.output
    found = CliRunner().invoke(app, ["search", str(tmp_path / "i"), "catch an exception", "-k", "3"])
    assert found.exit_code == 0, found.output


def test_layers_are_spread_with_the_first_and_the_last():
    assert kept_layers(6, 3) == [0, 2, 5]
    assert kept_layers(6, 2) == [0, 5]
    assert kept_layers(6, 1) == [5]
    assert kept_layers(12, 4) == [0, 4, 7, 11]
    assert kept_layers(6, 5) == [0, 1, 2, 4, 5]
    with pytest.raises(InputError, match=r"6 layers.*layers:1 \.\.\. layers:5"):
        kept_layers(6, 6)


@pytest.mark.parametrize("bad, message", [
    ("layers:0", "whole number >= 1"), ("layers:x", "whole number >= 1"),
    ("layers", "whole number >= 1"), ("static:3", "unknown --student"),
    ("pruned", "choose static or layers:K"),
])
def test_a_wrong_student_kind_says_what_exists(bad, message):
    with pytest.raises(InputError, match=message):
        parse_student(bad)


def test_bad_requests_are_refused_before_any_training(docs, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(docs[:10], corpus)
    runner = CliRunner()
    too_many = runner.invoke(app, ["distill", "minilm", str(corpus), "-o", str(tmp_path / "s"),
                                   "--student", "layers:6"])
    assert too_many.exit_code != 0 and "fewer" in too_many.output
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    refused = runner.invoke(app, ["distill", "minilm", str(corpus), "-o", str(taken),
                                  "--student", "layers:2"])
    assert refused.exit_code != 0 and "--force" in refused.output
    assert (taken / "notes.txt").read_text() == "keep me"
    not_torch = runner.invoke(app, ["distill", "minilm-l3-onnx", str(corpus), "-o",
                                    str(tmp_path / "s2"), "--student", "layers:2"])
    assert not_torch.exit_code != 0 and "onnx backend" in not_torch.output
    assert "PyTorch" in not_torch.output
    assert not (tmp_path / "s").exists() and not (tmp_path / "s2").exists()
