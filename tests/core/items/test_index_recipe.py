"""An index rebuilt for an items event (``core.catalogue_apply``) gets every search
parameter the nightly tuned, the refinement factor included; manifests written before
the parameters were recorded still give the knob."""

from __future__ import annotations

import faiss
import numpy as np

from core import catalogue_apply
from core.catalogue_apply import IndexRecipe


def _rebuilt(summary: dict[str, object]) -> faiss.Index:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4000, 16)).astype(np.float32)
    ids = np.arange(4000, dtype=np.int64) * 3
    return catalogue_apply.rebuild_index(IndexRecipe.from_summary(summary), ids, vectors)


def test_a_rebuild_sets_every_tuned_parameter() -> None:
    index = _rebuilt(
        {"factory": "IVF16,PQ4,RFlat", "knob": "nprobe", "knob_value": 4,
         "params": {"nprobe": 4, "k_factor_rf": 8}}
    )  # fmt: skip
    refine = faiss.downcast_index(faiss.downcast_index(index).index)
    assert isinstance(refine, faiss.IndexRefine) and refine.k_factor == 8
    assert faiss.extract_index_ivf(index).nprobe == 4


def test_an_older_summary_without_parameters_still_sets_its_knob() -> None:
    index = _rebuilt({"factory": "IVF16,Flat", "knob": "nprobe", "knob_value": 6})
    assert faiss.extract_index_ivf(index).nprobe == 6
