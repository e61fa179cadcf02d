"""Published versions on object storage: a store whose root is ``s3://bucket/prefix`` (or
any URI ``pyarrow.fs`` opens: ``gs://``, ``file://``) keeps the bytes of its versions
there, under the same layout and manifests as on disk, and works on a local cache.

Why ``pyarrow.fs``: it is already the parquet layer's I/O, so no new client; its S3
client is configured the usual ways of the AWS SDK (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_REGION``, IAM
roles; ``AWS_ENDPOINT_URL`` or ``?endpoint_override=`` for MinIO and other
S3-compatible servers). No credential is ever written by towerflow.

How it is used:

- Each machine works in a local cache folder (``TOWERFLOW_CACHE_DIR``, default
  ``~/.cache/towerflow``), a plain store layout whose ``remote.json`` names the remote
  URL (``storage.remote_binding``). Staging, locks' files and scratch stay local. Run
  reports (HTML, derived from a verified version) are uploaded under ``reports/`` as
  they are written.
- ``VersionStore.publish`` seals and verifies the version locally, renames it into the
  cache, then uploads it: every file, then ``manifest.json`` last, then reads every
  object back and checks its SHA-256 against the manifest. Only then does it move
  CURRENT (in PostgreSQL). An object store has no rename: the manifest written last and
  the registry's compare-and-swap are what make a version visible, never a listing.
- Opening a version the cache lacks downloads it into a temporary folder beside the
  cache, checks the manifest against the SHA-256 the registry recorded and every file
  against the manifest, and only then renames it into the cache. Nothing unverified is
  ever read, so API replicas each keep a verified local cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from storage.errors import CorruptVersionError, StorageError
from storage.fs import fsync_dir, sha256_file
from storage.layout import Layout, SnapshotFiles, VersionFiles, validate_id
from storage.manifest import Manifest, read_manifest, verify_files

__all__ = [
    "SNAPSHOT_SUMS",
    "RemoteError",
    "RemoteStore",
]

log = logging.getLogger(__name__)

_CHUNK: Final = 8 << 20  # bytes per read/write when streaming a file
# Beside a snapshot on the remote: {file: {"bytes", "sha256"}}, written before snapshot.json.
SNAPSHOT_SUMS: Final = "files.sha256.json"


class RemoteError(StorageError):
    """The object store cannot be reached or holds something unexpected."""


@dataclass(frozen=True)
class RemoteStore:
    """The remote half of a store: ``url`` (``s3://bucket/prefix[?options]``)."""

    url: str

    def _fs(self) -> tuple[Any, str]:
        import pyarrow.fs as pafs

        try:
            return pafs.FileSystem.from_uri(self.url)
        except (OSError, ValueError) as e:
            raise RemoteError(f"cannot open the object store {self.shown}: {e}") from e

    @property
    def shown(self) -> str:
        """The URL without its query (options may carry endpoints, never secrets, but
        keep messages short)."""
        return self.url.split("?", 1)[0]

    def _key(self, base: str, *parts: str) -> str:
        return "/".join([base.rstrip("/"), *parts])

    # -- versions ------------------------------------------------------------------------

    def upload_version(self, version_id: str, folder: Path, manifest_sha256: str) -> None:
        """Put every file of the sealed version ``folder``, ``manifest.json`` last, then
        read every object back and check it against the manifest. Raises RemoteError
        (an unreachable store) or CorruptVersionError (an object read back wrong)."""
        fs, base = self._fs()
        manifest = read_manifest(version_id, folder)
        prefix = self._key(base, "versions", version_id)
        names = [*sorted(manifest.files), VersionFiles.MANIFEST]
        try:
            fs.create_dir(prefix, recursive=True)
            for name in names:
                with (
                    open(folder / name, "rb") as src,
                    fs.open_output_stream(self._key(prefix, name), metadata={}) as dst,
                ):
                    shutil.copyfileobj(src, dst, _CHUNK)
            for name in names:
                want = manifest_sha256 if name == VersionFiles.MANIFEST else None
                entry = manifest.files.get(name)
                digest, size = self._hash(fs, self._key(prefix, name))
                expected = want or (entry.sha256 if entry else None)
                if digest != expected or (entry is not None and size != entry.bytes):
                    raise CorruptVersionError(
                        version_id, name, f"read back from {self.shown} with other bytes"
                    )
        except OSError as e:
            raise RemoteError(f"uploading {version_id} to {self.shown} failed: {e}") from e
        log.info("uploaded %s (%d files) to %s", version_id, len(names), self.shown)

    def fetch_version(self, version_id: str, dest: Path, manifest_sha256: str | None) -> Manifest:
        """Download ``version_id`` into the new folder ``dest`` and verify it: the manifest
        against ``manifest_sha256`` (the registry's), every file against the manifest.
        Returns the manifest. Raises CorruptVersionError or RemoteError; ``dest`` may then
        hold a partial download (the caller removes it)."""
        fs, base = self._fs()
        prefix = self._key(base, "versions", version_id)
        dest.mkdir(parents=True)
        try:
            self._download(
                fs, self._key(prefix, VersionFiles.MANIFEST), dest / VersionFiles.MANIFEST
            )
            if manifest_sha256 is not None:
                got = sha256_file(dest / VersionFiles.MANIFEST)
                if got != manifest_sha256:
                    raise CorruptVersionError(
                        version_id, VersionFiles.MANIFEST,
                        f"on {self.shown} its SHA-256 {got[:12]} is not the registry's "
                        f"{manifest_sha256[:12]}",
                    )  # fmt: skip
            manifest = read_manifest(version_id, dest)
            for name in sorted(manifest.files):
                self._download(fs, self._key(prefix, name), dest / name)
        except FileNotFoundError as e:
            raise CorruptVersionError(
                version_id, Path(str(e.filename or e)).name, f"missing on {self.shown}"
            ) from e
        except OSError as e:
            raise RemoteError(f"downloading {version_id} from {self.shown} failed: {e}") from e
        verify_files(version_id, dest, manifest)
        fsync_dir(dest)
        return manifest

    def cache_version(self, layout: Layout, version_id: str, manifest_sha256: str | None) -> None:
        """Download ``version_id`` into the cache ``layout``: verified in a folder of its
        own under ``staging/fetch/``, then renamed into ``versions/``. Concurrent fetches
        of one version are fine: the first rename wins, the others drop their copies."""
        final = layout.version_dir(version_id)
        tmp = layout.fetch_dir / f"{version_id}.{secrets.token_hex(4)}"
        try:
            self.fetch_version(version_id, tmp, manifest_sha256)
            if not layout.versions_dir.is_dir():
                layout.versions_dir.mkdir(parents=True, exist_ok=True)
                fsync_dir(layout.root)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                log.debug("version %s was fetched meanwhile by another process", version_id)
            else:
                fsync_dir(layout.versions_dir)
                log.info("fetched %s from %s into %s", version_id, self.shown, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def discard_version(self, version_id: str) -> None:
        """``delete_version``, best effort: a remote copy that stays is unregistered, and
        ``remove_unregistered`` takes it under the publish lock."""
        try:
            self.delete_version(version_id)
        except RemoteError:
            log.warning("could not delete %s on %s", version_id, self.shown, exc_info=True)

    def remove_unregistered(self, registered: Collection[str]) -> list[str]:
        """Delete the version folders on the remote that ``registered`` lacks (call under
        the publish lock: a live publisher's upload is registered before it lets go)."""
        removed = sorted(self.version_ids() - set(registered))
        for version_id in removed:
            self.discard_version(version_id)
            log.info("removed %s from %s, left by a dead run", version_id, self.shown)
        return removed

    def delete_version(self, version_id: str) -> None:
        """Remove the version's objects (manifest first: a half-deleted version is never
        mistaken for a complete one)."""
        fs, base = self._fs()
        prefix = self._key(base, "versions", version_id)
        try:
            fs.delete_file(self._key(prefix, VersionFiles.MANIFEST))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RemoteError(f"deleting {version_id} on {self.shown} failed: {e}") from e
        try:
            fs.delete_dir(prefix)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RemoteError(f"deleting {version_id} on {self.shown} failed: {e}") from e

    def version_ids(self) -> set[str]:
        """Ids of the version folders on the remote (complete or not)."""
        import pyarrow.fs as pafs

        fs, base = self._fs()
        try:
            infos = fs.get_file_info(
                pafs.FileSelector(self._key(base, "versions"), allow_not_found=True)
            )
        except OSError as e:
            raise RemoteError(f"listing {self.shown} failed: {e}") from e
        return {Path(i.path).name for i in infos if i.type == pafs.FileType.Directory}

    # -- data snapshots ------------------------------------------------------------------

    def has_snapshot(self, snapshot_id: str) -> bool:
        """Whether the remote holds snapshot ``snapshot_id`` complete (its
        ``snapshot.json``, written last, is there)."""
        import pyarrow.fs as pafs

        fs, base = self._fs()
        key = self._key(base, "data", snapshot_id, SnapshotFiles.MANIFEST)
        try:
            return bool(fs.get_file_info(key).type == pafs.FileType.File)
        except OSError as e:
            raise RemoteError(f"reading {self.shown} failed: {e}") from e

    def upload_snapshot(self, snapshot_id: str, folder: Path) -> None:
        """Put the committed snapshot ``folder``: its tables, then ``SNAPSHOT_SUMS`` (the
        size and SHA-256 of every file, which a snapshot's own ``snapshot.json`` does not
        hold), then ``snapshot.json`` last; read every object back against the sums."""
        fs, base = self._fs()
        prefix = self._key(base, "data", snapshot_id)
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        sums = {
            n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)}
            for n in names
        }
        order = [n for n in names if n != SnapshotFiles.MANIFEST]
        try:
            fs.create_dir(prefix, recursive=True)
            for name in order:
                self._put(fs, folder / name, self._key(prefix, name))
            with fs.open_output_stream(self._key(prefix, SNAPSHOT_SUMS)) as dst:
                dst.write(json.dumps(sums, indent=1, sort_keys=True).encode())
            self._put(
                fs, folder / SnapshotFiles.MANIFEST, self._key(prefix, SnapshotFiles.MANIFEST)
            )
            for name, want in sums.items():
                if self._hash(fs, self._key(prefix, name)) != (want["sha256"], want["bytes"]):
                    raise StorageError(
                        f"snapshot {snapshot_id}: {name} read back from {self.shown} "
                        "with other bytes"
                    )
        except OSError as e:
            raise RemoteError(
                f"uploading snapshot {snapshot_id} to {self.shown} failed: {e}"
            ) from e
        log.info("uploaded snapshot %s (%d files) to %s", snapshot_id, len(names), self.shown)

    def fetch_snapshot(self, snapshot_id: str, dest: Path) -> None:
        """Download snapshot ``snapshot_id`` into the new folder ``dest``, every file
        checked against ``SNAPSHOT_SUMS``. Raises StorageError for a missing or damaged
        object, RemoteError for an unreachable store."""
        fs, base = self._fs()
        prefix = self._key(base, "data", snapshot_id)
        dest.mkdir(parents=True)
        try:
            with fs.open_input_stream(self._key(prefix, SNAPSHOT_SUMS)) as src:
                sums = json.loads(src.read())
            for name, want in sorted(sums.items()):
                validate_id("snapshot file", name)
                self._download(fs, self._key(prefix, name), dest / name)
                got = (sha256_file(dest / name), (dest / name).stat().st_size)
                if got != (want["sha256"], want["bytes"]):
                    raise StorageError(
                        f"snapshot {snapshot_id}: {name} on {self.shown} does not match its "
                        f"checksum ({got[0][:12]} vs {want['sha256'][:12]})"
                    )
        except FileNotFoundError as e:
            raise StorageError(f"snapshot {snapshot_id} is incomplete on {self.shown}: {e}") from e
        except (ValueError, KeyError, TypeError) as e:
            raise StorageError(
                f"snapshot {snapshot_id}: bad {SNAPSHOT_SUMS} on {self.shown}: {e}"
            ) from e
        except OSError as e:
            raise RemoteError(
                f"downloading snapshot {snapshot_id} from {self.shown} failed: {e}"
            ) from e
        fsync_dir(dest)

    # -- run reports ---------------------------------------------------------------------

    def upload_report(self, path: Path) -> str:
        """Put the HTML report ``path`` under ``reports/`` (one PUT, so readers see the old
        object or the new one, never half of it), read it back, and return its URL.
        A report is derived from a verified version, so a lost upload only costs a rerun
        of ``towerflow report``."""
        self._upload_checked(path, "reports", validate_id("report file", path.name))
        return f"{self.shown.rstrip('/')}/reports/{path.name}"

    # -- the items inbox -----------------------------------------------------------------

    def upload_inbox(self, path: Path) -> None:
        """Put the inbox file ``path`` (named by ``inbox_name``: its SHA-256 is in its
        name) under ``inbox/``, and read it back."""
        self._upload_checked(path, "inbox", path.name)

    def fetch_inbox(self, name: str, dest: Path) -> bool:
        """Download ``inbox/<name>`` to ``dest`` (atomically) if the remote holds it, after
        checking its bytes against the SHA-256 prefix in its name; False when absent.
        Raises StorageError for a damaged object or a name without a checksum."""
        validate_id("inbox file", name)
        want = inbox_checksum(name)
        if want is None:
            raise StorageError(f"inbox file {name!r} carries no checksum in its name")
        fs, base = self._fs()
        tmp = dest.with_name(f".{dest.name}.fetch-{os.getpid()}")
        try:
            self._download(fs, self._key(base, "inbox", name), tmp)
            if not sha256_file(tmp).startswith(want):
                raise StorageError(f"inbox file {name} on {self.shown} does not match its checksum")
            os.replace(tmp, dest)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise RemoteError(f"downloading {name} from {self.shown} failed: {e}") from e
        finally:
            tmp.unlink(missing_ok=True)
        return True

    # -- plumbing ------------------------------------------------------------------------

    def _upload_checked(self, path: Path, folder: str, name: str) -> None:
        """Put ``path`` as ``<folder>/<name>`` and read it back against the local bytes."""
        fs, base = self._fs()
        key = self._key(base, folder, name)
        try:
            fs.create_dir(self._key(base, folder), recursive=True)
            self._put(fs, path, key)
            if self._hash(fs, key) != (sha256_file(path), path.stat().st_size):
                raise StorageError(f"{name} read back from {self.shown} with other bytes")
        except OSError as e:
            raise RemoteError(f"uploading {name} to {self.shown} failed: {e}") from e

    @staticmethod
    def _put(fs: Any, path: Path, key: str) -> None:
        with open(path, "rb") as src, fs.open_output_stream(key, metadata={}) as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    @staticmethod
    def _hash(fs: Any, key: str) -> tuple[str, int]:
        h, size = hashlib.sha256(), 0
        with fs.open_input_stream(key) as src:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size

    @staticmethod
    def _download(fs: Any, key: str, path: Path) -> None:
        with fs.open_input_stream(key) as src, open(path, "wb") as dst:
            while chunk := src.read(_CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())


_SUM_CHARS: Final = 16  # hex characters of the SHA-256 an inbox file's name carries


def inbox_name(event_id_part: str, path: Path) -> str:
    """``<event>-<first 16 hex of the file's SHA-256><suffix>``: the name an items file
    gets in a remote store's inbox, so any machine can check what it downloads."""
    return f"{event_id_part}-{sha256_file(path)[:_SUM_CHARS]}{path.suffix.lower()}"


def inbox_checksum(name: str) -> str | None:
    """The SHA-256 prefix ``inbox_name`` put in ``name``, or None."""
    stem = name.split(".", 1)[0]
    digest = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    ok = len(digest) == _SUM_CHARS and all(c in "0123456789abcdef" for c in digest)
    return digest if ok else None
