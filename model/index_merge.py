"""One index from parts filled apart: the merge of a sharded index build.

A sharded build trains one empty index (``model.index.trained_index``: the IVF quantizer
and codebooks from a sample), gives every worker a copy to fill with its slice of the
items (``model.index.fill_index``), and merges the filled parts here in slice order. The
inverted lists of each part are appended to the merged index's (``IndexIVF.merge_from``),
so the result is the index one process would have built by adding the slices in order:
the same bytes once ``model.index.finish_index`` builds the direct map.

Mergeable: IVF indexes with any code (``IVF..,Flat``, ``IVF..,PQ..``, ``IVF..,SQ8``),
``IVF..,PQ..,RFlat`` (IVF-PQ with exact re-ranking, under ``IndexIDMap2``) and ``Flat``
(under ``IndexIDMap2``). Graph indexes (HNSW) are not: a graph is built by inserting every
vector into it, not by concatenating parts.
"""

from __future__ import annotations

from collections.abc import Iterable

import faiss
import numpy as np

__all__ = ["can_merge", "merge_parts"]


def _refine(index: faiss.Index) -> faiss.IndexRefine | None:
    """The ``IndexRefine`` under an ``IndexIDMap2``, if that is what ``index`` is."""
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexRefine):
            return inner
    return None


def can_merge(index: faiss.Index) -> bool:
    """Whether parts of ``index`` (a trained, empty template) can be filled apart and merged."""
    if isinstance(index, faiss.IndexIVF):
        return True
    refine = _refine(index)
    if refine is not None:
        base = faiss.downcast_index(refine.base_index)
        return isinstance(base, faiss.IndexIVF) and isinstance(
            faiss.downcast_index(refine.refine_index), faiss.IndexFlat
        )
    if isinstance(index, faiss.IndexIDMap2):
        return isinstance(faiss.downcast_index(index.index), faiss.IndexFlat)
    return False


def merge_parts(template: faiss.Index, parts: Iterable[faiss.Index]) -> faiss.Index:
    """A copy of ``template`` holding every part's vectors, in the order of ``parts``.

    Every part must be a copy of ``template`` filled with ``fill_index`` (same training,
    no direct map). The parts are emptied by the merge (faiss moves their lists); an
    iterator that loads them one at a time keeps one part in memory besides the result. Raises
    ValueError when ``template`` cannot be merged or a part does not match it.
    """
    if not can_merge(template):
        raise ValueError(f"{type(template).__name__} indexes cannot be merged from parts")
    if template.ntotal != 0:
        raise ValueError(f"the template must be empty, it holds {template.ntotal} vectors")
    merged = faiss.clone_index(template)
    for i, part in enumerate(parts):
        if type(part) is not type(merged) or part.d != merged.d:
            raise ValueError(
                f"part {i} is a {type(part).__name__} of d={part.d}, not the template's"
            )
        try:
            _merge_into(merged, part)
        except RuntimeError as err:  # faiss's check_compatible_for_merge
            raise ValueError(f"part {i} does not match the template: {err}") from err
    return merged


def _merge_into(merged: faiss.Index, part: faiss.Index) -> None:
    refine = _refine(merged)
    if refine is None or not isinstance(merged, faiss.IndexIDMap2):
        # IVF: lists appended, IDs kept; IDMap2 over Flat: vectors and ID map appended.
        merged.merge_from(part, 0)
        return
    # IDMap2 over Refine(IVF, Flat): faiss has no merge for IndexRefine. Its base IVF holds
    # sequential positions (shifted by the vectors already in), its Flat the vectors in
    # the same order; the ID map translates positions to item IDs.
    other = _refine(part)
    assert other is not None and isinstance(part, faiss.IndexIDMap2)
    shift = refine.ntotal
    base, other_base = (
        faiss.downcast_index(refine.base_index),
        faiss.downcast_index(other.base_index),
    )
    base.merge_from(other_base, shift)
    faiss.downcast_index(refine.refine_index).merge_from(
        faiss.downcast_index(other.refine_index), 0
    )
    refine.ntotal = base.ntotal
    ids = np.concatenate([faiss.vector_to_array(merged.id_map), faiss.vector_to_array(part.id_map)])
    faiss.copy_array_to_vector(ids, merged.id_map)
    merged.ntotal = refine.ntotal
    merged.construct_rev_map()
