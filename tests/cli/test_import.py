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
    # Plain click error output: a rich panel would cut long messages to the terminal width.
    app = typer.Typer(rich_markup_mode=None)
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
            "--items-sep", "::", "--item-multi", "genres:|", "--k-core", "2", "--root", root,
            "--json",
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


def test_a_missing_log_exits_not_found(tmp_path: Path) -> None:
    result = _invoke([str(tmp_path / "missing.csv"), "--root", str(tmp_path / "store")])
    assert result.exit_code == 3
    assert "missing.csv: interactions file not found" in " ".join(result.output.split())


def _ml100k(tmp_path: Path) -> tuple[Path, Path]:
    """MovieLens-100K's layout: u.data tab-separated, u.item '|'-separated latin-1."""
    data, item = tmp_path / "u.data", tmp_path / "u.item"
    data.write_text("".join(f"{u}\t{i}\t4\t{881250949 + u + i}\n" for u in (1, 2) for i in (1, 2)))
    movies = ["1|Toy Story (1995)|01-Jan-1995||http://a|0|1", "2|Amélie (2001)||x|http://b|1|1"]
    item.write_bytes(("\n".join([*movies, "3|Heat (1995)|01-Jan-1995||http://c|1|0"]) + "\n")
                     .encode("latin-1"))  # fmt: skip
    return data, item


def test_log_separator_does_not_apply_to_attribute_files(tmp_path: Path) -> None:
    data, item = _ml100k(tmp_path)
    args = [
        str(data), "--sep", "\\t", "--no-header", "--encoding", "latin-1", "--user-col", "1",
        "--item-col", "2", "--time-col", "4", "--item-attrs", str(item), "--item-key", "1",
        "--item-categorical", "6,7", "--root", str(tmp_path / "store"), "--json",
    ]  # fmt: skip
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["report"]
    assert report["n_items"] == 3 and report["id_mapping"]["item"] == "identity"  # no phantoms
    assert report["item_features"] == ["6=0", "6=1", "7=0", "7=1"]
    one_column = _invoke([*args, "--items-sep", "\\t"])
    assert one_column.exit_code == 2
    assert "u.item: every line reads as one column" in one_column.output
    assert "looks '|'-separated" in one_column.output


def test_per_file_read_options_and_timestamp_unit(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text('u,i,t\n1,"a,1",1600000000000\n2,b,1600000001000\n', encoding="utf-8")
    items = tmp_path / "items.txt"
    items.write_bytes("id;genre\na,1;Comédie\nb;Drame\n".encode("latin-1"))
    args = [
        str(log), "--user-col", "u", "--item-col", "i", "--time-col", "t",
        "--item-attrs", str(items), "--item-key", "id", "--item-categorical", "genre",
        "--item-encoding", "latin-1", "--root", str(tmp_path / "store"), "--json",
    ]  # fmt: skip
    result = _invoke([*args, "--timestamp-unit", "ms"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["report"]
    assert report["timestamp_unit"] == "ms" and report["n_items"] == 2
    assert report["item_features"] == ["genre=Comédie", "genre=Drame"]  # ';' sniffed
    seconds = _invoke([*args, "--timestamp-unit", "s"])
    assert seconds.exit_code == 2 and "2 x timestamp_out_of_range (rows 2, 3)" in seconds.output
    unquoted = _invoke([*args[:-1], "--quote", "none", "--lenient"])
    assert unquoted.exit_code == 0, unquoted.output
    assert "invalid wrong_field_count: 1 (rows 2)" in unquoted.stdout
    lonely = _invoke([str(log), "--user-sep", ";", "--root", str(tmp_path / "store")])
    assert lonely.exit_code == 2 and "need the attribute file option --user-attrs" in lonely.output


BAD_FILES: dict[str, bytes] = {
    "empty": b"",
    "header_only": b"user_id,item_id\n",
    "blank_only": b"\n\n  \n",
    "binary": bytes(range(256)) * 8,
    "nul_ids": b"user_id,item_id\n\x00,\x00\n1,2\n",
    "wrong_fields": b"user_id,item_id\n1\n1,2,3\n1,2\n",
    "open_quote_at_end": b'user_id,item_id\n1,2\n3,"4\n5,6\n',
    "undecodable": b"user_id,item_id\n1,\xff\xfe\n1,2\n",
    "cr_only": b"user_id,item_id\r1,2\r3,4\r",
    "bom_crlf": b"\xef\xbb\xbfuser_id,item_id\r\n1,2\r\n",
    "dup_header": b"user_id,user_id,item_id\n1,2,3\n",
    "huge_id": b"user_id,item_id\n" + b"9" * 100_000 + b",1\n1,2\n",
    "one_column": b"user_id|item_id\n1|2\n",
    "no_newline_at_end": b"user_id,item_id\n1,2",
}


@pytest.mark.parametrize("mode", ["--strict", "--lenient"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_never_ends_in_a_traceback(tmp_path: Path, name: str, mode: str) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(BAD_FILES[name])
    result = _invoke([str(log), mode, "--root", str(tmp_path / "store")])
    assert result.exit_code in (0, 2), result.output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)  # type: ignore[arg-type]
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "log.csv" in result.output  # names the file
