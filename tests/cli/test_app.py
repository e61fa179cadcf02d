"""The `towerflow` command line against a store the session published (see conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.options import PREFECT_DEFAULTS
from core.config import NightlyConfig, load_config, resolve_root
from core.metrics_text import metrics_table
from storage import Layout, VersionFiles, VersionStore, read_table
from storage.schemas import VERSION_ITEMS
from tests.conftest import Published

runner = CliRunner()


@pytest.mark.parametrize(
    "command", ["run", "recommend", "versions", "rollback", "evaluate", "import"]
)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "--json" in result.stdout


def test_load_config_reads_yaml_and_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("data:\n  scale: tiny\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, {"train.epochs": 5, "data.seed": None})
    assert cfg.data.scale == "tiny" and cfg.train.epochs == 5 and cfg.data.seed == 42


def test_load_config_names_the_file_and_the_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml[\s\S]*train\.epochs"):
        load_config(path, {})
    with pytest.raises(ValueError, match="unknown scale"):
        load_config(None, {"data.scale": "galactic"})


def test_no_command_module_imports_the_app_and_python_m_cli_works() -> None:
    """cli.app registers the commands; they share cli.options (no import cycle)."""
    import ast

    for module in (Path(__file__).parents[2] / "cli").glob("*.py"):
        if module.name in {"app.py", "__main__.py"}:
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "cli.app" not in imported, module.name
    assert "bench" not in {c.name for c in app.registered_commands}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "recommend" in result.stdout and "bench" not in result.stdout


def test_resolve_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--root > the config file's runtime.storage_root > $TOWERFLOW_ROOT > ./.towerflow."""
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOWERFLOW_ROOT", raising=False)
    assert resolve_root(None, None) == tmp_path / ".towerflow"
    monkeypatch.setenv("TOWERFLOW_ROOT", "env-root")
    assert resolve_root(None, None) == tmp_path / "env-root"
    assert resolve_root(None, "cfg-root") == tmp_path / "cfg-root"
    assert resolve_root(Path("opt-root"), "cfg-root") == tmp_path / "opt-root"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root(Path("~/r"), None) == tmp_path / "home" / "r"


class _Stop(Exception):
    """Raised by the fakes below once they have seen where a command would store."""


@pytest.mark.parametrize(
    ("option", "in_file", "expected"),
    [("opt", "cfg", "opt"), (None, "cfg", "cfg"), (None, None, "env")],
)
def test_run_and_evaluate_resolve_the_root_the_same_way(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    option: str | None,
    in_file: str | None,
    expected: str,
) -> None:
    tmp_path = tmp_path.resolve()
    for key in PREFECT_DEFAULTS:  # `run` sets them; restore them after the test
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)
    monkeypatch.setenv("TOWERFLOW_ROOT", str(tmp_path / "env"))
    seen: dict[str, Path] = {}

    def nightly(cfg: NightlyConfig) -> str:
        # The flow resolves a None storage_root from the environment, as resolve_root does.
        seen["run"] = resolve_root(None, cfg.runtime.storage_root)
        raise _Stop

    def run_ablation(cfg: NightlyConfig, variants: Any, root: str, threads: Any) -> Any:
        seen["evaluate"] = Path(root)
        raise _Stop

    ablation = types.SimpleNamespace(
        Variant=lambda name: name, ladder=list, render_table=str, run_ablation=run_ablation
    )
    monkeypatch.setitem(sys.modules, "flows.nightly", types.SimpleNamespace(nightly=nightly))
    monkeypatch.setitem(sys.modules, "core.ablation", ablation)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"runtime:\n  storage_root: {tmp_path / 'cfg'}\n" if in_file else "{}\n")
    args = ["--config", str(config), "--json"]
    args += ["--root", str(tmp_path / option)] if option else []
    for command in ("run", "evaluate"):
        result = runner.invoke(app, [command, *args])
        # Reported by cli.errors as an unexpected error (exit 1), in JSON for --json.
        assert json.loads(result.stdout)["error"]["type"] == "_Stop", result.output
    assert seen == {"run": tmp_path / expected, "evaluate": tmp_path / expected}


def test_metrics_table_orders_rankers_and_metrics() -> None:
    rankers = {
        "popularity": {"recall@50": 0.1, "ndcg@10": 0.05, "recall@10": 0.02, "coverage": 1.0},
        "model": {"recall@50": 0.3, "ndcg@10": 0.2, "recall@10": 0.1, "coverage": 0.5},
    }
    lines = metrics_table({"rankers": rankers}).splitlines()
    assert lines[0].split() == ["ranker", "recall@10", "recall@50", "ndcg@10"]
    assert lines[1].split() == ["model", "0.1000", "0.3000", "0.2000"]
    assert lines[2].startswith("popularity")


def test_run_rejects_a_bad_config_before_doing_anything(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--scale", "galactic", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown scale" in result.stderr
    assert not (tmp_path / "versions").exists()


@pytest.mark.prefect
def test_recommend_json_prints_k_real_item_ids(published: Published) -> None:
    result = runner.invoke(
        app, ["recommend", "--user-id", "1", "--k", "10", "--root", str(published.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["version"] == published.version_id
    ids = [r["item_id"] for r in out["items"]]
    scores = [r["score"] for r in out["items"]]
    assert len(ids) == len(set(ids)) == 10
    version = VersionStore(Layout(published.root)).open_current()
    catalogue = set(
        read_table(version.file(VersionFiles.ITEMS), VERSION_ITEMS).column("item_id").to_pylist()
    )
    assert set(ids) <= catalogue
    assert scores == sorted(scores, reverse=True)


@pytest.mark.prefect
def test_recommend_unknown_user_is_a_clear_error(published: Published) -> None:
    result = runner.invoke(
        app, ["recommend", "--user-id", "987654321", "--root", str(published.root)]
    )
    assert result.exit_code == 3
    assert "user 987654321 is not in version" in result.stderr


def test_recommend_without_a_published_version_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["recommend", "--user-id", "1", "--root", str(tmp_path)])
    assert result.exit_code == 3
    assert "error: nothing published yet" in result.stderr


@pytest.mark.prefect
def test_versions_and_rollback(published: Published, tmp_path: Path) -> None:
    # Work on a copy so other tests keep seeing the session's store unchanged.
    import shutil

    root = tmp_path / "store"
    shutil.copytree(published.root, root)
    store = VersionStore(Layout(root))
    run = runner.invoke(
        app, ["run", "--scale", "tiny", "--epochs", "2", "--root", str(root), "--json"]
    )
    assert run.exit_code == 0, run.output
    newer = json.loads(run.stdout.strip().splitlines()[-1])["version"]
    listed = json.loads(runner.invoke(app, ["versions", "--root", str(root), "--json"]).stdout)
    assert [v["version_id"] for v in listed] == [newer, published.version_id]
    assert [v["is_current"] for v in listed] == [True, False]

    back = runner.invoke(app, ["rollback", published.version_id, "--root", str(root), "--json"])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout) == {"previous": newer, "current": published.version_id}
    assert store.current() == published.version_id

    missing = runner.invoke(app, ["rollback", "v-does-not-exist", "--root", str(root)])
    assert missing.exit_code == 3
    assert "v-does-not-exist" in missing.stderr
    assert store.current() == published.version_id


def test_evaluate_ablation_prints_one_table_with_every_variant_and_baseline(
    tmp_path: Path,
) -> None:
    out = tmp_path / "ablation.md"
    result = runner.invoke(
        app,
        [
            "evaluate", "--ablation", "--scale", "tiny", "--epochs", "1", "--root",
            str(tmp_path / "store"), "--uniform-negatives", "32", "--history-len", "4",
            "--hard", "2", "--out", str(out), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    res = json.loads(result.output)
    expected = {
        "bce pointwise", "in-batch softmax", "+ logQ", "+ item bias", "+ mixed negatives",
        "+ wide", "full softmax", "+ history", "linear", "hybrid", "+ hard negatives",
        "popularity", "ease", "oracle",
    }  # fmt: skip
    assert set(res["rankers"]) == expected
    assert all(0.0 <= r["recall@50"] <= 1.0 for r in res["rankers"].values())
    # The trained variants beat popularity; the table and its JSON were written.
    assert res["rankers"]["+ logQ"]["recall@50"] > res["rankers"]["popularity"]["recall@50"]
    table = out.read_text()
    assert "| + history |" in table and "| linear |" in table and "of oracle R@50" in table
    assert "| hybrid |" in table
    # The rung to deploy is the argmax of validation (never of test), in JSON and table.
    scores = {r["name"]: r["validation"] for r in res["runs"]}
    assert res["chosen"] == max(scores, key=lambda name: scores[name])
    assert f"): `{res['chosen']}`; its test Recall@10" in table
    assert json.loads(out.with_suffix(".json").read_text())["protocol"] == "temporal"


def test_evaluate_rejects_a_bad_protocol(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--protocol", "sideways", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "protocol" in result.output


def test_report_writes_one_self_contained_html_file(published: Published, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    result = runner.invoke(
        app, ["report", published.version_id, "--root", str(published.root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out.resolve())
    html = out.read_text()
    assert f"Nightly run: published <code>{published.version_id}</code>" in html
    for heading in ("Training", "Quality", "Cold start", "Index", "History"):
        assert f"<h2>{heading}</h2>" in html, heading
    assert html.count('<img src="data:image/png;base64,') == 3
    assert "<link" not in html and "<script" not in html  # nothing to fetch


def test_report_defaults_to_current_under_the_store(published: Published) -> None:
    result = runner.invoke(app, ["report", "--root", str(published.root)])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    current = VersionStore(Layout(published.root)).current()
    assert path == Layout(published.root).reports_dir / f"{current}.html" and path.is_file()


def test_report_of_an_unknown_version_is_a_clear_error(published: Published) -> None:
    result = runner.invoke(app, ["report", "v-nope", "--root", str(published.root)])
    assert result.exit_code == 3
    assert "cannot read the report of v-nope" in result.output


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ("api", ["[default: 127.0.0.1]", "[default: 8000]", "[default: 0.5]", "[default: 1]"]),
        ("recommend", ["[default: 10; 1<=x<=1000]", "[default: exclude-seen]"]),
    ],
)
def test_help_shows_the_defaults_written_in_help_texts(command: str, defaults: list[str]) -> None:
    """A "[default: X]" inside a help string is text, not a markup tag to drop."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in defaults:
        assert text in result.stdout, (command, text)
