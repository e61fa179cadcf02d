"""Typed configuration of the two-tower model and its training loop.

Configs are created at the edge (CLI, flow parameters) and passed down; nothing here reads
the environment. ``TowerSpec`` is what a saved model needs to be rebuilt: the tower
hyper-parameters plus the vocabulary and feature sizes seen at training time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FULL_SOFTMAX_MAX_ITEMS",
    "Device",
    "LossKind",
    "TowerConfig",
    "TowerKind",
    "TowerSpec",
    "TrainConfig",
]

LossKind = Literal["softmax", "bce", "full_softmax"]
TowerKind = Literal["mlp", "linear", "hybrid"]

# Catalogues up to this size may train with the full softmax: its logits are (batch, items)
# floats and every step runs the item tower over the whole catalogue (at 50k items and
# batch 1024, 200 MB of logits).
FULL_SOFTMAX_MAX_ITEMS = 50_000
Device = Literal["auto", "cpu", "cuda"]


class TowerConfig(BaseModel):
    """Shape of both towers (they share widths so the output spaces match)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TowerKind = Field(
        "mlp",
        description="'mlp': ID embeddings and features through an MLP, unit vectors, trained "
        "by SGD. 'linear': the user vector is a sum over the user's last history_len items "
        "of an item-input table, the item vector an ID row plus a linear map of category "
        "and content; unnormalised, fitted in closed form (a low-rank denoising linear "
        "autoencoder, model.linear; catalogues up to 20,000 items). id_dim, category_dim, "
        "hidden, id_init_std, item_bias and dropout are unused by 'linear'. 'hybrid': both, "
        "side by side (model.hybrid): an 'mlp' part of embedding_dim (no history feature) "
        "and a 'linear' part of rank linear_dim over a bag of history_len items, each "
        "trained as alone, the user vector's two parts weighted by a blend chosen on "
        "validation.",
    )
    embedding_dim: int = Field(
        64,
        ge=2,
        description="Output vector size of both towers (with item_bias: embedding_dim - 1 "
        "unit-vector dims plus the bias slot).",
    )
    linear_dim: int = Field(
        512,
        ge=1,
        description="Kind 'hybrid': rank of the linear part (its vector slots, after the "
        "MLP part's embedding_dim). Unused by 'mlp' and 'linear'.",
    )
    id_dim: int = Field(32, ge=1, description="Size of the user-ID and item-ID embeddings.")
    category_dim: int = Field(16, ge=1, description="Size of the item category embedding.")
    hidden: tuple[int, ...] = Field((128,), description="Hidden layer widths of each tower's MLP.")
    id_init_std: float = Field(
        0.05,
        ge=0,
        description="Standard deviation of the initial ID embeddings (0 = zeros: an ID with "
        "few interactions then stays close to its features instead of random noise).",
    )
    item_bias: bool = Field(
        False,
        description="Learned per-item score offset (popularity) in the last vector slot: "
        "item [unit vector, b], user [unit vector, 1], so the index's inner product is "
        "cosine + b and popularity need not be squeezed into the cosine. Better recall "
        "where popularity matters, but an IVF index then needs far more probes (top items "
        "spread over every cluster): for Flat indexes and small catalogues.",
    )
    history_len: int = Field(
        0,
        ge=0,
        description="Behaviour-history feature: the user's last N interacted items, pooled "
        "through the item tower's ID embedding into the user tower (0 = off). Kinds "
        "'linear' and 'hybrid': the bag of items the linear user tower sums.",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on each tower's MLP input (ID embedding, features, pooled "
        "history) while training; inactive when embedding or serving (0 = off).",
    )

    @model_validator(mode="after")
    def _linear_reads_items(self) -> TowerConfig:
        if self.kind in ("linear", "hybrid") and self.history_len < 1:
            raise ValueError(
                f"kind {self.kind!r} reads the user's items: history_len must be >= 1 "
                "(the bag size; e.g. 1000)"
            )
        if self.kind == "linear" and self.item_bias:
            raise ValueError("kind 'linear' has no item-bias slot: set item_bias false")
        return self

    @property
    def output_dim(self) -> int:
        """Slots of every user and item vector (the index's dimension): embedding_dim, plus
        linear_dim for kind 'hybrid'."""
        return self.embedding_dim + (self.linear_dim if self.kind == "hybrid" else 0)


class TowerSpec(BaseModel):
    """Everything needed to rebuild a trained two-tower model from its state_dict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tower: TowerConfig
    n_users: int = Field(ge=0, description="Known users; embedding rows = n_users + 1.")
    n_items: int = Field(ge=0, description="Known items; embedding rows = n_items + 1.")
    n_categories: int = Field(ge=1, description="Known categories; rows = n_categories + 1.")
    profile_dim: int = Field(ge=0, description="User profile floats.")
    content_dim: int = Field(ge=0, description="Item content floats.")


class TrainConfig(BaseModel):
    """How to train: loss, optimiser, batches and reproducibility."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loss: LossKind = Field(
        "softmax",
        description="'softmax': in-batch sampled softmax; 'bce': pointwise on impressions; "
        f"'full_softmax': softmax over every trained item (catalogues up to "
        f"{FULL_SOFTMAX_MAX_ITEMS:,} items; no sampling, so no logQ correction or extra "
        "negatives).",
    )
    epochs: int = Field(5, ge=1, description="Passes over the training interactions.")
    batch_size: int = Field(1024, ge=2, description="Examples per step (in-batch negatives).")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate of the dense layers.")
    sparse_lr: float = Field(
        1e-2, gt=0, description="SparseAdam learning rate of the ID embedding tables."
    )
    temperature: float = Field(
        0.15,
        gt=0,
        description="Softmax temperature dividing the inner-product scores (lower = sharper).",
    )
    logq_correction: bool = Field(
        True, description="Subtract log sampling probability of in-batch negatives."
    )
    id_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Probability of replacing an ID with the unknown bucket while training, "
        "so cold users and new items get useful vectors from features alone.",
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="Decoupled weight decay of the dense layers (AdamW; 0 = plain Adam).",
    )
    id_l2: float = Field(
        0.0,
        ge=0,
        description="L2 penalty on the ID embedding rows of each batch (users and items), "
        "added to the loss as id_l2 * mean squared row norm: the sparse tables' "
        "regulariser, which SparseAdam has no weight decay for (0 = off).",
    )
    uniform_negatives: int = Field(
        0,
        ge=0,
        description="Mixed negatives: items sampled uniformly per batch and shared by every "
        "example, on top of the in-batch negatives (0 = in-batch only).",
    )
    hard_negatives: int = Field(
        0,
        ge=0,
        description="Per example, the top-scoring non-positive items of a uniform candidate "
        "pool added as extra negatives (0 = off).",
    )
    hard_negative_pool: int = Field(
        2048, ge=1, description="Uniform candidates scored per batch to mine hard negatives."
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many epochs without a better validation metric and "
        "restore the best epoch's weights (None = train all epochs).",
    )
    linear_l2: float = Field(
        100.0,
        gt=0,
        description="Tower kind 'linear': L2 penalty of the closed-form fit (as EASE's l2).",
    )
    linear_dropout: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Tower kind 'linear': input dropout whose expectation the closed-form "
        "fit minimises (penalty p / (1 - p) x each item's count; 0 = plain ridge).",
    )
    seed: int = Field(0, description="Seed of initialisation, shuffling and dropout.")
    device: Device = Field("auto", description="'auto' = CUDA when present, else CPU.")
    world_size: int = Field(
        1,
        ge=1,
        le=256,
        description="Training processes (torch.distributed data parallelism: gloo on CPU, "
        "NCCL on CUDA). Each step's batch of batch_size examples is split over the "
        "processes, so the step count and learning rates mean the same as in one process. "
        "1 = one process, no process group.",
    )
