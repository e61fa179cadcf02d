"""Exceptions raised by `storage`: one type per failure a caller may want to handle."""

from __future__ import annotations

__all__ = [
    "CorruptVersionError",
    "NoCurrentVersionError",
    "PublishConflictError",
    "SchemaError",
    "SnapshotNotFoundError",
    "StorageError",
    "StoreReadOnlyError",
    "VersionNotFoundError",
]


class StorageError(Exception):
    """Base class of every error `storage` raises on purpose."""


class SchemaError(StorageError, ValueError):
    """A table (in memory or on disk) does not match its `TableSpec`."""


class PublishConflictError(StorageError):
    """CURRENT was not what the caller expected, so the compare-and-swap did not happen."""

    def __init__(self, expected: str | None, actual: str | None, new: str) -> None:
        self.expected = expected
        self.actual = actual
        self.new = new
        super().__init__(
            f"cannot move CURRENT to {new!r}: expected CURRENT to be {expected!r} "
            f"but it is {actual!r} (another publisher or rollback won the race)"
        )

    def __reduce__(self) -> tuple[type[PublishConflictError], tuple[str | None, str | None, str]]:
        # Pickle (e.g. across Prefect task or process boundaries) by the constructor's args.
        return type(self), (self.expected, self.actual, self.new)


class CorruptVersionError(StorageError):
    """A published version's files are missing or do not match its manifest."""

    def __init__(self, version_id: str, file: str | None, reason: str) -> None:
        self.version_id = version_id
        self.file = file
        self.reason = reason
        where = f" file {file!r}" if file else ""
        super().__init__(f"version {version_id!r}{where}: {reason}")

    def __reduce__(self) -> tuple[type[CorruptVersionError], tuple[str, str | None, str]]:
        return type(self), (self.version_id, self.file, self.reason)


class StoreReadOnlyError(StorageError, PermissionError):
    """A write hit a store this process cannot write (a read-only mount, or files it may
    not change). Permanent: retrying does not help. Reads of such a store still work."""

    def __init__(self, path: object, detail: str = "") -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(
            f"cannot write {self.path}: the store is read-only" + (f" ({detail})" if detail else "")
        )

    def __reduce__(self) -> tuple[type[StoreReadOnlyError], tuple[str, str]]:
        # Pickle (e.g. across Prefect task boundaries) by the constructor's arguments.
        return type(self), (self.path, self.detail)


class VersionNotFoundError(StorageError, LookupError):
    """No registered version has the requested id."""


class NoCurrentVersionError(StorageError, LookupError):
    """CURRENT names no version yet (nothing was ever published)."""


class SnapshotNotFoundError(StorageError, FileNotFoundError):
    """No committed data snapshot has the requested id."""
