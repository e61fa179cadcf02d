"""The MovieLens-format generator writes ML-1M's files: "::"-separated, latin-1, every user
with >= 20 ratings in 1..5, long-tailed popularity and activity, deterministic by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.movielens_like import GENRES, MovieLensLikeConfig, main, write_movielens_like

SMALL = MovieLensLikeConfig(n_users=400, n_items=300, seed=1)


def _ratings(path: Path) -> np.ndarray:
    lines = path.read_text(encoding="latin-1").splitlines()
    return np.array([line.split("::") for line in lines], dtype=np.int64)


def test_files_follow_the_ml1m_format(tmp_path: Path) -> None:
    files = write_movielens_like(tmp_path, SMALL)
    r = _ratings(files.ratings)
    assert r.shape == (files.n_ratings, 4)
    user, item, rating, ts = r.T
    assert set(np.unique(user)) == set(range(1, SMALL.n_users + 1))
    assert np.bincount(user)[1:].min() >= 20 and set(np.unique(rating)) == {1, 2, 3, 4, 5}
    assert len({(u, i) for u, i in zip(user, item, strict=True)}) == len(user)  # no repeats
    assert 300 * 86_400 < ts.max() - ts.min() <= 2 * 365 * 86_400

    movies = [m.split("::") for m in files.movies.read_text(encoding="latin-1").splitlines()]
    assert len(movies) == SMALL.n_items and set(item) <= {int(m[0]) for m in movies}
    assert all(set(m[2].split("|")) <= set(GENRES) and m[1].endswith(")") for m in movies)
    assert any(not m[1].isascii() for m in movies)  # e.g. "Amélie (1998)"
    users = [u.split("::") for u in files.users.read_text(encoding="latin-1").splitlines()]
    assert {u[1] for u in users} == {"M", "F"} and all(len(u[4]) == 5 for u in users)

    # Long tails: the top 10% of movies take a large share, a few users are very active.
    counts = np.sort(np.bincount(item))[::-1]
    assert counts[: SMALL.n_items // 10].sum() > 0.3 * len(item)
    activity = np.bincount(user)[1:]
    assert activity.max() > 3 * np.median(activity)


def test_seeded_and_deterministic(tmp_path: Path) -> None:
    a = write_movielens_like(tmp_path / "a", MovieLensLikeConfig(n_users=30, n_items=50, seed=4))
    b = write_movielens_like(tmp_path / "b", MovieLensLikeConfig(n_users=30, n_items=50, seed=4))
    c = write_movielens_like(tmp_path / "c", MovieLensLikeConfig(n_users=30, n_items=50, seed=5))
    assert a.ratings.read_bytes() == b.ratings.read_bytes()
    assert a.movies.read_bytes() == b.movies.read_bytes()
    assert a.ratings.read_bytes() != c.ratings.read_bytes()


def test_command_line(tmp_path: Path) -> None:
    assert main([str(tmp_path), "--users", "30", "--items", "50", "--seed", "2"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"ratings.dat", "movies.dat", "users.dat"}
