"""A MovieLens-1M-format data set from a latent-factor process of its own, for exercising
``towerflow import`` on a common public format without downloading anything.

    python -m bench.movielens_like OUT_DIR [--users 3000 --items 2500 --seed 0]

Writes, latin-1 encoded and "::"-separated like ML-1M:
``ratings.dat`` (UserID::MovieID::Rating::Timestamp), ``movies.dat``
(MovieID::Title::Genres, genres "|"-joined from ML's 18) and ``users.dat``
(UserID::Gender::Age::Occupation::Zip-code). Seeded and deterministic (numpy only).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "GENRES",
    "MovieLensFiles",
    "MovieLensLikeConfig",
    "import_config",
    "main",
    "write_movielens_like",
]

log = logging.getLogger("bench.movielens_like")

GENRES: Final = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
# Relative genre prevalence, roughly ML-1M's (Drama and Comedy dominate).
_GENRE_WEIGHT: Final = np.array(
    [5, 3, 1, 2, 12, 2, 1, 16, 1, 0.5, 3, 1, 1, 5, 2, 5, 1, 0.7], np.float64
)
_AGES: Final = np.array([1, 18, 25, 35, 45, 50, 56], np.int64)
_AGE_P: Final = np.array([0.04, 0.18, 0.35, 0.2, 0.09, 0.08, 0.06])
_WORDS: Final = (
    "Night", "Return", "Love", "City", "Last", "Dark", "Summer", "River", "Secret", "King",
    "Game", "Road", "Star", "Blood", "Heart", "Dream", "Storm", "Island", "Ghost", "Garden",
)  # fmt: skip
# Non-ASCII latin-1 titles, as in ML-1M's foreign films.
_LATIN1_TITLES: Final = (
    "Amélie", "Café au lait", "Señor Mañana", "Über alles", "Garçon", "Noël", "Smörgåsbord",
    "La Vérité", "Déjà vu", "Niño", "Fräulein", "Crème brûlée",
)  # fmt: skip
_T0: Final = 956_703_932  # 2000-04-25, ML-1M's first rating
_TWO_YEARS: Final = 2 * 365 * 86_400


@dataclass(frozen=True)
class MovieLensLikeConfig:
    """Size and seed of a generated data set (defaults: ~170k ratings, a few seconds)."""

    n_users: int = 3000
    n_items: int = 2500
    min_ratings: int = 20  # every user rates at least this many movies, like ML-1M
    median_extra: float = 25.0  # median of the long-tailed (log-normal) extra ratings per user
    seed: int = 0


@dataclass(frozen=True)
class MovieLensFiles:
    """Paths of the written files and the counts in them."""

    ratings: Path
    movies: Path
    users: Path
    n_users: int
    n_items: int
    n_ratings: int


def _genres(rng: np.random.Generator, n: int) -> npt.NDArray[np.bool_]:
    """(n, 18) genre flags: 1-3 genres per movie, prevalence like ML-1M."""
    has = np.zeros((n, len(GENRES)), bool)
    k = rng.choice([1, 2, 3], size=n, p=[0.5, 0.35, 0.15])
    p = _GENRE_WEIGHT / _GENRE_WEIGHT.sum()
    for i in range(n):
        has[i, rng.choice(len(GENRES), size=k[i], replace=False, p=p)] = True
    return has


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    years = rng.integers(1919, 2001, n)
    words = rng.integers(0, len(_WORDS), (n, 2))
    latin = rng.random(n) < 0.03
    names = [
        _LATIN1_TITLES[i % len(_LATIN1_TITLES)] if latin[i] else f"{_WORDS[a]} {_WORDS[b]}"
        for i, (a, b) in enumerate(words)
    ]
    return [f"{name} ({year})" for name, year in zip(names, years, strict=True)]


def write_movielens_like(out_dir: Path, cfg: MovieLensLikeConfig | None = None) -> MovieLensFiles:
    """Generate a data set for ``cfg`` and write ratings.dat, movies.dat, users.dat.

    The process: each user has genre affinities (a shared base plus weak gender and age
    offsets), a rating bias and an activity level; each movie has genres, a quality and a
    long-tailed popularity. A user's movies are drawn without replacement with log-weights
    popularity + affinity (Gumbel top-k); ratings are bias + quality + affinity + noise,
    rounded into 1..5; times are spread over the user's own active span within two years.
    """
    cfg = cfg or MovieLensLikeConfig()
    if cfg.n_items < cfg.min_ratings * 2:
        raise ValueError(f"need n_items >= {cfg.min_ratings * 2}, got {cfg.n_items}")
    rng = np.random.default_rng(cfg.seed)
    n_u, n_i, n_g = cfg.n_users, cfg.n_items, len(GENRES)
    # Movie IDs with gaps, like ML-1M (3883 movies numbered up to 3952).
    movie_id = np.sort(rng.choice(int(n_i * 1.05) + 10, size=n_i, replace=False)) + 1
    genres = _genres(rng, n_i)
    quality = rng.normal(0, 0.45, n_i)
    log_pop = rng.normal(0, 1.3, n_i) + 0.5 * quality  # good films are also seen more

    gender = np.where(rng.random(n_u) < 0.72, "M", "F")
    age_idx = rng.choice(len(_AGES), size=n_u, p=_AGE_P)
    occupation = rng.integers(0, 21, n_u)
    zipcode = [f"{z:05d}" for z in rng.integers(1000, 99_999, n_u)]
    gender_off = rng.normal(0, 0.4, n_g) * np.where(gender == "F", 1.0, -1.0)[:, None]
    age_off = rng.normal(0, 0.3, (len(_AGES), n_g))[age_idx]
    taste = rng.normal(0, 0.8, (n_u, n_g)) + gender_off + age_off  # (U, G)
    bias = rng.normal(0, 0.35, n_u)

    affinity = (taste @ genres.T.astype(np.float64)) / np.sqrt(genres.sum(1))  # (U, I)
    n_rate = cfg.min_ratings + np.floor(rng.lognormal(np.log(cfg.median_extra), 1.0, n_u))
    n_rate = np.minimum(n_rate, n_i // 2).astype(np.int64)
    gumbel = -np.log(-np.log(rng.random((n_u, n_i))))
    ranked = np.argsort(-(log_pop + affinity + gumbel), axis=1)
    users = np.repeat(np.arange(n_u), n_rate)
    items = np.concatenate([ranked[u, : n_rate[u]] for u in range(n_u)])
    score = 3.5 + bias[users] + quality[items] + 0.5 * affinity[users, items]
    rating = np.clip(np.rint(score + rng.normal(0, 0.9, len(users))), 1, 5).astype(np.int64)
    start = _T0 + rng.integers(0, _TWO_YEARS // 2, n_u)
    span = np.minimum(rng.exponential(120 * 86_400, n_u) + 3600, _T0 + _TWO_YEARS - start)
    ts = start[users] + (rng.random(len(users)) * span[users]).astype(np.int64)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = MovieLensFiles(
        out_dir / "ratings.dat", out_dir / "movies.dat", out_dir / "users.dat", n_u, n_i, len(users)
    )
    _write_lines(
        files.ratings,
        (
            f"{u + 1}::{movie_id[i]}::{r}::{t}"
            for u, i, r, t in zip(users, items, rating, ts, strict=True)
        ),
    )
    titles = _titles(rng, n_i)
    names = np.array(GENRES)
    _write_lines(
        files.movies,
        (f"{movie_id[i]}::{titles[i]}::{'|'.join(names[genres[i]])}" for i in range(n_i)),
    )
    _write_lines(
        files.users,
        (
            f"{u + 1}::{gender[u]}::{_AGES[age_idx[u]]}::{occupation[u]}::{zipcode[u]}"
            for u in range(n_u)
        ),
    )
    return files


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def import_config(out_dir: Path, min_rating: float = 4.0, k_core: int | None = 5) -> dict[str, Any]:
    """The ``ImportConfig`` (as a dict) that reads the files written into ``out_dir``:
    ML-1M's "::" format in latin-1, implicit feedback = rating >= ``min_rating``, genres
    as multi-hot item features (first genre = category), gender / age / occupation as
    one-hot user features. Use it as ``data.importing`` with ``data.source: import``."""
    read = {"sep": "::", "header": False, "encoding": "latin-1"}
    return {
        "name": "movielens-like",
        "interactions": {
            "path": str(out_dir / "ratings.dat"),
            "read": {**read, "names": ["user_id", "item_id", "rating", "timestamp"]},
            "time_col": "timestamp",
            "rating_col": "rating",
            "min_rating": min_rating,
        },
        "items": {
            "path": str(out_dir / "movies.dat"),
            "read": {**read, "names": ["item_id", "title", "genres"]},
            "key": "item_id",
            "multi": {"genres": "|"},
            "category": "genres",
        },
        "users": {
            "path": str(out_dir / "users.dat"),
            "read": {**read, "names": ["user_id", "gender", "age", "occupation", "zip"]},
            "key": "user_id",
            "categorical": ["gender", "age", "occupation"],
        },
        "k_core": k_core,
        "mode": "strict",
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.movielens_like", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("out_dir", type=Path)
    p.add_argument("--users", type=int, default=MovieLensLikeConfig.n_users)
    p.add_argument("--items", type=int, default=MovieLensLikeConfig.n_items)
    p.add_argument("--seed", type=int, default=MovieLensLikeConfig.seed)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    files = write_movielens_like(
        args.out_dir, MovieLensLikeConfig(n_users=args.users, n_items=args.items, seed=args.seed)
    )
    log.info(
        "wrote %s, %s, %s: %d users, %d movies, %d ratings in %.1f s",
        files.ratings,
        files.movies,
        files.users,
        files.n_users,
        files.n_items,
        files.n_ratings,
        time.perf_counter() - start,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
