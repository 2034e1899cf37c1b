"""Commands: finetune, train-reranker, terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vecdoctor.cli._app import command, emit, progress_enabled
from vecdoctor.finetune.recipes import CPU_RECIPE as _CPU
from vecdoctor.finetune.recipes import FinetuneConfig as _FT
from vecdoctor.finetune.recipes import RerankerConfig as _RR


def _labelled(data: str, split: str) -> Any:
    from vecdoctor.data import load_dataset

    return load_dataset(Path(data), split=split)


def _evaluation(data: str | None, split: str) -> Any:
    """The labelled split to evaluate on, or None when absent or turned off."""
    if data is None or split.lower() == "none":
        return None
    qrels = Path(data) / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        import logging

        logging.getLogger(__name__).info("no %s; skipping the evaluation", qrels)
        return None
    return _labelled(data, split)


def _training_pairs(data: str | None, pairs: Path | None, split: str, self_supervised: bool,
                    seed: int) -> tuple[Any, list[Any]]:
    """The corpus (None for a pairs file alone) and the pairs to train on."""
    from vecdoctor.data import load_corpus
    from vecdoctor.errors import InputError
    from vecdoctor.finetune.pairs import pairs_from_qrels, read_pairs, self_supervised_pairs

    if pairs is not None:
        return (load_corpus(Path(data)) if data is not None else None), read_pairs(pairs)
    if data is None:
        raise InputError("give a BEIR folder or corpus (DATA), or a pairs file with --pairs")
    if self_supervised:
        corpus = load_corpus(Path(data))
        return corpus, self_supervised_pairs(corpus, seed=seed)
    train = _labelled(data, split)
    return train.corpus, pairs_from_qrels(train)


@command("finetune")
def finetune(
    data: str = typer.Argument(
        None, help="BEIR folder (train qrels + corpus) or a corpus for --self-supervised"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the fine-tuned model"),
    model: str = typer.Option(
        "minilm", "-m", "--model", help="Registry name or local model folder"
    ),
    split: str = typer.Option("train", "--split", help="qrels split that gives the training pairs"),
    pairs: Path = typer.Option(
        None, "--pairs", help="JSONL pairs file: anchor, positive, optional negative"
    ),
    self_supervised: bool = typer.Option(
        False,
        "--self-supervised",
        help="Pairs from the corpus alone (sentence -> rest of its document)",
    ),
    eval_split: str = typer.Option(
        "test", "--eval-split", help="Split to evaluate before/after on ('none' to skip)"
    ),
    epochs: float = typer.Option(_FT.epochs, "--epochs"),
    batch_size: int = typer.Option(_FT.batch_size, "--batch-size"),
    learning_rate: float = typer.Option(_FT.learning_rate, "--lr"),
    max_length: int = typer.Option(
        _FT.max_length, "--max-length", help="Tokens per text while training"
    ),
    negatives: int = typer.Option(
        _FT.negatives, "--negatives", help="Hard negatives per pair (0: in-batch only)"
    ),
    negative_source: str = typer.Option(
        str(_FT.negative_source), "--negative-source", help="bm25 | model | both | none"
    ),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many steps"),
    seed: int = typer.Option(_FT.seed, "--seed"),
    device: str = typer.Option(_FT.device, "--device"),
    restart: bool = typer.Option(
        False, "--restart", help="Ignore checkpoints of an interrupted run"
    ),
    overwrite: bool = typer.Option(
        False, "--force", "--overwrite", help="Replace an existing output folder (a trained model "
        "is never replaced without it)"
    ),
) -> None:
    """Fine-tune a bi-encoder with MultipleNegativesRankingLoss and mined hard negatives."""
    from vecdoctor.finetune.biencoder import finetune as run

    config = _FT(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        negatives=negatives,
        negative_source=negative_source,
        max_steps=max_steps,
        seed=seed,
        device=device,
    )
    corpus, train_pairs = _training_pairs(data, pairs, split, self_supervised, seed)
    evaluation = _evaluation(data, eval_split) if not self_supervised or data else None
    result = run(
        train_pairs,
        output,
        model=model,
        config=config,
        corpus=corpus,
        evaluation=evaluation,
        resume=not restart,
        overwrite=overwrite,
        show_progress=progress_enabled(),
    )
    emit(result.to_dict())


@command("train-reranker")
def train_reranker(
    data: str = typer.Argument(..., help="BEIR folder with queries, corpus and qrels/<split>.tsv"),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the cross-encoder"),
    model: str = typer.Option(
        "minilm",
        "-m",
        "--model",
        help="Initialise from this model (a fine-tuned bi-encoder works best)",
    ),
    first_stage: str = typer.Option(
        None,
        "--first-stage",
        help="Bi-encoder whose hybrid candidates give the negatives (default: --model)",
    ),
    split: str = typer.Option("train", "--split"),
    eval_split: str = typer.Option(
        "test", "--eval-split", help="Split to compare with the first stage on ('none' to skip)"
    ),
    recipe: str = typer.Option(
        "auto", "--recipe",
        help="auto: cpu without a GPU, else full | full: the GPU recipe (hours on a small CPU) | "
        "cpu: 128 tokens, lists of 8, 2 epochs (under 30 min on 2 cores); options below override",
    ),
    loss: str = typer.Option(None, "--loss", help=f"listnet | lambda | mnrl | bce [{_RR.loss}]"),
    epochs: float = typer.Option(None, "--epochs", help=f"[full {_RR.epochs}, cpu {_CPU['epochs']}]"),
    batch_size: int = typer.Option(None, "--batch-size", help=f"Queries per batch [{_RR.batch_size}]"),
    group_size: int = typer.Option(
        None, "--group-size",
        help=f"Documents per query list [full {_RR.group_size}, cpu {_CPU['group_size']}]",
    ),
    learning_rate: float = typer.Option(None, "--lr", help=f"[{_RR.learning_rate}]"),
    head_learning_rate: float = typer.Option(None, "--head-lr", help=f"[{_RR.head_learning_rate}]"),
    max_length: int = typer.Option(
        None, "--max-length", help=f"Tokens per pair [full {_RR.max_length}, cpu {_CPU['max_length']}]"
    ),
    layers: int = typer.Option(
        None, "--layers", min=1, help="Keep this many of the model's layers (a shallower reranker)"
    ),
    depth: int = typer.Option(
        None, "--depth", help=f"First-stage candidates to take negatives from [{_RR.depth}]"
    ),
    max_steps: int = typer.Option(None, "--max-steps"),
    seed: int = typer.Option(42, "--seed"),
    device: str = typer.Option(None, "--device", help="cpu, cuda, ... [cuda when present, else cpu]"),
    restart: bool = typer.Option(
        False, "--restart", help="Ignore checkpoints of an interrupted run"
    ),
    overwrite: bool = typer.Option(
        False, "--force", "--overwrite", help="Replace an existing output folder"
    ),
) -> None:
    """Train vecdoctor's own cross-encoder reranker on labelled queries (listwise loss)."""
    from vecdoctor.finetune.recipes import RerankRecipe, reranker_recipe
    from vecdoctor.finetune.reranker import train_reranker as run

    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = reranker_recipe(
        recipe, device, loss=loss, epochs=epochs, batch_size=batch_size, group_size=group_size,
        learning_rate=learning_rate, head_learning_rate=head_learning_rate, max_length=max_length,
        layers=layers, depth=depth, max_steps=max_steps, seed=seed)
    if RerankRecipe.parse(recipe) is RerankRecipe.AUTO and device.startswith("cpu"):
        typer.echo(f"no GPU in use: the cpu recipe ({config.max_length} tokens, lists of "
                   f"{config.group_size}, {config.epochs:g} epochs); --recipe full trains the GPU "
                   "recipe (hours on a small CPU)", err=True)
    result = run(
        _labelled(data, split),
        output,
        model=model,
        first_stage=first_stage,
        config=config,
        evaluation=_evaluation(data, eval_split),
        resume=not restart,
        overwrite=overwrite,
        show_progress=progress_enabled(),
    )
    emit(result.to_dict())


@command("terms")
def terms(
    model: str = typer.Argument(..., help="Registry name or model folder (e.g. a fine-tuned one)"),
    pairs: Path = typer.Option(
        ..., "--pairs", help="TSV 'term<TAB>term[<TAB>close|far]' or JSONL a/b/expect"
    ),
    baseline: str = typer.Option(
        None, "--baseline", help="Also score this model (e.g. the base model)"
    ),
    close_min: float = typer.Option(0.7, "--close-min"),
    far_max: float = typer.Option(0.5, "--far-max"),
) -> None:
    """Cosine of term pairs that should be close or far, for a model and optionally a baseline."""
    from vecdoctor.finetune.terms import read_term_pairs, term_consistency

    term_pairs = read_term_pairs(pairs)
    report = {"model": term_consistency(model, term_pairs, close_min, far_max)}
    if baseline:
        report["baseline"] = term_consistency(baseline, term_pairs, close_min, far_max)
    emit(report)


@command("distill")
def distill(
    teacher: str = typer.Argument(..., help="The teacher: registry name or local model folder"),
    data: str = typer.Argument(..., help="The corpus to fit on: corpus.jsonl[.gz], BEIR folder, text"),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the student"),
    student: str = typer.Option(
        "static", "--student",
        help="static: a vector per token, fitted on the corpus (thousands of texts/s); "
        "layers:K: K of the teacher's transformer layers, trained on the corpus",
    ),
    epochs: int = typer.Option(
        None, "--epochs", min=1,
        help="At most (static 20, layers 4); training stops when the held-out cosine stops rising",
    ),
    max_texts: int = typer.Option(
        30_000, "--max-texts", min=20,
        help="Documents and sentences the teacher encodes as targets (a seeded sample above it)",
    ),
    vocabulary: str = typer.Option(
        "corpus", "--vocabulary",
        help="static: corpus gives words the teacher splits into pieces a token of their own "
        "(WordPiece teachers); teacher keeps the teacher's tokens only",
    ),
    min_count: int = typer.Option(
        5, "--min-count", min=1, help="static, --vocabulary corpus: times a word must occur",
    ),
    seed: int = typer.Option(0, "--seed"),
    force: bool = typer.Option(False, "--force", help="Replace a folder that is not a student of that kind"),
) -> None:
    """Distil a fast student from a teacher, fitted on your corpus; use it anywhere with -m."""
    from vecdoctor.data import load_corpus
    from vecdoctor.errors import InputError
    from vecdoctor.finetune.layers import distill_layers, parse_student
    from vecdoctor.finetune.static import distill_static

    kind, layers = parse_student(student)
    if kind == "layers" and (vocabulary != "corpus" or min_count != 5):
        raise InputError("--vocabulary and --min-count apply to --student static; a layer "
                         "student reads the teacher's tokens")
    docs = load_corpus(data)
    say = (lambda m: typer.echo(m, err=True)) if progress_enabled() else None
    texts = [d.content for d in docs]
    if kind == "layers":
        assert layers is not None
        report: Any = distill_layers(teacher, texts, output, layers=layers, epochs=epochs or 4,
                                     max_texts=max_texts, seed=seed, force=force, progress=say)
    else:
        report = distill_static(teacher, texts, output, epochs=epochs or 20, max_texts=max_texts,
                                vocabulary=vocabulary, min_count=min_count, seed=seed,
                                force=force, progress=say)
    emit(report.to_dict())
