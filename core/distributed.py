"""Data-parallel training in ``train.world_size`` processes (torch.distributed: gloo on
CPU, NCCL on CUDA, one GPU per process; the NCCL path has not run here, no GPU).

``fit_distributed`` starts one process per rank the way ``torchrun`` does: a fresh
``python -m core.distributed JOB.json`` with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment (loopback, a free port). A fresh interpreter rather
than ``multiprocessing``: no fork of a process holding OpenMP or Prefect threads, and no
re-import of the caller's ``__main__`` (which ``spawn`` does). So the same command runs
under ``torchrun --nproc-per-node N -m core.distributed JOB.json`` on other machines.

Each process reads the snapshot itself: only the job file (paths and configs) crosses
the process boundary, never data. Every process runs ``model.pipeline.fit`` (which wraps
the loop in DistributedDataParallel); rank 0 writes the trained weights and the epoch
history into the job's scratch folder, which the launcher reads back and removes. When
asked (``--events``), rank 0 prints its epochs and progress as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist

from core.config import DataConfig
from core.dataio import impression_examples, load_prepared
from core.threads import set_threads
from model.config import TowerConfig, TowerSpec, TrainConfig
from model.pipeline import fit
from model.towers import TwoTower
from model.train import EpochStats, TrainResult
from storage import load_model, read_json, save_model, write_json

__all__ = ["DistributedJob", "fit_distributed", "process_group", "run_rank"]

log = logging.getLogger(__name__)

_JOB = "job.json"
_RESULT = "train_result.json"
_EVENT = "@towerflow-event "
# How long the group waits for a missing process before failing (gloo's own default is
# 30 minutes): a crashed rank then fails the step instead of hanging it.
_GROUP_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class DistributedJob:
    """What every rank needs: where the snapshot is, how to train, where rank 0 writes."""

    snapshot: Path
    scratch: Path
    data_cfg: DataConfig
    tower_cfg: TowerConfig
    train_cfg: TrainConfig
    validate_metric: str
    validate_users: int | None
    threads: int

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": str(self.snapshot),
            "scratch": str(self.scratch),
            "data_cfg": self.data_cfg.model_dump(mode="json"),
            "tower_cfg": self.tower_cfg.model_dump(mode="json"),
            "train_cfg": self.train_cfg.model_dump(mode="json"),
            "validate_metric": self.validate_metric,
            "validate_users": self.validate_users,
            "threads": self.threads,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DistributedJob:
        return cls(
            snapshot=Path(raw["snapshot"]),
            scratch=Path(raw["scratch"]),
            data_cfg=DataConfig.model_validate(raw["data_cfg"]),
            tower_cfg=TowerConfig.model_validate(raw["tower_cfg"]),
            train_cfg=TrainConfig.model_validate(raw["train_cfg"]),
            validate_metric=str(raw["validate_metric"]),
            validate_users=raw["validate_users"],
            threads=int(raw["threads"]),
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _emit(kind: str, payload: Any) -> None:
    sys.stdout.write(_EVENT + json.dumps([kind, payload]) + "\n")
    sys.stdout.flush()


@contextmanager
def process_group(world: int, rank: int, backend: str = "gloo") -> Iterator[None]:
    """The ``world``-process group this process is ``rank`` of (``env://``: the
    environment's ``MASTER_ADDR`` / ``MASTER_PORT``), destroyed on the way out.

    Destroyed means its threads are joined before the interpreter shuts down. A gloo
    group whose last reference outlives ``destroy_process_group`` keeps its worker
    threads; at interpreter exit such a thread may still be releasing the last
    collective's tensors, needs the GIL for it and aborts the process with "terminate
    called without an active exception" (seen under load, about 1 run in 20). The
    reference that outlived it: DistributedDataParallel's constructor imports
    ``torch._dynamo``, which imports ``torch.distributed.fsdp``, whose
    ``sharded_grad_scaler`` binds ``dist.group.WORLD`` as a default argument at import
    time (torch 2.13). Imported here before the group exists, that default is None."""
    import torch._dynamo  # noqa: F401  (see above: must precede init_process_group)

    dist.init_process_group(
        backend, init_method="env://", rank=rank, world_size=world, timeout=_GROUP_TIMEOUT
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_rank(job: DistributedJob, rank: int, events: bool = False) -> None:
    """Train as ``rank`` of ``job.train_cfg.world_size`` processes in the process group
    the environment describes (``MASTER_ADDR`` / ``MASTER_PORT``); rank 0 writes the
    weights and the epoch history into ``job.scratch`` and, with ``events``, prints
    ``["epoch", {...}]`` and ``["step", [epoch, step, per_epoch]]`` lines on stdout."""
    set_threads(job.threads)
    device = job.train_cfg.device
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        # One GPU per process on a node (torchrun's LOCAL_RANK); 'cuda' then means it.
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
    with process_group(job.train_cfg.world_size, rank, "nccl" if cuda else "gloo"):
        prep = load_prepared(job.snapshot, job.data_cfg)
        pointwise = impression_examples(job.snapshot, prep) if job.train_cfg.loss == "bce" else None
        on_epoch: Callable[[EpochStats], None] | None = None
        on_step: Callable[[int, int, int], None] | None = None
        if events and rank == 0:
            on_epoch = lambda s: _emit("epoch", dataclasses.asdict(s))  # noqa: E731
            on_step = lambda e, d, n: _emit("step", [e, d, n])  # noqa: E731
        model, result = fit(
            prep,
            job.tower_cfg,
            job.train_cfg,
            validate_metric=job.validate_metric,
            validate_users=job.validate_users,
            on_epoch=on_epoch,
            pointwise=pointwise,
            on_step=on_step,
        )
        if rank == 0:
            job.scratch.mkdir(parents=True, exist_ok=True)
            save_model(job.scratch, model.state_dict(), model.spec.model_dump(mode="json"))
            write_json(
                job.scratch / _RESULT,
                {
                    "device": result.device,
                    "epochs": [dataclasses.asdict(e) for e in result.epochs],
                    "best_epoch": result.best_epoch,
                    "stopped_early": result.stopped_early,
                },
            )
        dist.barrier()  # rank 0's files are complete before any process reports success


def fit_distributed(
    job: DistributedJob,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
) -> tuple[TwoTower, TrainResult]:
    """Train in ``job.train_cfg.world_size`` local processes; returns rank 0's model and
    history. Raises RuntimeError naming the rank, its exit code and the end of its log
    when a process fails; the others are stopped, and the scratch folder is removed
    either way."""
    world = job.train_cfg.world_size
    if world < 2:
        raise ValueError(f"fit_distributed needs train.world_size >= 2, got {world}")
    shutil.rmtree(job.scratch, ignore_errors=True)
    job.scratch.mkdir(parents=True)
    write_json(job.scratch / _JOB, job.to_json())
    # The child finds this package whether or not it is installed (a source checkout).
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(world),
    }
    log.info(
        "training in %d processes (torch.distributed, gloo, %d thread(s) each)", world, job.threads
    )
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    try:
        for rank in range(world):
            logs.append(open(job.scratch / f"rank{rank}.log", "w+"))  # noqa: SIM115
            command = [sys.executable, "-m", "core.distributed", str(job.scratch / _JOB)]
            procs.append(
                subprocess.Popen(
                    [*command, "--events"] if rank == 0 else command,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
                    stderr=logs[rank],
                    text=True,
                )
            )
        _relay(procs[0], on_epoch, on_step)
        for proc in procs:
            if proc.wait() != 0:
                _fail(procs, logs)
        return _read_result(job.scratch)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for f in logs:
            f.close()
        shutil.rmtree(job.scratch, ignore_errors=True)


def _relay(
    rank0: subprocess.Popen[str],
    on_epoch: Callable[[EpochStats], None] | None,
    on_step: Callable[[int, int, int], None] | None,
) -> None:
    """Pass rank 0's event lines to the callbacks until its stdout closes."""
    assert rank0.stdout is not None
    for line in rank0.stdout:
        if not line.startswith(_EVENT):
            continue
        kind, payload = json.loads(line[len(_EVENT) :])
        if kind == "epoch" and on_epoch is not None:
            on_epoch(EpochStats(**payload))
        elif kind == "step" and on_step is not None:
            on_step(*payload)


def _fail(procs: list[subprocess.Popen[str]], logs: list[IO[str]]) -> None:
    """Raise for the first process that failed, with the end of its log. A process that
    lost its peer fails too; the one with a traceback of its own is the cause."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    tails = []
    for rank, (proc, f) in enumerate(zip(procs, logs, strict=True)):
        f.flush()
        f.seek(0)
        text = f.read()
        tails.append((rank, proc.returncode, text[-3000:]))
    failed = [t for t in tails if t[1] != 0]
    # Prefer a rank whose own code raised over one that only saw its peer vanish.
    failed.sort(key=lambda t: "gloo" in t[2].lower() or "connection" in t[2].lower())
    rank, code, tail = failed[0]
    raise RuntimeError(
        f"distributed training: rank {rank} of {len(procs)} exited with code {code}:\n{tail}"
    )


def _read_result(scratch: Path) -> tuple[TwoTower, TrainResult]:
    state, spec = load_model(scratch)
    model = TwoTower(TowerSpec.model_validate(spec))
    model.load_state_dict(state)
    model.eval()
    summary = read_json(scratch / _RESULT)
    result = TrainResult(
        device=summary["device"],
        epochs=[EpochStats(**e) for e in summary["epochs"]],
        best_epoch=summary["best_epoch"],
        stopped_early=summary["stopped_early"],
    )
    return model, result


def main(argv: list[str] | None = None) -> int:
    """One rank: ``python -m core.distributed JOB.json`` with ``RANK`` / ``WORLD_SIZE`` /
    ``MASTER_ADDR`` / ``MASTER_PORT`` set (by ``fit_distributed`` or ``torchrun``)."""
    parser = argparse.ArgumentParser(prog="python -m core.distributed", description=__doc__)
    parser.add_argument("job", type=Path, help="the job file fit_distributed writes")
    parser.add_argument("--events", action="store_true", help="rank 0 prints JSON events")
    args = parser.parse_args(argv)
    job = DistributedJob.from_json(read_json(args.job))
    world = int(os.environ.get("WORLD_SIZE", "0"))
    if world != job.train_cfg.world_size:
        parser.error(
            f"WORLD_SIZE={world} but the job's train.world_size is {job.train_cfg.world_size}"
        )
    logging.basicConfig(level=logging.INFO, format=f"rank {os.environ.get('RANK')}: %(message)s")
    run_rank(job, int(os.environ["RANK"]), events=args.events)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
