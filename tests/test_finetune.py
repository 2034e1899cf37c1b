"""Fine-tuning: pairs, hard-negative mining, bi-encoder and reranker training on real SciFact."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vecdoctor.data import Dataset, load_dataset
from vecdoctor.errors import InputError
from vecdoctor.finetune._retrieval import metrics, rerank_run
from vecdoctor.finetune.biencoder import CARD_JSON, FinetuneConfig, finetune
from vecdoctor.finetune.negatives import MiningConfig, mine_negatives
from vecdoctor.finetune.pairs import Pair, pairs_from_qrels, read_pairs, self_supervised_pairs
from vecdoctor.finetune.reranker import RerankerConfig, train_reranker, training_lists
from vecdoctor.finetune.terms import TermPair, read_term_pairs, term_consistency

TINY = {"batch_size": 4, "max_length": 32, "save_steps": 10_000}


def _small(data: Dataset, queries: int, extra: int = 40) -> Dataset:
    qids = sorted(data.qrels)[:queries]
    keep = {d for q in qids for d in data.qrels[q]}
    corpus = [d for d in data.corpus if d.id in keep] + [
        d for d in data.corpus if d.id not in keep
    ][:extra]
    return Dataset(
        corpus,
        {q: data.queries[q] for q in qids},
        {q: data.qrels[q] for q in qids},
        data.name,
        data.split,
    )


@pytest.fixture(scope="module")
def train(beir_dir):
    return load_dataset(beir_dir, "train")


@pytest.fixture(scope="module")
def small_train(train):
    return _small(train, 8)


@pytest.fixture(scope="module")
def small_test(beir_dir):
    return _small(load_dataset(beir_dir, "test"), 4, extra=20)


# -- pairs ------------------------------------------------------------------------------------
def test_scifact_train_has_919_judgements(scifact_dir):
    assert len(pairs_from_qrels(load_dataset(scifact_dir, "train"))) == 919


def test_pairs_from_qrels_cover_every_judgement(train):
    pairs = pairs_from_qrels(train)
    assert len(pairs) == sum(len(r) for r in train.qrels.values()) > 0
    docs = {d.id: d.content for d in train.corpus}
    assert all(
        docs[p.positive_id] == p.positive and train.qrels[p.anchor_id][p.positive_id] > 0
        for p in pairs
    )


def test_read_pairs_accepts_string_and_list_negatives(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text(
        json.dumps({"anchor": "a", "positive": "p", "negative": "n"})
        + "\n\n"
        + json.dumps({"anchor": "b", "positive": "q", "negative": ["m", "o"]})
        + "\n"
        + json.dumps({"anchor": "c", "positive": "r"})
        + "\n"
    )
    assert read_pairs(f) == [Pair("a", "p", ("n",)), Pair("b", "q", ("m", "o")), Pair("c", "r")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"anchor": "a"}, "pairs.jsonl:2: missing field 'positive'"),
        ({"positive": "p"}, "pairs.jsonl:2: missing field 'anchor'"),
        ({"anchor": " ", "positive": "p"}, "pairs.jsonl:2: field 'anchor' is empty"),
        ({"anchor": "a", "positive": 3}, "field 'positive' must be a string, got int"),
        (
            {"anchor": "a", "positive": "p", "negative": [1]},
            "'negative' must be a string or a list",
        ),
    ],
)
def test_read_pairs_rejects_bad_lines_naming_line_and_field(tmp_path, line, message):
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"anchor": "x", "positive": "y"}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        read_pairs(f)


def test_read_pairs_rejects_empty_and_malformed_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="holds no pairs"):
        read_pairs(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"anchor": "a", "positive": \n')
    with pytest.raises(InputError, match="broken.jsonl:1: bad JSON"):
        read_pairs(broken)


def test_self_supervised_pairs_cut_the_sentence_out_of_its_document(train):
    pairs = self_supervised_pairs(train.corpus[:50], seed=3)
    assert pairs and pairs == self_supervised_pairs(train.corpus[:50], seed=3)
    for p in pairs:
        assert p.anchor not in p.positive and len(p.anchor.split()) >= 6


# -- mining -----------------------------------------------------------------------------------
def test_mined_negatives_never_include_a_known_positive(train):
    multi = [q for q, rels in train.qrels.items() if len(rels) >= 2][:6]
    single = [q for q, rels in train.qrels.items() if len(rels) == 1][:6]
    subset = Dataset(
        train.corpus,
        {q: train.queries[q] for q in multi + single},
        {q: train.qrels[q] for q in multi + single},
    )
    pairs = pairs_from_qrels(subset)
    mined = mine_negatives(pairs, train.corpus, MiningConfig("bm25", count=3, depth=20))
    docs = {d.id: d.content for d in train.corpus}
    assert len(mined) == len(pairs)
    for p in mined:
        positives = {docs[d] for d in train.qrels[p.anchor_id]}
        assert len(p.negatives) == 3 and len(set(p.negatives)) == 3
        assert not positives & set(p.negatives)
    # the filter had work to do: BM25 ranks judged positives near the top for these queries
    from vecdoctor.index.bm25 import BM25Index

    index = BM25Index().build([d.content for d in train.corpus])
    ids = [d.id for d in train.corpus]
    top = [{ids[r] for r in index.search(train.queries[q], 3)[0]} for q in multi + single]
    assert any(t & set(train.qrels[q]) for t, q in zip(top, multi + single, strict=True))


def test_mining_skips_near_duplicates_and_keeps_given_negatives():
    from vecdoctor.data import Document

    positive = "Aspirin lowers the risk of heart attack in adults over fifty years of age"
    corpus = [
        Document("p", positive),
        Document("dup", positive + " ."),
        Document("n1", "Aspirin and heart surgery outcomes in children"),
        Document("n2", "Volcanic eruptions in Iceland"),
    ]
    pairs = [Pair("does aspirin lower heart attack risk", positive, ("given",), "q", "p")]
    out = mine_negatives(pairs, corpus, MiningConfig("bm25", count=2, depth=4))
    assert out[0].negatives[0] == "given"
    assert out[0].negatives[1] == corpus[2].content  # the near-copy "dup" was skipped


def test_mining_config_errors_name_the_value():
    with pytest.raises(
        InputError, match="unknown negativesource 'bm26'; valid values: bm25, model"
    ):
        MiningConfig("bm26")
    with pytest.raises(InputError, match="depth 3 is smaller than skip_top \\+ count"):
        MiningConfig(count=2, skip_top=2, depth=3)
    with pytest.raises(InputError, match="batch_size must be >= 2"):
        FinetuneConfig(batch_size=1)
    with pytest.raises(InputError, match="needs an encoder"):
        mine_negatives([Pair("a", "b"), Pair("c", "d")], None, MiningConfig("model"))


# -- evaluation helpers -----------------------------------------------------------------------
def test_ndcg_matches_hand_computation():
    qrels = {"q": {"d2": 1}}
    run = {"q": [("d1", 3.0), ("d2", 2.0), ("d3", 1.0)]}
    assert metrics(run, qrels, ["ndcg@10"])["ndcg@10"] == round(1 / math.log2(3), 4)


def test_rerank_run_sorts_the_head_and_keeps_the_tail():
    from vecdoctor.data import Document

    class ByLength:
        def score(self, query, docs):
            return np.array([len(d.text) for d in docs], dtype=np.float32)

    docs = {i: Document(i, "x" * n) for i, n in [("a", 1), ("b", 3), ("c", 2), ("d", 9)]}
    run = {"q": [("a", 4.0), ("b", 3.0), ("c", 2.0), ("d", 1.0)]}
    out = rerank_run(ByLength(), run, {"q": "?"}, docs, depth=3)
    assert [d for d, _ in out["q"]] == ["b", "c", "a", "d"]
    assert out["q"][3][1] < out["q"][2][1]


def test_training_lists_put_positives_first_and_skip_judged_candidates(small_train):
    qid = next(iter(small_train.qrels))
    judged = list(small_train.qrels[qid])
    others = [d.id for d in small_train.corpus if d.id not in judged]
    candidates = {qid: [(judged[0], 0.05), (others[0], 0.04), (others[1], 0.03)]}
    config = RerankerConfig(group_size=4, depth=10, distill=0.5)
    lists = dict(
        (q, (docs, labels)) for q, docs, labels in training_lists(small_train, candidates, config)
    )
    docs, labels = lists[small_train.queries[qid]]
    content = {d.id: d.content for d in small_train.corpus}
    assert len(docs) == 4 and labels[: len(judged)] == [1.0] * len(judged)
    assert docs[len(judged)] == content[others[0]] and labels[len(judged)] == 0.5
    assert not {content[j] for j in judged} & set(docs[len(judged) :])


# -- terms ------------------------------------------------------------------------------------
def test_term_pairs_files_and_consistency(tmp_path, minilm):
    tsv = tmp_path / "terms.tsv"
    tsv.write_text(
        "# spelling variants\nCOVID-19\tcovid 19\tclose\nprotein kinase\tvolcano eruption\tfar\n"
    )
    pairs = read_term_pairs(tsv)
    assert pairs == [
        TermPair("COVID-19", "covid 19", "close"),
        TermPair("protein kinase", "volcano eruption", "far"),
    ]
    report = term_consistency(minilm, pairs)
    rows, summary = report["pairs"], report["summary"]
    assert rows[0]["cosine"] > rows[1]["cosine"]
    assert summary["passed"] == sum(r["ok"] for r in rows)
    assert summary["gap"] == round(rows[0]["cosine"] - rows[1]["cosine"], 4)
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\tnear\n")
    with pytest.raises(
        InputError, match="bad.tsv:1: unknown expect 'near'; valid values: close, far"
    ):
        read_term_pairs(bad)


# -- checkpoints ------------------------------------------------------------------------------
def _checkpoint(folder, step, state='{"global_step": STEP}'):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state.replace("STEP", str(step)))
    return path


@pytest.mark.parametrize(
    "state", [None, '{"global_step": 3, "log_hi', '{"global_step": 2}'],
    ids=["no-state", "truncated-state", "state-of-another-step"],
)
def test_resume_skips_and_removes_a_checkpoint_cut_short(tmp_path, caplog, state):
    from vecdoctor.finetune import _training

    out = tmp_path / "ft"
    signature = {"kind": "bi-encoder", "pairs": 8}
    assert _training.prepare_checkpoints(out, signature, resume=True) is None
    folder = _training.checkpoint_dir(out)
    whole = _checkpoint(folder, 2)
    cut = _checkpoint(folder, 3, state)
    with caplog.at_level("WARNING", logger="vecdoctor.finetune._training"):
        assert _training.prepare_checkpoints(out, signature, resume=True) == str(whole)
    assert not cut.exists() and whole.is_dir()
    assert f"removing {cut}: it was cut short while being written" in caplog.text


def test_resume_starts_over_when_no_checkpoint_is_complete(tmp_path, caplog):
    from vecdoctor.finetune import _training

    out = tmp_path / "ft"
    signature = {"kind": "reranker", "queries": 8}
    _training.prepare_checkpoints(out, signature, resume=True)
    folder = _training.checkpoint_dir(out)
    _checkpoint(folder, 1, state=None)
    with caplog.at_level("WARNING", logger="vecdoctor.finetune._training"):
        assert _training.prepare_checkpoints(out, signature, resume=True) is None
    assert "holds no complete checkpoint; starting over" in caplog.text
    assert "different run" not in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == [_training.RUN_FILE]


# -- results and model cards ------------------------------------------------------------------
def test_result_cards_and_summaries_keep_their_fields_in_order(tmp_path):
    from vecdoctor.finetune.biencoder import FinetuneResult
    from vecdoctor.finetune.reranker import CARD_JSON as RERANK_CARD
    from vecdoctor.finetune.reranker import RerankerResult

    common = {
        "steps": 4,
        "train_seconds": 1.5,
        "resumed_from_step": 2,
        "loss_history": [(4, 0.75)],
        "evaluation": {"data": "scifact/test", "metrics": ["ndcg@10"], "results": {}},
    }
    finetuned = FinetuneResult(output=tmp_path / "ft", pairs=8, **common)
    reranker = RerankerResult(output=tmp_path / "rr", queries=5, **common)
    assert finetuned.to_dict() == {"output": str(tmp_path / "ft"), "pairs": 8} | common
    assert list(reranker.to_dict()) == ["output", "queries", *common]

    config = FinetuneConfig(max_steps=4)
    finetuned.write_card(
        tmp_path, CARD_JSON, "Fine-tuned bi-encoder", config, {"base_model": ("base model", "m")}
    )
    card = json.loads((tmp_path / CARD_JSON).read_text())
    assert list(card) == [
        "class", "format_version", "vecdoctor_version",
        "base_model", "config", "pairs", "steps", "train_seconds", "loss_history", "evaluation"
    ]
    assert (card["class"], card["format_version"]) == ("FinetuneResult", 1)
    assert card["config"] == config.to_dict() and card["loss_history"] == [[4, 0.75]]
    assert (card["base_model"], card["pairs"], card["steps"]) == ("m", 8, 4)
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Fine-tuned bi-encoder\n")
    assert "| base model | m |\n| pairs | 8 |\n| steps | 4 |\n| train seconds | 1.5 |\n" in readme

    rconfig = RerankerConfig(max_steps=4)
    origin = {"init_model": ("initialised from", "m"), "first_stage": ("first stage", "f")}
    reranker.write_card(tmp_path, RERANK_CARD, "vecdoctor cross-encoder reranker", rconfig, origin)
    card = json.loads((tmp_path / RERANK_CARD).read_text())
    assert list(card) == [
        "class", "format_version", "vecdoctor_version",
        "init_model", "first_stage", "config", "queries", "steps", "train_seconds",
        "loss_history", "evaluation",
    ]
    assert card["config"] == rconfig.to_dict() and card["queries"] == 5
    assert "| initialised from | m |\n| first stage | f |\n| queries | 5 |" in (
        tmp_path / "README.md"
    ).read_text()


# -- training (real MiniLM, a few steps) --------------------------------------------------------
def _mnrl_loss(model_path, pairs):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    model.max_seq_length = 32
    loss = MultipleNegativesRankingLoss(model)
    columns = [
        [p.anchor for p in pairs],
        [p.positive for p in pairs],
        [p.negatives[0] for p in pairs],
    ]
    with torch.no_grad():
        features = [model.tokenize(c) for c in columns]
        return float(loss(features, None))


@pytest.mark.slow
def test_finetune_changes_the_model_lowers_the_loss_and_reloads(
    tmp_path, small_train, small_test, minilm, minilm_path
):
    from vecdoctor.encode.encoder import Encoder

    pairs = mine_negatives(
        pairs_from_qrels(small_train)[:8],
        small_train.corpus,
        MiningConfig("bm25", count=1, depth=10),
    )
    out = tmp_path / "ft"
    config = FinetuneConfig(
        **TINY | {"batch_size": 8, "max_steps": 4, "learning_rate": 1e-4, "negatives": 1}
    )
    result = finetune(pairs, out, config=config, corpus=small_train.corpus, evaluation=small_test)
    assert result.steps == 4 and result.pairs == 8
    assert _mnrl_loss(out, pairs) < _mnrl_loss(minilm_path, pairs)
    tuned = Encoder(str(out))
    assert tuned.max_length == minilm.max_length == 256
    text = [small_test.corpus[0].content]
    a, b = tuned.encode(text), minilm.encode(text)
    assert a.shape == (1, 384) and abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert not np.allclose(a, b, atol=1e-4)
    card = json.loads((out / CARD_JSON).read_text())
    assert set(card["evaluation"]["results"]) == {
        "base dense",
        "base hybrid",
        "fine-tuned dense",
        "fine-tuned hybrid",
    }
    assert "fine-tuned dense" in (out / "README.md").read_text()
    assert not (tmp_path / "ft.checkpoints").exists()


@pytest.mark.slow
def test_finetune_resumes_from_the_last_checkpoint(tmp_path, small_train):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    pairs = pairs_from_qrels(small_train)[:8]
    out = tmp_path / "ft"
    config = FinetuneConfig(**TINY | {"save_steps": 1, "max_steps": 3, "negatives": 0})
    with pytest.raises(KeyboardInterrupt):
        finetune(pairs, out, config=config, callbacks=[Crash()])
    assert not out.exists()
    assert (tmp_path / "ft.checkpoints" / "checkpoint-2").is_dir()
    result = finetune(pairs, out, config=config)
    assert result.resumed_from_step == 2 and result.steps == 3
    assert [step for step, _ in result.loss_history] == [3]
    assert (out / "model.safetensors").is_file() and not (tmp_path / "ft.checkpoints").exists()


@pytest.mark.slow
def test_train_reranker_output_loads_as_vecdoctor_reranker(tmp_path, small_train, small_test):
    from vecdoctor.finetune.reranker import CARD_JSON as RERANK_CARD
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    out = tmp_path / "rr"
    config = RerankerConfig(batch_size=4, group_size=4, max_length=64, depth=10, max_steps=2)
    result = train_reranker(small_train, out, config=config, evaluation=small_test)
    assert result.steps == 2 and result.queries == len(small_train.qrels)
    reranker = CrossEncoderReranker(out)
    scores = reranker.score(
        small_test.queries[next(iter(small_test.queries))], small_test.corpus[:5]
    )
    assert scores.shape == (5,) and np.isfinite(scores).all() and np.ptp(scores) > 0
    card = json.loads((out / RERANK_CARD).read_text())
    assert isinstance(card["evaluation"]["helps"], bool)
    results = {k: v["ndcg@10"] for k, v in card["evaluation"]["results"].items()}
    assert set(results) == {"hybrid", "hybrid + rerank@30", "hybrid + rerank@30 + rrf"}
    alone, fused = results["hybrid + rerank@30"], results["hybrid + rerank@30 + rrf"]
    assert card["evaluation"]["helps"] == (max(alone, fused) > results["hybrid"])
    assert card["evaluation"]["best_fusion"] == ("rrf" if fused >= alone else "none")
