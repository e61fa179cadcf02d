"""Model and index artifacts on disk: weights (`state_dict`) + JSON config, Faiss indexes,
and small JSON documents. No pickle: weights load with `torch.load(weights_only=True)`.

torch and faiss are imported inside the functions that need them, so `import storage`
stays light (torch alone takes seconds to import) for callers that only read tables.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.fs import atomic_path, atomic_write_bytes
from storage.layout import VersionFiles

if TYPE_CHECKING:
    import faiss
    import torch

__all__ = [
    "load_index",
    "load_model",
    "read_json",
    "save_index",
    "save_model",
    "write_json",
]

log = logging.getLogger(__name__)


def _dumps(obj: Any) -> str:
    # Sorted and indented so identical content gives identical bytes (stable checksums,
    # readable diffs). allow_nan=False: NaN/Infinity are not JSON and other readers reject them.
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as sorted, indented JSON to `path`, atomically and durably.

    Raises `TypeError`/`ValueError` (before touching disk) if `obj` is not
    JSON-serialisable or contains NaN/Infinity.
    """
    try:
        text = _dumps(obj)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{path}: cannot serialise to JSON: {e}") from e
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def read_json(path: Path) -> Any:
    """Parse the JSON file at `path`; errors name the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: JSON file not found") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e


def save_model(
    directory: Path, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> None:
    """Write `model.pt` (the `state_dict`, tensors moved to CPU) and `model.json` (`config`,
    the constructor arguments needed to rebuild the module) into `directory`.

    Each file is replaced atomically. The config is validated before any file is written.
    """
    import torch

    directory = Path(directory)
    config_text = _dumps(dict(config))
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is {type(value).__name__}, not a Tensor")
        # detach/cpu: a saved autograd graph or CUDA storage would break weights-only loading
        # on a CPU-only reader.
        tensors[key] = value.detach().cpu()
    with atomic_path(directory / VersionFiles.MODEL_WEIGHTS) as tmp:
        torch.save(tensors, tmp)
    atomic_write_bytes(directory / VersionFiles.MODEL_CONFIG, config_text.encode("utf-8"))
    log.debug("saved model (%d tensors) to %s", len(tensors), directory)


def load_model(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read `(state_dict, config)` written by `save_model`; tensors land on CPU."""
    import torch

    directory = Path(directory)
    weights = directory / VersionFiles.MODEL_WEIGHTS
    config_path = directory / VersionFiles.MODEL_CONFIG
    missing = [p.name for p in (weights, config_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: model files missing: {', '.join(missing)}")
    state = torch.load(weights, weights_only=True, map_location="cpu")
    if not isinstance(state, dict):
        raise ValueError(f"{weights}: expected a state_dict, found {type(state).__name__}")
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    return dict(state), config


def save_index(path: Path, index: faiss.Index) -> None:
    """Write a Faiss index with `faiss.write_index`, atomically and durably."""
    import faiss

    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    log.debug("saved index (%d vectors) to %s", index.ntotal, path)


def load_index(path: Path, mmap: bool = False) -> faiss.Index:
    """Read a Faiss index. `mmap=True` maps the file instead of reading it into memory
    (faiss `IO_FLAG_MMAP`), for indexes larger than RAM or shared between processes."""
    import faiss

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Faiss index file not found")
    flags = faiss.IO_FLAG_MMAP if mmap else 0
    return faiss.read_index(str(path), flags)
