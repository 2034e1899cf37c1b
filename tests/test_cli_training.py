"""`vecdoctor finetune`, `train-reranker` and `terms` driven through Typer's runner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vecdoctor.cli import app

runner = CliRunner()


@pytest.fixture()
def tiny_beir(tmp_path, beir_dir):
    """A BEIR folder with 6 SciFact train queries, their documents and 30 others."""
    from vecdoctor.data import load_dataset, write_corpus_jsonl, write_qrels

    train = load_dataset(beir_dir, "train")
    qids = sorted(train.qrels)[:6]
    keep = {d for q in qids for d in train.qrels[q]}
    docs = [d for d in train.corpus if d.id in keep] + [
        d for d in train.corpus if d.id not in keep
    ][:30]
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    write_corpus_jsonl(docs, folder / "corpus.jsonl")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": train.queries[q]}) + "\n" for q in qids)
    )
    write_qrels({q: train.qrels[q] for q in qids}, folder / "qrels" / "train.tsv")
    return folder


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no pairs"),
        ('{"anchor": "a"}\n', "pairs.jsonl:1: missing field 'positive'"),
        ('{"anchor": "a", "positive": ""}\n', "pairs.jsonl:1: field 'positive' is empty"),
    ],
)
def test_finetune_rejects_bad_pairs_files_in_one_line(tmp_path, content, message):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(content)
    out = tmp_path / "model"
    result = runner.invoke(app, ["finetune", "--pairs", str(pairs), "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_finetune_needs_data_or_pairs(tmp_path):
    result = runner.invoke(app, ["finetune", "-o", str(tmp_path / "m")])
    assert result.exit_code == 1 and "give a BEIR folder or corpus" in result.stderr


def test_finetune_rejects_a_split_without_qrels(tmp_path, tiny_beir):
    result = runner.invoke(
        app, ["finetune", str(tiny_beir), "--split", "dev", "-o", str(tmp_path / "m")]
    )
    assert result.exit_code == 1 and "available splits: train" in result.stderr


def test_train_reranker_rejects_bad_loss(tmp_path, tiny_beir):
    result = runner.invoke(
        app, ["train-reranker", str(tiny_beir), "-o", str(tmp_path / "r"), "--loss", "hinge"]
    )
    assert result.exit_code == 1 and "unknown rerankloss 'hinge'" in result.stderr


def test_terms_reports_model_and_baseline(tmp_path):
    pairs = tmp_path / "terms.tsv"
    pairs.write_text("COVID-19\tcovid 19\nprotein kinase\tvolcano eruption\tfar\n")
    result = runner.invoke(app, ["terms", "minilm", "--pairs", str(pairs), "--baseline", "minilm"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == report["baseline"]
    assert report["model"]["summary"]["total"] == 2


@pytest.mark.slow
def test_finetune_command_trains_and_writes_json(tmp_path, tiny_beir):
    out = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "finetune",
            str(tiny_beir),
            "-o",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--max-length",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    from vecdoctor.data import load_dataset

    judged = sum(len(r) for r in load_dataset(tiny_beir, "train").qrels.values())
    assert summary["steps"] == 2 and summary["pairs"] == judged and summary["evaluation"] is None
    assert (out / "model.safetensors").is_file()
    again = runner.invoke(app, ["finetune", str(tiny_beir), "-o", str(out), "--max-steps", "1"])
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_reranker_recipes_fill_what_the_user_did_not_set():
    from vecdoctor.finetune.recipes import CPU_RECIPE, RerankerConfig, reranker_recipe

    cpu = reranker_recipe("auto", "cpu")
    assert (cpu.epochs, cpu.group_size, cpu.max_length) == (
        CPU_RECIPE["epochs"], CPU_RECIPE["group_size"], CPU_RECIPE["max_length"])
    assert reranker_recipe("auto", "cuda") == RerankerConfig(device="cuda")
    assert reranker_recipe("full", "cpu") == RerankerConfig()
    mine = reranker_recipe("cpu", "cpu", max_length=96, layers=3, epochs=None)
    assert mine.max_length == 96 and mine.layers == 3 and mine.epochs == CPU_RECIPE["epochs"]
    with pytest.raises(Exception, match="valid values: auto, full, cpu"):
        reranker_recipe("fast", "cpu")


@pytest.mark.slow
def test_train_reranker_without_a_gpu_says_it_trains_the_cpu_recipe(tmp_path, tiny_beir):
    out = tmp_path / "rr"
    result = runner.invoke(app, ["train-reranker", str(tiny_beir), "-o", str(out), "--max-steps",
                                 "1", "--layers", "2", "--eval-split", "none", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "no GPU in use: the cpu recipe (128 tokens, lists of 8, 2 epochs)" in result.stderr
    card = json.loads((out / "vecdoctor_reranker.json").read_text())
    assert card["config"]["max_length"] == 128 and card["config"]["layers"] == 2
    # the saved cross-encoder has the two layers it was cut to, and reranks
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    from vecdoctor.data import load_dataset
    from vecdoctor.rerank.rerankers import CrossEncoderReranker

    data = load_dataset(tiny_beir, "train")
    scores = CrossEncoderReranker(out).score(next(iter(data.queries.values())), data.corpus[:4])
    assert scores.shape == (4,)
