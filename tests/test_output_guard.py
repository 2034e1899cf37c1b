"""One output guard for every command that writes a folder: an existing folder is replaced only
when vecdoctor wrote it as the same kind of output; anything else is a one-line error that
names the folder and --force, and nothing in the folder is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import retrieval_support as rs
from typer.testing import CliRunner

from vecdoctor.cli import app
from vecdoctor.errors import InputError
from vecdoctor.persist import INDEX, TRANSFORM, check_output, written_as


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return rs.write_corpus(tmp_path_factory.mktemp("c") / "corpus.jsonl", rs.subset()[0][:12])


def _commands(corpus: Path, beir: Path, out: Path) -> dict[str, list]:
    return {
        "index": ["index", corpus, "-o", out],
        "fit": ["fit", "abtt", corpus, "-o", out],
        "evaluate": ["evaluate", beir, "--variants", "bm25", "-o", out],
        "checkup": ["checkup", beir, "-m", "minilm", "--quick", "-o", out],
        "diagnose": ["diagnose", beir, "-o", out],
        "finetune": ["finetune", beir, "--split", "train", "-o", out],
        "train-reranker": ["train-reranker", beir, "--split", "train", "-o", out],
        "export": ["export", "minilm", "--backend", "onnx", "-o", out],
    }


@pytest.mark.parametrize(
    "command", ["index", "fit", "evaluate", "checkup", "diagnose", "finetune", "train-reranker", "export"]
)
def test_no_command_replaces_a_folder_vecdoctor_did_not_write(command, corpus, precious):
    line = _one_error_line(_run(*_commands(corpus, rs.real_beir(), precious)[command]))
    assert str(precious) in line and "--force" in line
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    assert (precious / "notes.txt").read_text() == "keep me"


def test_a_model_folder_with_a_config_json_is_not_an_index(corpus, minilm_path, tmp_path):
    import shutil

    model = tmp_path / "hf-model"
    shutil.copytree(minilm_path, model)  # holds a config.json, as every Hugging Face model does
    before = sorted(p.name for p in model.iterdir())
    for args in (["index", corpus, "-o", model], ["fit", "whitening", corpus, "-o", model]):
        assert "--force" in _one_error_line(_run(*args))
    assert sorted(p.name for p in model.iterdir()) == before


def test_the_same_kind_is_replaced_and_force_replaces_anything(corpus, precious, tmp_path):
    out = tmp_path / "idx"
    assert _run("index", corpus, "-o", out).exit_code == 0
    assert written_as(out, INDEX)
    again = _run("index", corpus, "-o", out)  # an index folder is rebuilt in place
    assert again.exit_code == 0, again.output
    forced = _run("index", corpus, "-o", precious, "--force")
    assert forced.exit_code == 0, forced.output
    assert not (precious / "notes.txt").exists() and written_as(precious, INDEX)
    # what the forced folder held is moved aside, next to it, and the log says where
    aside = list(precious.parent.glob(f"{precious.name}.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "notes.txt").is_file()
    assert str(aside[0]) in forced.output
    # a file of the user's left inside a vecdoctor index survives the next build the same way
    (out / "mine.txt").write_text("keep me")
    rebuilt = _run("index", corpus, "-o", out)
    assert rebuilt.exit_code == 0 and not (out / "mine.txt").exists()
    kept = list(out.parent.glob("idx.replaced-*"))
    assert len(kept) == 1 and (kept[0] / "mine.txt").read_text() == "keep me"
    assert "mine.txt" in rebuilt.output
    # a rebuild of a plain index keeps nothing aside
    assert _run("index", corpus, "-o", out).exit_code == 0
    assert len(list(out.parent.glob("idx.replaced-*"))) == 1


def test_a_trained_model_is_not_replaced_without_force(tmp_path):
    from vecdoctor.finetune._training import check_output as check_training
    from vecdoctor.persist import FINETUNED, header

    folder = tmp_path / "ft"
    folder.mkdir()
    (folder / "vecdoctor_finetune.json").write_text(json.dumps(header("FinetuneResult", 1)))
    with pytest.raises(InputError, match="already exists and holds a fine-tuned model"):
        check_training(folder, False, FINETUNED)
    assert check_training(folder, True, FINETUNED) == folder


def test_library_writers_use_the_guard(precious, tmp_path):
    from vecdoctor.fix.transform import AllButTheTop
    from vecdoctor.index.store import Index

    index = Index.load(Path(__file__).parent / "fixtures" / "v0_1_0" / "index-float32")
    with pytest.raises(InputError, match="--force"):
        index.save(precious)
    fitted = AllButTheTop(n_components=1).fit(rs.float_index().vectors.vectors[:20])
    with pytest.raises(InputError, match="--force"):
        fitted.save(precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    fitted.save(tmp_path / "t")
    assert written_as(tmp_path / "t", TRANSFORM)
    fitted.save(tmp_path / "t")  # a transform folder is replaced by a transform


@pytest.mark.parametrize("make", ["file", "symlink"])
def test_a_file_or_a_link_is_never_an_output_folder(tmp_path, make):
    target = tmp_path / "target"
    if make == "file":
        target.write_text("x")
    else:
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(InputError, match="not a folder"):
        check_output(target, INDEX, force=True)
