"""The hybrid two-tower (``tower.kind: hybrid``): an MLP two-tower and a linear one
(``model.linear``) side by side in one vector space.

Each part is trained as it would be alone (the MLP by SGD, the linear part in closed
form); their vectors are concatenated, item ``[v_mlp, v_lin]`` and user
``[a_mlp u_mlp, a_lin u_lin]``, so the index's inner product is the blend
``a_mlp s_mlp + a_lin s_lin`` of the two parts' scores. The weights live in the user
tower only (two floats per request) and are chosen on validation
(``choose_blend``) after both parts are trained.

Why: the two parts see different evidence. The linear part reads the user's items as a
bag (the strongest known ranker on MovieLens-size logs, EASE's family) and nothing else;
the MLP part reads the user's ID and profile and the item's features. On a log whose
interactions follow the features (the synthetic world) the MLP is ahead, on a real log
without user features the linear part is; the blend chosen on each log's validation
split does at least as well as the better part on validation (on ml-latest-small it is
above both parts and EASE on test; on the synthetic world validation gives the MLP part
all the weight: docs/hybrid.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from model.config import TowerConfig, TowerSpec

__all__ = [
    "BLEND_GRID",
    "BlendChoice",
    "HybridItemTower",
    "HybridUserTower",
    "choose_blend",
    "part_towers",
]

# Share of the linear part's (scale-matched) score, tried in this order on validation;
# a tie keeps the earlier (more MLP). 0 = the MLP part alone, 1 = the linear part alone.
BLEND_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))

# Users whose full score rows set each part's score scale (seeded sample).
_SCALE_USERS = 256


def part_towers(tower: TowerConfig) -> tuple[TowerConfig, TowerConfig]:
    """(MLP part, linear part) configs of a hybrid tower config: the MLP part keeps the
    widths and has no history feature; the linear part has rank ``linear_dim`` and the
    bag of ``history_len`` items."""
    if tower.kind != "hybrid":
        raise ValueError(f"part_towers splits kind 'hybrid', got {tower.kind!r}")
    mlp = tower.model_copy(update={"kind": "mlp", "history_len": 0})
    linear = tower.model_copy(
        update={"kind": "linear", "embedding_dim": tower.linear_dim, "item_bias": False}
    )
    return mlp, linear


def part_specs(spec: TowerSpec) -> tuple[TowerSpec, TowerSpec]:
    """``part_towers`` for a whole spec (same vocabulary and feature sizes)."""
    mlp, linear = part_towers(spec.tower)
    return spec.model_copy(update={"tower": mlp}), spec.model_copy(update={"tower": linear})


class HybridUserTower(nn.Module):
    """(B,) ID rows, (B, P) profile, (B, H) bag item rows -> (B, D_mlp + D_lin):
    ``[a_mlp * mlp(id, profile), a_lin * linear(bag)]``; ``weights`` = (a_mlp, a_lin), a
    buffer saved with the model."""

    weights: Tensor

    def __init__(self, mlp: nn.Module, linear: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp
        self.linear = linear
        self.register_buffer("weights", torch.ones(2))

    def forward(self, id_rows: Tensor, profile: Tensor, history: Tensor) -> Tensor:
        w = self.weights
        return torch.cat([w[0] * self.mlp(id_rows, profile, None), w[1] * self.linear(history)], 1)


class HybridItemTower(nn.Module):
    """(B,) ID rows, (B,) category rows, (B, C) content -> (B, D_mlp + D_lin): the two
    parts' item vectors side by side (new items: each part's content path)."""

    def __init__(self, mlp: nn.Module, linear: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp
        self.linear = linear

    def forward(self, id_rows: Tensor, category_rows: Tensor, content: Tensor) -> Tensor:
        return torch.cat(
            [
                self.mlp(id_rows, category_rows, content),
                self.linear(id_rows, category_rows, content),
            ],
            dim=1,
        )


@dataclass(frozen=True)
class BlendChoice:
    """``choose_blend``'s result: the weights (a_mlp, a_lin), the linear share chosen and
    the validation metric of every share tried (share -> metric; empty without a
    validation split)."""

    weights: tuple[float, float]
    share: float
    tried: dict[float, float]


def choose_blend(
    users: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    items: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]],
    evaluate: Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], float] | None,
    seed: int = 0,
) -> BlendChoice:
    """Choose the weights of a hybrid's parts on validation.

    users: (U, D_mlp) and (U, D_lin) user vectors of the two parts (validation inputs);
    items: (I, D_mlp) and (I, D_lin) item vectors. ``evaluate(user_vecs, item_vecs)`` ->
    the validation metric of one blend (higher = better), None without a validation
    split: the shares then stay at 0.5.

    The parts score on different scales (cosines against unnormalised linear scores), so
    the linear part is first scaled to the MLP part's score spread: s = std of each part's
    scores over a seeded sample of users and every item, then for each share ``a`` in
    ``BLEND_GRID`` the weights are (1 - a, a * s_mlp / s_lin). Share 0 is the MLP part
    exactly as trained alone.
    """
    s_mlp, s_lin = (_spread(u, i, seed) for u, i in zip(users, items, strict=True))
    ratio = s_mlp / s_lin if s_lin > 0 else 0.0

    def weights(share: float) -> tuple[float, float]:
        return 1.0 - share, share * ratio

    if evaluate is None:
        return BlendChoice(weights(0.5), 0.5, {})
    item_vecs = np.hstack(items).astype(np.float32)
    tried: dict[float, float] = {}
    for share in BLEND_GRID:
        a_mlp, a_lin = weights(share)
        user_vecs = np.hstack([a_mlp * users[0], a_lin * users[1]]).astype(np.float32)
        tried[share] = evaluate(user_vecs, item_vecs)
    best = max(tried, key=lambda a: (tried[a], -a))  # a tie keeps the smaller share
    return BlendChoice(weights(best), best, tried)


def _spread(users: npt.NDArray[np.float32], items: npt.NDArray[np.float32], seed: int) -> float:
    """Std of the inner products of a seeded sample of ``users`` with every item."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(users), min(_SCALE_USERS, len(users)), replace=False)
    return float(np.std(users[pick].astype(np.float64) @ items.T.astype(np.float64)))
