"""Which artifact store a command, flow or notebook uses, and opening it: one rule for the
root, one default for retention. Imports only ``storage``, so light commands such as
``towerflow versions`` need not load torch (``core.config`` re-exports ``resolve_root``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from storage import Layout, StorageSettings, VersionStore
from storage.database import bind_database
from storage.remote_binding import bind_remote, cache_root, is_remote
from storage.settings import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS

__all__ = [
    "DEFAULT_KEEP_ITEM_VERSIONS",
    "DEFAULT_KEEP_VERSIONS",
    "attach_database",
    "open_store",
    "resolve_root",
]


def resolve_root(option: str | Path | None, cfg_root: str | None = None) -> Path:
    """The artifact store root, absolute: a local folder, or for an object store
    (``s3://bucket/prefix``) this machine's cache of it (under ``$TOWERFLOW_CACHE_DIR``,
    bound to the remote on first use; see ``storage.remote_binding``).

    Precedence: an explicit ``--root`` option (or argument), then the config file's
    ``runtime.storage_root``, then ``$TOWERFLOW_ROOT``, then ``./.towerflow``.
    """
    env = StorageSettings()
    raw = str(option) if option is not None else (cfg_root or env.root)
    if raw.startswith("file://"):
        raw = urlsplit(raw).path
    if is_remote(raw):
        cache = cache_root(raw, env.cache_dir)
        bind_remote(Layout(cache), raw)
        return cache
    return Path(raw).expanduser().resolve()


def open_store(
    root: str | Path | None = None,
    keep_versions: int | None = None,
    *,
    cfg_root: str | None = None,
    keep_item_versions: int | None = None,
) -> VersionStore:
    """The version store at ``resolve_root(root, cfg_root)``, pruning to ``keep_versions``
    nightly and ``keep_item_versions`` item versions (None: ``$TOWERFLOW_KEEP_VERSIONS`` /
    ``$TOWERFLOW_KEEP_ITEM_VERSIONS``, else the defaults)."""
    env = StorageSettings()
    keep = keep_versions or env.keep_versions
    keep_items = env.keep_item_versions if keep_item_versions is None else keep_item_versions
    layout = Layout(resolve_root(root, cfg_root))
    attach_database(layout, env)
    return VersionStore(layout, keep, keep_items)


def attach_database(layout: Layout, env: StorageSettings | None = None) -> None:
    """Bind the store to ``$TOWERFLOW_DATABASE_URL``'s PostgreSQL database when it is set
    (``storage.database.bind_database``: once, no password written; an error if the store
    is bound elsewhere or keeps versions in its own SQLite registry). Unset: nothing; a
    store bound before keeps its binding."""
    url = (env or StorageSettings()).database_url
    if url is not None:
        bind_database(layout, url.get_secret_value())
