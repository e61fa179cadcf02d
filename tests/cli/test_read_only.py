"""`towerflow versions`, `recommend`, `report` and the recall service behind `towerflow
api` work on a read-only store and change nothing in it; `rollback` fails with a clear
error (issue #14 item 5). How the store is made read-only as root:
`tests/storage/readonly.py`."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.conftest import Published
from tests.storage.readonly import child_json, python, read_only, tree

SERVICE = """
import json, sys
from core.store import open_store
from service import RecallService
service = RecallService(open_store(sys.argv[1]))
assert service.refresh() and service.recaller is not None
recs = service.recaller.recall(service.recaller.stored_user_id("1"), k=5).items
print(json.dumps({"version": service.recaller.version_id, "items": [r.item_id for r in recs]}))
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def test_read_commands_work_on_a_read_only_store(published: Published, tmp_path: Path) -> None:
    root, out, vid = tmp_path / "store", tmp_path / "out", published.version_id
    shutil.copytree(published.root, root)
    out.mkdir()
    before = tree(root)
    with read_only(root) as run:
        versions = child_json(run(_cli("versions", "--root", str(root), "--json")))
        recommend = run(_cli("recommend", "--user-id", "1", "--k", "5", "--root", str(root)))
        as_json = child_json(
            run(_cli("recommend", "--user-id", "1", "--k", "5", "--root", str(root), "--json"))
        )
        report = run(_cli("report", "--root", str(root), "--out", str(out)))
        served = child_json(run(python(SERVICE, str(root))))
        rollback = run(_cli("rollback", str(vid), "--root", str(root)))
        report_in_store = run(_cli("report", "--root", str(root)))
    assert tree(root) == before

    assert [(v["version_id"], v["is_current"]) for v in versions] == [(vid, True)]
    assert recommend.returncode == 0, recommend.stderr
    assert f"version {vid}" in recommend.stdout
    assert as_json["version"] == vid and len(as_json["items"]) == 5
    assert report.returncode == 0, report.stderr
    html = Path(report.stdout.strip())
    assert html.parent == out.resolve()
    assert f"Nightly run: published <code>{vid}</code>" in html.read_text(encoding="utf-8")
    assert served == {"version": vid, "items": [i["item_id"] for i in as_json["items"]]}

    # Writers: one clear line, no traceback, exit 6 (cli.errors: read-only / permission).
    assert rollback.returncode == 6 and "Traceback" not in rollback.stderr
    assert "read-only" in rollback.stderr and str(root) in rollback.stderr
    assert report_in_store.returncode == 6 and "Traceback" not in report_in_store.stderr
    assert "Read-only file system" in report_in_store.stderr
