from pathlib import Path

import numpy as np
import pytest

from engine.library.index import DecodedRows, VectorIndex, choose_spec
from engine.library.store import VectorStore, train_codec
from tests.support.vectors import unit_vectors


def test_spec_is_exact_when_small_and_ivfpq_when_large():
    assert choose_spec(10_000, 128) == "Flat"
    assert choose_spec(7_200_000, 128) == "IVF8192,PQ32x4fs"
    assert choose_spec(7_200_000, 64) == "IVF8192,PQ16x4fs"


def test_store_appends_and_cuts_off_an_interrupted_tail(tmp_path: Path, rng):
    store = VectorStore(tmp_path / "v.f32", 8)
    assert store.append(unit_vectors(rng, 5, 8)) == 0
    assert store.append(unit_vectors(rng, 3, 8)) == 5
    with open(store.path, "ab") as f:
        f.write(b"\0" * 13)  # half a row: a crash mid-append
    store.truncate(8)
    assert len(store) == 8 and store.read().shape == (8, 8)
    with pytest.raises(ValueError, match="shape"):
        store.append(np.zeros((2, 4), np.float32))


def test_flat_search_finds_each_vector_itself(rng):
    vectors = unit_vectors(rng, 500, 32)
    index = VectorIndex.build(vectors)
    scores, ids = index.search(vectors[:10], 5)
    assert index.spec == "Flat" and ids.shape == (10, 5)
    np.testing.assert_array_equal(ids[:, 0], np.arange(10))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_ivfpq_with_rescoring_keeps_recall(rng):
    vectors = unit_vectors(rng, 20_000, 32)
    index = VectorIndex.build(vectors, "IVF64,PQ8")
    queries = vectors[:200] + 0.05 * unit_vectors(rng, 200, 32)
    scores, ids = index.search(queries, 5)
    assert np.mean(ids[:, 0] == np.arange(200)) > 0.95
    exact = np.einsum("ld,lkd->lk", queries, vectors[ids])
    np.testing.assert_allclose(scores, exact, atol=1e-5)  # re-scored on the stored vectors


@pytest.mark.parametrize("spec", ["Flat", "IVF16,PQ8"])
def test_save_and_load(tmp_path: Path, rng, spec: str):
    vectors = unit_vectors(rng, 3000, 32)
    VectorIndex.build(vectors, spec).save(tmp_path)
    loaded = VectorIndex.load(tmp_path, vectors)
    assert loaded is not None and loaded.spec == spec and len(loaded) == 3000
    assert (tmp_path / "faiss.index").exists() == (spec != "Flat")  # exact: not stored twice
    assert VectorIndex.load(tmp_path, vectors[:10]) is None  # stale: covers rows gone since


def test_compressed_store_keeps_rows_close_at_an_eighth_of_the_size(tmp_path: Path, rng):
    vectors = unit_vectors(rng, 2000, 32)
    store = VectorStore(tmp_path / "v.pq", 32, train_codec(vectors))
    assert store.append(vectors[:1500]) == 0 and store.append(vectors[1500:]) == 1500
    assert store.path.stat().st_size == 2000 * 16  # 32 float32 = 128 bytes → 16 bytes
    rows = store.read()
    assert isinstance(rows, DecodedRows) and rows.shape == (2000, 32) and len(rows) == 2000
    np.testing.assert_allclose(rows[7], rows[np.array([[7]])][0, 0])  # int and array indexing
    agree = np.einsum("nd,nd->n", rows[0:2000], vectors)
    assert agree.min() > 0.8 and agree.mean() > 0.9
    store.truncate(1000)
    assert len(store) == 1000 and store.raw().shape == (1000, 16)


def test_fast_scan_candidates_rescored_on_compressed_rows_keep_recall(tmp_path: Path, rng):
    vectors = unit_vectors(rng, 5_000, 32)
    store = VectorStore(tmp_path / "v.pq", 32, train_codec(vectors))
    store.append(vectors)
    index = VectorIndex.build(store.read(), "IVF32,PQ8x4fs")
    queries = vectors[:200] + 0.05 * unit_vectors(rng, 200, 32)
    scores, ids = index.search(queries, 5)
    assert np.mean(ids[:, 0] == np.arange(200)) > 0.95
    np.testing.assert_allclose(
        scores, np.einsum("ld,lkd->lk", queries, store.read()[ids]), atol=1e-5
    )


def test_a_saved_ivf_index_is_extended_by_appended_rows_until_it_outgrows_its_cells(
    tmp_path: Path, rng
):
    vectors = unit_vectors(rng, 9000, 32)
    VectorIndex.build(vectors[:2000], "IVF16,PQ8x4fs").save(tmp_path, "v-1")
    grown = VectorIndex.load(tmp_path, vectors[:5000], "v-1")
    assert grown is not None and len(grown) == 5000 and grown.unsaved and grown.trained_on == 2000
    _, ids = grown.search(vectors[4000:4010], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(4000, 4010))
    assert VectorIndex.load(tmp_path, vectors[:5000], "v-2") is None  # another store
    assert VectorIndex.load(tmp_path, vectors, "v-1") is None  # > 4× its training rows
