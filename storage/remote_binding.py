"""Where a store's root lives: a local folder, or an object store (``s3://BUCKET/PREFIX``)
that each machine works on through a local cache bound to it (``<cache>/remote.json``).
Moving the bytes is ``storage.objectstore``'s job; this module only names the cache
and records, once, which remote it mirrors (the URL holds no credentials)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

from storage.fs import atomic_write_bytes
from storage.layout import Layout, validate_id
from storage.objectstore import RemoteError, RemoteStore

__all__ = ["bind_remote", "cache_root", "is_remote", "read_remote"]


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` is a URI (``s3://...``) rather than a local path."""
    return "://" in str(root) and not str(root).startswith("file://")


def cache_root(url: str, cache_dir: Path) -> Path:
    """The local cache folder of the remote store ``url`` under ``cache_dir``: one per
    scheme, bucket and prefix (query options, such as an endpoint, do not change it)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"store URL {url!r} must look like s3://BUCKET/PREFIX")
    names = [parts.scheme, parts.netloc, *[p for p in parts.path.split("/") if p]]
    for name in names:
        validate_id("store URL part", name)
    return cache_dir.expanduser().resolve().joinpath(*names)


def read_remote(layout: Layout) -> RemoteStore | None:
    """The remote store whose cache ``layout`` is, or None (a local store)."""
    path = layout.remote_binding
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RemoteError(f"{path}: cannot read the store's remote binding: {e}") from e
    url = raw.get("url") if isinstance(raw, dict) else None
    if not isinstance(url, str) or not is_remote(url):
        raise RemoteError(f"{path}: invalid remote binding {raw!r}")
    return RemoteStore(url)


def bind_remote(layout: Layout, url: str) -> RemoteStore:
    """Make ``layout`` the local cache of the remote store ``url`` (written once; the URL
    holds no credentials), or check that it is. Raises RemoteError for a cache of
    another remote, ValueError for a URL with credentials in it."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ValueError(
            f"store URL {parts.scheme}://{parts.hostname}...: put credentials in the "
            "environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...), not in the URL"
        )
    bound = read_remote(layout)
    if bound is not None:
        if bound.url != url:
            raise RemoteError(f"{layout.root} caches {bound.shown}, not {url.split('?', 1)[0]}")
        return bound
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(layout.remote_binding, json.dumps({"url": url}, indent=2).encode())
    return RemoteStore(url)
