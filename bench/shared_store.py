"""What a shared store costs: publishing one version and opening it, side by side on

- ``local``: the embedded default (local disk, ``registry.sqlite``);
- ``local+pg``: local disk, the registry in PostgreSQL on loopback;
- ``s3+pg``: an ``s3://`` root on a local S3-compatible server (moto, loopback) with the
  registry in PostgreSQL: publish uploads and reads every object back; a cold open
  downloads into an empty cache and verifies; a warm open verifies the cached copy.

The version is a copy of a real one (``--source`` store's CURRENT, else a nightly run at
``--scale`` into a temporary store first). Each step runs ``--repeats`` times, the
backends interleaved; prints the medians and their ratios to ``local``.

    python -m bench.shared_store [--scale small] [--source ROOT] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from devtools.pgserver import PgServer
from devtools.s3server import moto_server
from storage import Layout, Lineage, VersionFiles, VersionStore, read_json
from storage.database import bind_database
from storage.manifest import read_manifest
from storage.remote_binding import bind_remote

__all__ = ["main"]

log = logging.getLogger(__name__)

BACKENDS = ("local", "local+pg", "s3+pg")


def _source(args: argparse.Namespace, scratch: Path) -> Path:
    """The folder of the version to copy."""
    if args.source is not None:
        store = VersionStore(Layout(args.source))
        return store.open_current().path
    from core.config import NightlyConfig
    from core.nightly import run_nightly

    root = scratch / "source"
    cfg = NightlyConfig.model_validate(
        {"data": {"scale": args.scale}, "runtime": {"storage_root": str(root), "resume": False}}
    )
    log.info("running the nightly at scale %s for a version to copy", args.scale)
    vid = run_nightly(cfg)
    return Layout(root).version_dir(vid)


def _publish_copy(store: VersionStore, source: Path) -> tuple[str, float]:
    """Stage a copy of ``source`` (outside the clock), publish it; (id, seconds)."""
    manifest = read_manifest(source.name, source)
    vid = store.new_version_id()
    staging = store.begin(vid)
    for name in manifest.files:
        shutil.copyfile(source / name, staging / name)
    parent = store.current()
    start = time.perf_counter()
    store.publish(
        vid,
        expected_current=parent,
        config=manifest.config,
        lineage=Lineage(data_snapshot=manifest.lineage.data_snapshot, parent_version=parent),
        embedding_dim=manifest.embedding_dim,
        metric=manifest.metric,
        item_count=manifest.item_count,
        metrics=read_json(staging / VersionFiles.METRICS),
    )
    return vid, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_store", description=__doc__)
    parser.add_argument("--scale", default="small", help="the default scale: small")
    parser.add_argument("--source", type=Path, default=None, help="a store with a CURRENT")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("storage", "core", "model"):
        logging.getLogger(name).setLevel(logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="towerflow-bench-shared-"))
    scratch.chmod(0o711)  # under root, the cluster's owner (postgres) passes through
    try:
        source = _source(args, scratch)
        size = sum(p.stat().st_size for p in source.iterdir() if p.is_file())
        pg = PgServer(scratch / "pg")
        pg_url = pg.start()
        try:
            with moto_server() as endpoint:
                _run(args, scratch, source, size, pg_url, endpoint)
        finally:
            pg.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _run(
    args: argparse.Namespace, scratch: Path, source: Path, size: int, pg_url: str, endpoint: str
) -> None:
    import pyarrow.fs as pafs

    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
    )  # fmt: skip
    pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir("bench")
    remote = "s3://bench/store"
    # libpq's own variable: one password for both schemas (stores) of the database.
    os.environ["PGPASSWORD"] = urlsplit(pg_url).password or ""
    stores: dict[str, VersionStore] = {}
    urls: dict[str, str] = {}
    for backend in BACKENDS:
        layout = Layout(scratch / backend)
        if backend != "local":
            urls[backend] = f"{pg_url}?schema={backend.replace('+', '_')}"
            if backend == "s3+pg":
                bind_remote(layout, remote)
            bind_database(layout, urls[backend])
        stores[backend] = VersionStore(layout, keep_versions=args.repeats + 1)
    publish: dict[str, list[float]] = {b: [] for b in BACKENDS}
    cold: dict[str, list[float]] = {b: [] for b in BACKENDS}
    warm: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for r in range(args.repeats):
        for backend in BACKENDS:
            store = stores[backend]
            vid, seconds = _publish_copy(store, source)
            publish[backend].append(seconds)
            reader = store
            if backend == "s3+pg":  # another machine: an empty cache
                layout = Layout(scratch / f"replica-{r}")
                bind_remote(layout, remote)
                bind_database(layout, urls[backend])
                reader = VersionStore(layout)
            start = time.perf_counter()
            reader.open_version(vid, verify=True)
            cold[backend].append(time.perf_counter() - start)
            start = time.perf_counter()
            reader.open_version(vid, verify=True)
            warm[backend].append(time.perf_counter() - start)
    med = {k: {b: statistics.median(v[b]) for b in BACKENDS} for k, v in
           (("publish", publish), ("open (cold)", cold), ("open (warm)", warm))}  # fmt: skip
    lines = [
        f"one version of {size / 2**20:.1f} MiB ({len(list(source.iterdir()))} files), "
        f"median of {args.repeats}, seconds (ratio to local)",
        f"{'step':<13}" + "".join(f"{b:>22}" for b in BACKENDS),
    ]
    for step, row in med.items():
        cells = "".join(f"{row[b]:>12.3f} ({row[b] / row['local']:>5.2f}x)" for b in BACKENDS)
        lines.append(f"{step:<13}{cells}")
    log.info("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
