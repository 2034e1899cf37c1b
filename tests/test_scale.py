"""Scale-out: Ray Data encoding (a local cluster) and the LanceDB store, on real SciFact text.

Skipped without the ``scale`` extra. The Ray tests share one small local cluster started
for this module and shut down at its end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import retrieval_support as rs

pytestmark = [
    pytest.mark.filterwarnings("ignore:whitening fitted on:UserWarning"),
    pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning"),
]

N_DOCS = 200
MAX_LENGTH = 64  # the tests compare vectors, not quality: short inputs keep them fast


@pytest.fixture(scope="module")
def docs(real_corpus: list) -> list:
    return real_corpus[:N_DOCS]


@pytest.fixture(scope="module")
def encoder():
    from vecdoctor.encode.cache import VectorCache
    from vecdoctor.encode.encoder import Encoder

    # the in-memory cache lets several builds over the same texts encode them once
    return Encoder("minilm", max_length=MAX_LENGTH, cache=VectorCache(max_size=10_000))


@pytest.fixture(scope="module")
def reference(docs: list, encoder) -> dict[str, np.ndarray]:
    vectors = encoder.encode_documents([d.content for d in docs])
    return {d.id: v for d, v in zip(docs, vectors, strict=True)}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory, docs: list) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


def _write_corpus(path: Path, docs: list) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    return path


# -- without Ray or LanceDB ------------------------------------------------------------------
def test_importing_scale_loads_neither_ray_nor_lancedb() -> None:
    code = (
        "import sys, vecdoctor.scale, vecdoctor.cli; "
        "print(sorted(m for m in ('ray', 'lancedb', 'lance', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from vecdoctor.errors import MissingExtraError
    from vecdoctor.scale import ray_encode

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'vecdoctor\[scale\]'"), \
            ray_encode.ray_session():
        pass


def test_vectors_fingerprint_covers_the_transform(encoder, reference: dict) -> None:
    from vecdoctor.fix.transform import Whitening
    from vecdoctor.index.rows import vectors_fingerprint

    vectors = np.stack(list(reference.values()))
    a = Whitening(n_components=32).fit(vectors, fingerprint=encoder.fingerprint)
    b = Whitening(n_components=32).fit(vectors[:100], fingerprint=encoder.fingerprint)
    assert vectors_fingerprint(encoder) == encoder.fingerprint
    fps = {vectors_fingerprint(encoder, a), vectors_fingerprint(encoder, b), encoder.fingerprint}
    assert len(fps) == 3


def test_bad_sources_are_clear_errors(tmp_path: Path) -> None:
    from vecdoctor.errors import InputError
    from vecdoctor.index.rows import resolve_source

    with pytest.raises(InputError, match="file not found"):
        resolve_source(tmp_path / "missing.jsonl")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"expected a \.jsonl"):
        resolve_source(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="holds no corpus"):
        resolve_source(tmp_path)


def test_normalise_reads_beir_rows() -> None:
    import pyarrow as pa

    from vecdoctor.errors import InputError
    from vecdoctor.index.rows import contents, normalise

    batch = normalise(pa.table({"_id": [1, 2], "text": ["a", "b"], "title": ["T", None]}))
    assert batch.column("id").to_pylist() == ["1", "2"]
    assert contents(batch) == ["T. a", "b"]
    with pytest.raises(InputError, match="'text'"):
        normalise(pa.table({"_id": ["1"], "body": ["a"]}))


# -- LanceDB ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lance_index(tmp_path_factory: pytest.TempPathFactory, docs: list, encoder):
    pytest.importorskip("lancedb")
    from vecdoctor.index.lance import LanceIndex

    uri = tmp_path_factory.mktemp("lancedb") / "db"
    LanceIndex.build(docs, uri, encoder)
    return LanceIndex.load(uri)  # reopened: everything below reads what was written


@pytest.fixture(scope="module")
def queries(beir_dir: Path) -> list[str]:
    from vecdoctor.data import read_queries

    return list(read_queries(next(beir_dir.glob("queries.jsonl*"))).values())[:20]


def test_a_lance_table_carries_its_baseline_and_is_monitored(lance_index, docs: list, encoder,
                                                             tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vecdoctor.cli import app
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.monitor.live import LiveHealth
    from vecdoctor.search.searcher import Searcher

    base = lance_index.baseline
    assert base is not None and base.documents == len(docs) and base.queries > 20
    assert 0 < base.ood_threshold < 1 and base.doc_sample.shape[1] == lance_index.dim
    lance_index.use_encoder(encoder)
    searcher = Searcher(lance_index, cache_size=0)
    health = LiveHealth(lance_index, 20)
    searcher.observer = health
    searcher.search_batch([d.title for d in docs[:20]], k=5)
    assert health.windows == 1 and health.snapshot()["traffic"]["ood_share"] is not None
    uri = lance_index.uri
    before = base.summary()
    result = CliRunner().invoke(app, ["baseline", uri, "--queries", "50"])
    assert result.exit_code == 0, result.output
    again = LanceIndex.load(uri).baseline
    assert again.queries <= 50 and again.documents == before["documents"]


def test_lance_round_trip(lance_index, docs: list, reference: dict, encoder) -> None:
    table = lance_index.table.to_arrow()
    assert len(lance_index) == N_DOCS
    assert sorted(table.column("id").to_pylist()) == sorted(d.id for d in docs)
    meta = lance_index.config()
    assert meta["fingerprint"] == encoder.fingerprint
    assert meta["encoder"]["max_length"] == MAX_LENGTH
    from vecdoctor.index.rows import vector_matrix

    vectors = vector_matrix(table.column("vector"))
    for doc_id, vec in zip(table.column("id").to_pylist(), vectors, strict=True):
        np.testing.assert_array_equal(vec, reference[doc_id])
    assert docs[3].id in lance_index and "no-such-id" not in lance_index
    assert lance_index.docs[lance_index.row(docs[3].id)] == docs[3]
    assert lance_index.load_encoder().fingerprint == encoder.fingerprint


def test_lance_and_index_agree_on_exact_dense_top10(lance_index, docs: list, encoder,
                                                      queries: list[str]) -> None:
    from vecdoctor.index.store import Index
    from vecdoctor.search.searcher import Searcher

    folder = Searcher(Index.build(docs, encoder), cache_size=0)
    lance = Searcher(lance_index, encoder=encoder, cache_size=0)
    overlaps = []
    for q in queries:
        a = [h.id for h in folder.search(q, k=10, mode="dense")]
        b = [h.id for h in lance.search(q, k=10, mode="dense")]
        overlaps.append(len(set(a) & set(b)) / 10)
        scores_a = [h.score for h in folder.search(q, k=3, mode="dense")]
        scores_b = [h.score for h in lance.search(q, k=3, mode="dense")]
        np.testing.assert_allclose(scores_a, scores_b, atol=1e-5)
    assert np.mean(overlaps) == 1.0


def test_lance_bm25_and_hybrid_through_searcher(lance_index, docs: list, encoder) -> None:
    from vecdoctor.search.searcher import Searcher

    searcher = Searcher(lance_index, encoder=encoder, cache_size=0)
    target = docs[7]
    query = target.title
    bm25 = searcher.search(query, k=5, mode="bm25")
    assert bm25 and bm25[0].id == target.id and bm25[0].score > 0
    hybrid = searcher.search(query, k=5, mode="hybrid")
    assert hybrid[0].id == target.id
    assert set(hybrid[0].ranks_by_stage) == {"bm25", "dense", "fused"}
    assert hybrid[0].text == target.text and hybrid[0].title == target.title
    assert searcher.search("zzzzqqqq", k=5, mode="bm25") == []


def test_lance_add_and_delete(tmp_path: Path, docs: list, encoder) -> None:
    pytest.importorskip("lancedb")
    from vecdoctor.errors import InputError
    from vecdoctor.index.lance import LanceIndex

    index = LanceIndex.build(docs[:20], tmp_path / "db", encoder)
    index.add(docs[20:25])
    assert len(index) == 25
    with pytest.raises(InputError, match="already in the index"):
        index.add(docs[:1])
    index.delete([docs[0].id])
    assert len(index) == 24 and docs[0].id not in index
    rows, _ = index.bm25.search(docs[22].title, 3)
    assert index.docs[int(rows[0])].id == docs[22].id


def test_lance_keeps_the_transform(tmp_path: Path, docs: list, encoder, reference: dict) -> None:
    pytest.importorskip("lancedb")
    from vecdoctor.fix.transform import Whitening
    from vecdoctor.index.lance import LanceIndex

    vectors = np.stack([reference[d.id] for d in docs])
    whitening = Whitening(n_components=64).fit(vectors, fingerprint=encoder.fingerprint)
    LanceIndex.build(docs[:30], tmp_path / "db", encoder, transform=whitening)
    index = LanceIndex.load(tmp_path / "db")
    assert index.dim == 64
    np.testing.assert_array_equal(index.transform.W_, whitening.W_)
    index.use_encoder(encoder)
    np.testing.assert_allclose(
        index.embed_queries(["tumour growth"]),
        whitening.transform(encoder.encode_queries(["tumour growth"])), atol=1e-6,
    )


def test_lance_ivf_pq_search(tmp_path: Path, docs: list, encoder, queries: list[str]) -> None:
    pytest.importorskip("lancedb")
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.search.searcher import Searcher

    index = LanceIndex.build(docs, tmp_path / "db", encoder)
    exact = [[h.id for h in Searcher(index, cache_size=0).search(q, k=10, mode="dense")]
             for q in queries[:5]]
    assert not index.has_vector_index
    index.create_vector_index(num_partitions=2, num_sub_vectors=48, nprobes=2, refine_factor=5)
    assert index.has_vector_index
    approx = [[h.id for h in Searcher(index, cache_size=0).search(q, k=10, mode="dense")]
              for q in queries[:5]]
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.8
    reopened = LanceIndex.load(tmp_path / "db")
    assert reopened.refine_factor == 50  # PQ order refined with the stored vectors by default
    assert reopened.has_vector_index
    # the index list is read once per opened index, not on every query
    reopened.table.list_indices = lambda: pytest.fail("list_indices read again for a query")
    assert len(Searcher(reopened, cache_size=0).search(queries[0], k=10, mode="dense")) == 10
    from vecdoctor.errors import InputError

    with pytest.raises(InputError, match="refine_factor must be a whole number >= 1"):
        LanceIndex.load(tmp_path / "db", refine_factor=-2)


def test_lance_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("lancedb")
    from vecdoctor.errors import InputError
    from vecdoctor.index.lance import LanceIndex

    with pytest.raises(InputError, match="no table 'documents'"):
        LanceIndex.load(tmp_path / "nothing")


# -- Ray -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    for ray in rs.local_ray(3):
        # the test module's actor subclasses must travel to the workers by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray


def _flaky(marker: Path, poison: str) -> type:
    """An encoder actor that raises while ``marker`` holds a count > 0, on the batch holding
    the text ``poison``, decrementing the count each time."""
    from vecdoctor.scale.ray_encode import EncodeActor

    class FlakyActor(EncodeActor):
        def encode(self, contents: list[str]) -> np.ndarray:
            left = int(marker.read_text())
            if left > 0 and poison in contents:
                marker.write_text(str(left - 1))
                raise RuntimeError("simulated worker failure")
            return super().encode(contents)

    return FlakyActor


def _check_output(output: Path, reference: dict) -> None:
    from vecdoctor.scale.ray_encode import read_vectors

    ids, vectors, meta = read_vectors(output)
    assert len(ids) == len(set(ids)) == len(reference)  # every document once
    got = np.stack(vectors)
    want = np.stack([reference[i] for i in ids])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert meta["encoder"]["max_length"] == MAX_LENGTH


@pytest.mark.slow
def test_ray_vectors_equal_the_encoder(ray_cluster, corpus_file: Path, tmp_path: Path,
                                       encoder, reference: dict) -> None:
    import pyarrow.parquet as pq

    from vecdoctor.scale.ray_encode import encode_corpus

    out = tmp_path / "vectors"
    result = encode_corpus(corpus_file, out, encoder, workers=2, batch_size=64)
    assert (result.encoded, result.skipped, result.total) == (N_DOCS, 0, N_DOCS)
    _check_output(out, reference)
    part = pq.read_table(next(out.glob("part-*.parquet")))
    assert part.column_names == ["id", "vector", "fingerprint"]
    assert set(part.column("fingerprint").to_pylist()) == {encoder.fingerprint}
    again = encode_corpus(corpus_file, out, encoder, workers=1, batch_size=64)
    assert (again.encoded, again.skipped) == (0, N_DOCS)


@pytest.mark.slow
def test_ray_interrupted_job_resumes_without_duplicates(
    ray_cluster, tmp_path: Path, docs: list, encoder, reference: dict
) -> None:
    from vecdoctor.errors import IncompatibleError
    from vecdoctor.scale.ray_encode import encode_corpus

    out = tmp_path / "vectors.lance"
    first = _write_corpus(tmp_path / "first.jsonl", docs[:80])
    full = _write_corpus(tmp_path / "full.jsonl", docs)
    assert encode_corpus(first, out, encoder, batch_size=40).encoded == 80
    marker = tmp_path / "failures"
    poison = docs[150].content
    marker.write_text("1000")  # fails every time: the job stops part-way
    with pytest.raises(Exception, match="simulated worker failure"):
        encode_corpus(full, out, encoder, batch_size=40, retries=0,
                      actor_cls=_flaky(marker, poison))
    marker.write_text("1")  # fails once: the batch is retried and written once
    result = encode_corpus(full, out, encoder, batch_size=40, retries=1,
                           actor_cls=_flaky(marker, poison))
    assert marker.read_text() == "0"
    assert result.skipped >= 80 and result.encoded + result.skipped == N_DOCS
    _check_output(out, reference)
    from vecdoctor.encode.encoder import Encoder

    other = Encoder("minilm", max_length=32)
    with pytest.raises(IncompatibleError, match="write to a new output"):
        encode_corpus(full, out, other)


@pytest.mark.slow
def test_ray_applies_whitening_and_writes_lancedb(
    ray_cluster, corpus_file: Path, tmp_path: Path, encoder, reference: dict, docs: list
) -> None:
    from vecdoctor.fix.transform import make_transform
    from vecdoctor.index.lance import LanceIndex
    from vecdoctor.search.searcher import Searcher

    # fitting through Ray (`vecdoctor ray-fit`) runs in tests/test_scale_cluster.py
    sample = np.stack([reference[d.id] for d in docs[:120]])
    whitening = make_transform("whitening", n_components=32).fit(
        sample, fingerprint=encoder.fingerprint, model_id=encoder.model_id)
    from vecdoctor.scale.ray_encode import build_lance

    index = build_lance(corpus_file, tmp_path / "db", encoder, whitening, workers=2, batch_size=64)
    assert len(index) == N_DOCS and index.dim == 32
    rows = index.table.to_arrow()
    from vecdoctor.index.rows import vector_matrix

    want = whitening.transform(np.stack([reference[i] for i in rows.column("id").to_pylist()]))
    np.testing.assert_allclose(vector_matrix(rows.column("vector")), want, atol=1e-5)
    hits = Searcher(LanceIndex.load(tmp_path / "db"), encoder=encoder, cache_size=0).search(
        docs[5].title, k=3)
    assert hits[0].id == docs[5].id


# -- CLI -------------------------------------------------------------------------------------
def test_cli_lance_index_and_search(tmp_path: Path, docs: list) -> None:
    pytest.importorskip("lancedb")
    from typer.testing import CliRunner

    from vecdoctor.cli import app

    corpus = _write_corpus(tmp_path / "corpus.jsonl", docs[:30])
    uri = str(tmp_path / "db")
    runner = CliRunner()
    built = runner.invoke(app, ["lance-index", str(corpus), "--uri", uri, "--max-length", "32"])
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["documents"] == 30
    found = runner.invoke(app, ["lance-search", uri, docs[4].title, "-k", "3"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["hits"][0]["id"] == docs[4].id
    again = runner.invoke(app, ["lance-index", str(corpus), "--uri", uri])
    assert again.exit_code == 1 and "error:" in again.output
    missing = runner.invoke(app, ["lance-search", str(tmp_path / "none"), "query"])
    assert missing.exit_code == 1 and "no table 'documents'" in missing.output


def test_cli_encode_engine_ray_rejects_npy(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vecdoctor.cli import app

    result = CliRunner().invoke(app, ["encode", "corpus.jsonl", "-o", str(tmp_path / "v.npy"),
                                      "--engine", "ray"])
    assert result.exit_code == 1
    assert "a folder of Parquet parts or a .lance dataset" in result.output


@pytest.mark.slow
def test_cli_encode_engine_ray_then_index_the_vectors(ray_cluster, corpus_file: Path,
                                                      tmp_path: Path, docs: list,
                                                      queries: list[str]) -> None:
    from typer.testing import CliRunner

    from vecdoctor.cli import app
    from vecdoctor.data import Document
    from vecdoctor.encode.encoder import Encoder
    from vecdoctor.index.store import Index
    from vecdoctor.scale.ray_encode import read_vectors
    from vecdoctor.search.searcher import Searcher

    out = tmp_path / "vectors"
    runner = CliRunner()
    result = runner.invoke(app, ["encode", str(corpus_file), "-o", str(out), "--engine",
                                 "ray", "--workers", "2", "--max-length", "32"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["encoded"] == N_DOCS and summary["engine"] == "ray"
    ids, vectors, meta = read_vectors(out)
    assert len(set(ids)) == N_DOCS and vectors.shape == (N_DOCS, 384)
    assert meta["encoder"]["max_length"] == 32

    # an index folder over those vectors, without encoding the corpus again
    folder = tmp_path / "idx"
    made = runner.invoke(app, ["index", str(corpus_file), "--vectors", str(out), "-o", str(folder)])
    assert made.exit_code == 0, made.output
    info = json.loads(made.stdout)
    assert info["documents"] == N_DOCS and info["dense_search"]["chosen"] == "exact"
    assert info["baseline"] is not None  # the monitor's reference, as `index` always makes
    from_ray = Index.load(folder)
    encoder = Encoder("minilm", max_length=32)
    assert from_ray.encoder_config["fingerprint"] == encoder.fingerprint
    here = Index.build(docs, encoder, baseline=False)  # encoded in this process instead
    for query in queries[:5]:
        got = [h.id for h in Searcher(from_ray, cache_size=0).search(query, k=10)]
        want = [h.id for h in Searcher(here, cache_size=0).search(query, k=10)]
        assert got == want
    # bad input: a corpus that is not the one encoded, settings the vectors already fixed
    more = _write_corpus(tmp_path / "more.jsonl", [*docs, Document("new-doc", "", "new text")])
    fewer = _write_corpus(tmp_path / "fewer.jsonl", docs[3:])
    for corpus, message in ((more, "1 documents have no vector: 'new-doc' (resume"),
                            (fewer, "3 vectors belong to no document of the corpus: ")):
        bad = runner.invoke(app, ["index", str(corpus), "--vectors", str(out), "-o",
                                  str(tmp_path / "bad")])
        assert bad.exit_code == 1 and message in bad.output, bad.output
    clash = runner.invoke(app, ["index", str(corpus_file), "--vectors", str(out), "-m",
                                "minilm", "--chunks", "max", "-o", str(tmp_path / "bad")])
    assert clash.exit_code == 1 and "drop -m, --chunks" in clash.output, clash.output
    assert not (tmp_path / "bad").exists()


def test_cli_index_store_lancedb_then_search_like_a_folder(tmp_path, real_corpus):
    pytest.importorskip("lancedb")
    import json as _json

    from typer.testing import CliRunner

    from vecdoctor.cli import app
    from vecdoctor.data import write_corpus_jsonl

    corpus = tmp_path / "corpus.jsonl"
    write_corpus_jsonl(real_corpus[:40], corpus)
    runner = CliRunner()
    lance = runner.invoke(app, ["index", str(corpus), "-o", str(tmp_path / "db"), "--store", "lancedb",
                                "--max-length", "128"])
    assert lance.exit_code == 0, lance.output
    folder = runner.invoke(app, ["index", str(corpus), "-o", str(tmp_path / "idx"), "--max-length", "128"])
    assert folder.exit_code == 0, folder.output
    query = real_corpus[7].title
    hits = {}
    for name in ("db", "idx"):
        res = runner.invoke(app, ["search", str(tmp_path / name), query, "--mode", "dense", "-k", "5"])
        assert res.exit_code == 0, res.output
        hits[name] = [h["id"] for h in _json.loads(res.stdout)["hits"]]
    assert hits["db"] == hits["idx"] and hits["db"][0] == real_corpus[7].id
    bad = runner.invoke(app, ["index", str(corpus), "-o", str(tmp_path / "db2"), "--store", "lancedb",
                              "--precision", "int8"])
    assert bad.exit_code == 1 and "drop --precision" in bad.output
