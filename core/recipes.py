"""Training recipes the nightly chooses between on validation (``selection`` in the config).

A recipe is a name and overrides of the configured tower and training settings, e.g. the
``tuned.yaml`` of ``towerflow tune`` or a rung of the ablation ladder. With
``selection.recipes`` (and/or ``selection.ladder: true``) the train step fits the
configured recipe and every candidate on the same split, scores each final model by
``evaluation.validation_metric`` on the validation split, and keeps the best; test data
plays no part in the choice. Without them the configured recipe is trained alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.ladder import ladder, protocol_skip
from model.config import TowerConfig, TrainConfig

__all__ = ["CONFIGURED", "Candidate", "Recipe", "SelectionConfig", "candidates"]

# The name of the config's own tower + train recipe among the candidates.
CONFIGURED = "configured"

Candidate = tuple[str, TowerConfig, TrainConfig]


class Recipe(BaseModel):
    """One candidate: ``tower`` and ``train`` fields that replace the configured ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=80, description="Shown in the report.")
    tower: dict[str, Any] = Field(default_factory=dict, description="TowerConfig overrides.")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides.")

    def resolve(self, tower: TowerConfig, train: TrainConfig) -> Candidate:
        """(name, tower, train) with the overrides applied and validated.

        Raises ValueError naming the recipe and the bad field."""
        try:
            t = TowerConfig.model_validate({**tower.model_dump(), **self.tower})
            tr = TrainConfig.model_validate({**train.model_dump(), **self.train})
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
            )
            raise ValueError(f"selection recipe {self.name!r}: {problems}") from None
        return self.name, t, tr


class SelectionConfig(BaseModel):
    """Candidate recipes the train step chooses between on validation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipes: list[Recipe] = Field(
        default_factory=list,
        description="Candidates beside the configured recipe (empty: no choice).",
    )
    ladder: bool = Field(
        False,
        description="Also try the ablation ladder's softmax rungs (in-batch softmax, "
        "+ logQ, + item bias, + mixed negatives, + wide, full softmax, + history).",
    )

    @field_validator("recipes")
    @classmethod
    def _unique_names(cls, recipes: list[Recipe]) -> list[Recipe]:
        names = [r.name for r in recipes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"recipe names must be unique: {', '.join(dupes)} repeated")
        if CONFIGURED in names:
            raise ValueError(f"{CONFIGURED!r} names the config's own recipe: pick another")
        return recipes

    @property
    def enabled(self) -> bool:
        return bool(self.recipes) or self.ladder


def candidates(
    selection: SelectionConfig,
    tower: TowerConfig,
    train: TrainConfig,
    protocol: str | None = None,
) -> list[Candidate]:
    """The configured recipe first, then the ladder's softmax rungs (``ladder``), then the
    listed recipes; each as (name, tower, train). The pointwise rung is left out (it needs
    labelled impressions, which only the temporal protocol has), and so are the rungs
    ``core.ladder.protocol_skip`` leaves out under ``protocol`` (when given)."""
    out: list[Candidate] = [(CONFIGURED, tower, train)]
    if selection.ladder:
        for rung in ladder():
            if rung.train.get("loss") == "bce":
                continue
            if protocol is not None and protocol_skip(rung, protocol) is not None:
                continue
            recipe = Recipe(name=rung.name, tower=rung.tower, train=rung.train)
            out.append(recipe.resolve(tower, train))
    out += [r.resolve(tower, train) for r in selection.recipes]
    return out
