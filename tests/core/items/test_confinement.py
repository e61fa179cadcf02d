"""An event's `path` names a file inside the store's inbox, or nothing is read: absolute
paths elsewhere, `..`, symlinks leading out (the file or a folder), the inbox itself,
directories and NUL bytes are refused whole with `UnsafeItemsPath`; the paths the CLI
sends (absolute, inside the inbox) and relative ones keep working. Whatever an items file
or item holds reaches reasons and logs only as a short, escaped excerpt."""

from __future__ import annotations

import json
import logging
import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import core.items
from core.events import event_payload
from core.items import apply_items, record_items
from core.items_validation import ItemsBatch, UnsafeItemsPath
from core.recall import Recaller
from storage import CatalogueLog, Layout, VersionStore
from tests.core.items.conftest import CONTENT_DIM, MakeStore, item
from tests.core.items.helpers import held_ids

SECRET = "TOP-SECRET-do-not-echo"


def _items_json(*items: object) -> str:
    return json.dumps(list(items))


@pytest.fixture
def read_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files `record_items` reads, in order."""
    calls: list[Path] = []
    real = core.items.read_items_file

    def spy(path: Path) -> list[Any]:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(core.items, "read_items_file", spy)
    return calls


def _outside(tmp_path: Path) -> Path:
    """A file outside the store whose items would be published, and whose second item
    would be quoted in a rejection, if it were read."""
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    evil = folder / "evil.json"
    evil.write_text(_items_json(item(9001), {**item(9002), "item_id": SECRET}))
    return evil


def _link(link: Path, target: Path | str, path: str) -> str:
    link.symlink_to(target)
    return path


def _folder(folder: Path, path: str) -> str:
    folder.mkdir()
    return path


# Each case: (inbox, outside file) -> the event's path; the reason it is refused.
HOSTILE: dict[str, tuple[Callable[[Path, Path], str], str]] = {
    "absolute-outside": (lambda inbox, evil: str(evil), "leads outside the inbox"),
    "dotdot-relative": (lambda inbox, evil: "../../outside/evil.json", "leads outside"),
    "dotdot-absolute": (lambda inbox, evil: f"{inbox}/../../outside/evil.json", "leads outside"),
    "symlinked-file": (
        lambda inbox, evil: _link(inbox / "link.json", evil, "link.json"),
        "leads outside",
    ),
    "symlinked-file-absolute": (
        lambda inbox, evil: _link(inbox / "link.json", evil, str(inbox / "link.json")),
        "leads outside",
    ),
    "symlinked-folder": (
        lambda inbox, evil: _link(inbox / "sub", evil.parent, "sub/evil.json"),
        "leads outside",
    ),
    "inbox-itself": (lambda inbox, evil: ".", "names the inbox itself"),
    "inbox-absolute": (lambda inbox, evil: str(inbox), "names the inbox itself"),
    "empty": (lambda inbox, evil: "", "names the inbox itself"),
    "directory": (lambda inbox, evil: _folder(inbox / "d.json", "d.json"), "not a regular file"),
    "nul-byte": (lambda inbox, evil: "evil.json\x00/../x.json", "NUL byte"),
}


@pytest.mark.parametrize("operation", ["create", "retire"])
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_path_leaving_the_inbox_is_refused_unread_and_nothing_changes(
    case: str,
    operation: str,
    make_store: MakeStore,
    tmp_path: Path,
    read_calls: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_store("Flat")
    root, parent = store.layout.root, store.current()
    inbox = Layout(root).inbox_dir
    inbox.mkdir()
    make_path, why = HOSTILE[case]
    path = make_path(inbox, _outside(tmp_path))
    batch = ItemsBatch(event_id=f"ev-{case}", operation=operation, path=path)  # type: ignore[arg-type]

    caplog.set_level(logging.DEBUG)
    with pytest.raises(UnsafeItemsPath, match=why) as raised:
        apply_items(str(root), batch)
    message = str(raised.value)
    assert f"ev-{case}" in message and repr(path)[:100] in message  # names event and path
    assert "\x00" not in message and len(message) < 1000
    assert read_calls == []  # nothing was opened
    assert SECRET not in message and SECRET not in caplog.text
    assert store.current() == parent
    assert not CatalogueLog(store.layout.catalogue_db).has_event(batch.event_id)
    # A redelivery is refused the same way (the event was not recorded as applied).
    with pytest.raises(UnsafeItemsPath, match=why):
        record_items(str(root), batch)


def _publishes(root: Path, path: str, n: int, item_ids: list[int], read_calls: list[Path]) -> None:
    store = VersionStore(Layout(root))
    parent = store.current()
    recorded, version = apply_items(str(root), ItemsBatch(event_id="ok", path=path))
    assert (recorded.accepted, recorded.rejected) == (n, 0)
    assert version == store.current() != parent
    assert set(item_ids) <= set(held_ids(Recaller.load(store)).tolist())
    assert len(read_calls) == 1


# Each case: inbox -> the event's path, after writing `new.json` (item 7001) into the inbox.
LEGIT: dict[str, Callable[[Path], str]] = {
    "relative": lambda inbox: "new.json",
    "absolute": lambda inbox: str(inbox / "new.json"),
    "dotdot-staying-inside": lambda inbox: _folder(inbox / "sub", "sub/../new.json"),
    "symlink-to-an-inbox-file": lambda inbox: _link(inbox / "l.json", "new.json", "l.json"),
    # The store reached through a symlinked folder (an operator's alias; /tmp on macOS).
    "absolute-via-symlinked-root": lambda inbox: _link(
        inbox.parent.parent / "alias",
        inbox.parent,
        str(inbox.parent.parent / "alias" / "inbox" / "new.json"),
    ),
}


@pytest.mark.parametrize("case", list(LEGIT))
def test_a_file_inside_the_inbox_is_read_and_published(
    case: str, make_store: MakeStore, read_calls: list[Path]
) -> None:
    root = make_store("Flat").layout.root
    inbox = Layout(root).inbox_dir
    inbox.mkdir()
    (inbox / "new.json").write_text(_items_json(item(7001)))
    _publishes(root, LEGIT[case](inbox), 1, [7001], read_calls)


def test_a_root_given_through_a_symlink_accepts_real_inbox_paths(
    make_store: MakeStore, tmp_path: Path, read_calls: list[Path]
) -> None:
    root = make_store("Flat").layout.root
    inbox = Layout(root).inbox_dir
    inbox.mkdir()
    (inbox / "new.json").write_text(_items_json(item(7004)))
    alias = Path(_link(tmp_path / "alias", root, str(tmp_path / "alias")))
    _publishes(alias, str(inbox / "new.json"), 1, [7004], read_calls)


def test_an_inbox_that_is_a_symlink_to_another_disk_is_fine(
    make_store: MakeStore, tmp_path: Path, read_calls: list[Path]
) -> None:
    root = make_store("Flat").layout.root
    disk = tmp_path / "big-disk"
    disk.mkdir()
    (disk / "new.json").write_text(_items_json(item(7002)))
    Layout(root).inbox_dir.symlink_to(disk)
    _publishes(root, "new.json", 1, [7002], read_calls)


def test_the_path_the_cli_sends_for_a_large_file_is_accepted(
    make_store: MakeStore, tmp_path: Path, read_calls: list[Path]
) -> None:
    root = make_store("Flat").layout.root
    items = [item(8000 + i) for i in range(501)]  # over the inline limit: sent by path
    source = tmp_path / "mine.json"
    source.write_text(_items_json(*items))
    payload = event_payload(root, "ok", source, items)
    assert Path(payload["path"]).is_absolute()
    _publishes(root, payload["path"], 501, [8000, 8500], read_calls)


def test_hostile_item_content_is_quoted_short_and_escaped(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store("Flat")
    forged = "x\nWARNING forged log line\r\x1b[31m| forged | row |\x00" + "A" * 10_000
    zeros = [0.0] * CONTENT_DIM
    hostile: list[object] = [
        {"item_id": forged, "category": 1, "content": zeros},
        {"item_id": -(10**1000), "category": 1, "content": zeros},
        {"item_id": 1, "category": 10**1000, "content": zeros},
        {"item_id": 2, "category": forged, "content": zeros},
        {"item_id": 3, "category": 1, "content": [10**400, *zeros[1:]]},
        {"item_id": 4, "category": 1, "content": [forged, *zeros[1:]]},
        {"item_id": np.arange(100).reshape(50, 2), "category": 1, "content": zeros},
        {**item(7003)},
    ]
    batch = ItemsBatch(event_id="hostile", items=hostile)
    rejected: list[Any] = []
    caplog.set_level(logging.DEBUG)
    recorded = record_items(
        str(store.layout.root), batch, on_rejected=lambda b, v: rejected.extend(v.rejected)
    )
    assert (recorded.accepted, recorded.rejected) == (1, len(hostile) - 1)
    shown = [r.reason for r in rejected] + [r.item_id or "" for r in rejected]
    shown += list(recorded.reasons)
    for text in shown:
        assert text.isprintable() and len(text) <= 160, text
        assert "forged log line" not in text or "\\n" in text  # quoted, newline escaped
    records = [r for r in caplog.records if "rejected item" in r.getMessage()]
    assert len(records) == len(hostile) - 1
    for r in records:
        assert r.getMessage().isprintable() and len(r.getMessage()) < 400, r.getMessage()


def test_a_hostile_retirement_id_is_quoted_short_and_escaped(make_store: MakeStore) -> None:
    store = make_store("Flat")
    batch = ItemsBatch(
        event_id="hostile-retire", operation="retire", items=["1\n2" * 5000, -(10**1000), 10]
    )
    rejected: list[Any] = []
    recorded = record_items(
        str(store.layout.root), batch, on_rejected=lambda b, v: rejected.extend(v.rejected)
    )
    assert (recorded.accepted, recorded.rejected) == (1, 2)
    for r in rejected:
        for text in (r.reason, r.item_id):
            assert text.isprintable() and len(text) <= 160, text


def test_a_parse_error_quoting_the_file_is_cut_and_escaped(make_store: MakeStore) -> None:
    root = make_store("Flat").layout.root
    inbox = Layout(root).inbox_dir
    inbox.mkdir()
    # pyarrow's CSV error quotes the bad row, here with a newline and an escape sequence.
    row = '"x\nERROR forged \x1b[31m' + SECRET * 50 + '",3'
    (inbox / "bad.csv").write_text(f'item_id,category,content\n1,2,"[1]"\n{row}\n')
    with pytest.raises(ValueError, match="cannot read items from") as raised:
        record_items(str(root), ItemsBatch(event_id="bad-csv", path="bad.csv"))
    message = str(raised.value)
    assert message.isprintable() and len(message) < 500, message
    printed = "".join(traceback.format_exception(raised.value))
    assert "\x1b" not in printed and printed.count(SECRET) <= 1  # no chained full message


def test_a_fifo_in_the_inbox_is_refused_without_blocking(
    make_store: MakeStore, read_calls: list[Path]
) -> None:
    root = make_store("Flat").layout.root
    inbox = Layout(root).inbox_dir
    inbox.mkdir()
    fifo = inbox / "pipe.json"
    os.mkfifo(fifo)  # reading it waits for a writer, forever if none comes
    stop = threading.Event()

    def writer() -> None:  # feeds a reader, if any opens it (so a failure cannot hang)
        while not stop.wait(0.05):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                continue
            os.write(fd, b"[]")
            os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(UnsafeItemsPath, match="not a regular file"):
            record_items(str(root), ItemsBatch(event_id="fifo", path="pipe.json"))
    finally:
        stop.set()
        thread.join()
    assert read_calls == []
