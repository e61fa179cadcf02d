"""`towerflow import` on the command line: the MovieLens-format data set imports end to end
("::", latin-1, no header), --config is equivalent to the options, and bad input exits 2
with a message."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner, Result

from bench.movielens_like import MovieLensFiles, MovieLensLikeConfig, write_movielens_like
from cli.importing import import_command
from core.dataio import load_dataset
from core.importing import load_id_map
from storage import CATEGORIES, Layout, list_snapshots, read_table

TINY = MovieLensLikeConfig(n_users=40, n_items=60, median_extra=5.0, seed=3)


def _invoke(args: Sequence[str]) -> Result:
    app = typer.Typer()
    app.command("import")(import_command)
    app.command("other")(lambda: None)  # two commands, so "import" is a subcommand
    return CliRunner().invoke(app, ["import", *args])


@pytest.fixture(scope="module")
def ml(tmp_path_factory: pytest.TempPathFactory) -> MovieLensFiles:
    return write_movielens_like(tmp_path_factory.mktemp("ml"), TINY)


def _ml_args(files: MovieLensFiles) -> list[str]:
    return [
        str(files.ratings),
        "--sep", "::", "--no-header", "--encoding", "latin-1",
        "--names", "user_id,item_id,rating,timestamp",
        "--time-col", "timestamp", "--rating-col", "rating", "--min-rating", "1",
        "--item-attrs", str(files.movies), "--item-names", "item_id,title,genres",
        "--item-key", "item_id", "--item-multi", "genres:|", "--category-col", "genres",
        "--user-attrs", str(files.users), "--user-names", "user_id,gender,age,occupation,zip",
        "--user-key", "user_id", "--user-categorical", "gender,age", "--user-categorical",
        "occupation",
    ]  # fmt: skip


def test_movielens_like_imports_end_to_end(ml: MovieLensFiles, tmp_path: Path) -> None:
    root = tmp_path / "store"
    result = _invoke([*_ml_args(ml), "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["reused"] is False and out["snapshot_id"] == out["ref"]["snapshot_id"]
    report = out["report"]
    assert report["id_mapping"] == {"user": "identity", "item": "identity"}
    assert report["timestamps"] == "unix" and report["n_interactions"] == ml.n_ratings
    assert [f["invalid"] for f in report["files"]] == [{}, {}, {}]

    folder = Layout(root).snapshot_dir(out["ref"]["snapshot_id"])
    data = load_dataset(folder)
    assert (data.n_users, data.n_items, len(data.inter_user)) == (40, 60, ml.n_ratings)
    assert data.content.shape[1] == len(report["item_features"]) <= 18  # genre multi-hot
    assert (data.content.sum(1) >= 1).all()  # every movie has at least one genre
    names = read_table(folder / CATEGORIES.file_name, CATEGORIES).column("name").to_pylist()
    movies = [m.split("::") for m in ml.movies.read_text(encoding="latin-1").splitlines()]
    first_genre = {int(m[0]): m[2].split("|")[0] for m in movies}
    assert [names[c] for c in data.category] == [first_genre[i] for i in data.item_id.tolist()]
    assert any(not m[1].isascii() for m in movies)  # latin-1 titles read fine
    assert np.bincount(data.inter_user).min() >= 20  # ML-1M: every user rated >= 20
    lines = ml.ratings.read_text(encoding="latin-1").splitlines()
    assert len(lines) == ml.n_ratings
    first = [int(v) for v in lines[0].split("::")]
    ids = load_id_map(folder, "item").to_ids([str(first[1])])
    assert ids.tolist() == [first[1]]  # identity: stored IDs are the raw MovieIDs

    again = _invoke([*_ml_args(ml), "--root", str(root)])
    assert again.exit_code == 0 and again.stdout.startswith(
        f"reused snapshot {out['ref']['snapshot_id']}"
    )


def test_config_file_is_the_same_import(ml: MovieLensFiles, tmp_path: Path) -> None:
    read = {"sep": "::", "header": False, "encoding": "latin-1"}
    config = {
        "interactions": {
            "path": str(ml.ratings),
            "read": {**read, "names": ["user_id", "item_id", "rating", "timestamp"]},
            "time_col": "timestamp",
            "rating_col": "rating",
            "min_rating": 4,
        },
        "items": {
            "path": str(ml.movies),
            "read": {**read, "names": ["item_id", "title", "genres"]},
            "key": "item_id",
            "multi": {"genres": "|"},
        },
        "k_core": 2,
    }
    path = tmp_path / "import.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    root = str(tmp_path / "store")
    by_file = _invoke(["--config", str(path), "--root", root, "--json"])
    assert by_file.exit_code == 0, by_file.output
    by_options = _invoke(
        [
            str(ml.ratings), "--sep", "::", "--no-header", "--encoding", "latin-1",
            "--names", "user_id,item_id,rating,timestamp", "--time-col", "timestamp",
            "--rating-col", "rating", "--min-rating", "4", "--item-attrs", str(ml.movies),
            "--item-names", "item_id,title,genres", "--item-key", "item_id",
            "--item-multi", "genres:|", "--k-core", "2", "--root", root, "--json",
        ]
    )  # fmt: skip
    assert by_options.exit_code == 0, by_options.output
    file_out, options_out = json.loads(by_file.stdout), json.loads(by_options.stdout)
    assert options_out["reused"] and options_out["ref"] == file_out["ref"]
    assert file_out["report"]["files"][0]["filtered"]["below_min_rating"]["count"] > 0


def test_bad_rows_exit_2_in_strict_mode_and_lenient_drops_them(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    log.write_text("u\ti\tt\n1\t2\t10\n1\tx\tlater\n\t3\t12\n2\t3\t13\n", encoding="utf-8")
    root = tmp_path / "store"
    args = [str(log), "--user-col", "u", "--item-col", "i", "--time-col", "t", "--root", str(root)]
    strict = _invoke(args)
    assert strict.exit_code == 2
    assert "bad_timestamp (rows 3)" in strict.output and "missing_user (rows 4)" in strict.output
    assert list_snapshots(Layout(root)) == []
    lenient = _invoke([*args, "--lenient"])
    assert lenient.exit_code == 0, lenient.output
    assert "2 users, 2 items, 2 interactions" in lenient.stdout
    assert "invalid bad_timestamp: 1 (rows 3)" in lenient.stdout
    folder = Layout(root).snapshot_dir(list_snapshots(Layout(root))[0])
    assert load_id_map(folder, "item").raw.tolist() == ["2", "3"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the interaction log file"),
        (["log.csv", "--item-key", "id"], "need the attribute file option"),
        (["log.csv", "--item-attrs", "i.csv", "--item-key", "id", "--item-multi", "genres"],
         "expected COLUMN:SEPARATOR"),
        (["log.csv", "--min-rating", "3"], "min_rating needs rating_col"),
        (["missing.csv"], "missing.csv: interactions file not found"),
        (["--config", "c.yaml", "--k-core", "2"], "--config replaces the file and column options"),
    ],
)  # fmt: skip
def test_bad_options_exit_2_with_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "log.csv").write_text("user_id,item_id\n1,2\n", encoding="utf-8")
    result = _invoke([*args, "--root", str(tmp_path / "store")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
