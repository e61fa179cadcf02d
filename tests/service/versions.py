"""Publish variants of a version quickly (no Prefect flow): copy a base version's files
into staging, rebuild the index (slightly different, or deliberately broken), publish
through ``VersionStore.publish`` as tasks/publish.py does."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import numpy as np

from core.versionio import read_embeddings
from model.index import build_index
from storage import Lineage, VersionFiles, VersionStore, read_json, save_index
from storage.manifest import read_manifest

__all__ = ["Variant", "publish_variant"]

# ok: a valid version with slightly different item vectors;
# checksum: valid files, then a byte of index.faiss flipped before CURRENT moves (on an
# object-store root, in the uploaded copy);
# count: an index missing 10 items; dim: an index of 32-dimensional vectors.
Variant = Literal["ok", "checksum", "count", "dim"]


def publish_variant(store: VersionStore, base: Path, variant: Variant, seed: int) -> str:
    """Publish a new version built from the version folder ``base``; return its id."""
    manifest = read_manifest(base.name, base)
    vid = store.new_version_id()
    staging = store.begin(vid)
    for name in manifest.files:
        if name != VersionFiles.INDEX:
            shutil.copyfile(base / name, staging / name)
    ids, vecs = read_embeddings(base)
    rng = np.random.default_rng(seed)
    vecs = vecs + rng.normal(0.0, 0.01, vecs.shape).astype(np.float32)
    if variant == "count":
        ids, vecs = ids[:-10], vecs[:-10]
    elif variant == "dim":
        vecs = vecs[:, :32]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    save_index(staging / VersionFiles.INDEX, build_index(vecs, ids))

    def corrupt(step: str) -> None:
        # After the folder is final but before CURRENT names it, so no reader can have
        # loaded the intact file. On an object-store root, the remote copy, once uploaded
        # and read back: what other machines fetch.
        if variant != "checksum":
            return
        if store.remote is None and step == "renamed":
            path = store.layout.version_dir(vid) / VersionFiles.INDEX
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
        elif store.remote is not None and step == "uploaded":
            import pyarrow.fs as pafs

            fs, key = pafs.FileSystem.from_uri(store.remote.url)
            key = f"{key}/versions/{vid}/{VersionFiles.INDEX}"
            with fs.open_input_stream(key) as f:
                data = bytearray(f.read())
            data[len(data) // 2] ^= 0x01
            with fs.open_output_stream(key) as f:
                f.write(bytes(data))

    parent = store.current()
    store.publish(
        vid,
        expected_current=parent,
        config=manifest.config,
        lineage=Lineage(data_snapshot=manifest.lineage.data_snapshot, parent_version=parent),
        embedding_dim=manifest.embedding_dim,
        metric=manifest.metric,
        item_count=manifest.item_count,
        metrics=read_json(staging / VersionFiles.METRICS),
        hook=corrupt,
    )
    return vid
