"""The shared deployment on one machine: PostgreSQL, a Prefect server on it, a process work
pool with two workers running ``prefect.yaml``'s deployments, and a towerflow store whose
registry and item catalogue are in the same PostgreSQL. For trying the production setup
(README, "Shared deployment") and for its tests; a real deployment runs each piece on its
own machines with the same settings.

    python -m devtools.stack DIR [--workers 2] [--port 4200]

brings it all up under DIR (the cluster, the Prefect server's home and log, the workers'
logs, the store), prints the variables a shell needs to use it, and stops everything on
Ctrl-C / SIGTERM. Every process runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cli.prefect_server import local_prefect_server, log_tail, stop_process_group
from devtools.pgserver import PgServer

__all__ = ["Stack", "running_stack"]

log = logging.getLogger(__name__)

REPO: Final = Path(__file__).resolve().parents[1]
POOL: Final = "towerflow-process"
PREFECT_DB: Final = "prefect"
# The store's tables live in this schema of the cluster's towerflow database.
STORE_SCHEMA: Final = "towerflow_store"


@dataclass
class Stack:
    """What ``running_stack`` started: URLs and the environment of a client of it."""

    folder: Path
    api_url: str
    store_root: Path
    database_url: str  # with the password: pass it in the environment only
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment of a process that uses the stack: Prefect's API, the store and its
        database (the password comes with TOWERFLOW_DATABASE_URL, never from a file)."""
        env = dict(os.environ if base is None else base)
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.folder / "client-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            TOWERFLOW_ROOT=str(self.store_root),
            TOWERFLOW_DATABASE_URL=self.database_url,
            TOWERFLOW_PROJECT_DIR=str(REPO),
        )
        return env


def _prefect(*args: str, env: dict[str, str], timeout_s: float = 180) -> str:
    command = [str(Path(sys.executable).with_name("prefect")), *args]
    done = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def _create_database(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found is None:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # a constant


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_worker(stack: Stack, name: str) -> subprocess.Popen[bytes]:
    env = stack.client_env()
    # The worker asks for runs every second (default 10 s) and its run processes inherit
    # this environment: the store root and the database URL reach the flows.
    env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    logfile = stack.folder / f"{name}.log"
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("prefect")), "worker", "start",
                "--pool", POOL, "--name", name, "--type", "process",
            ],
            env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc


@contextmanager
def running_stack(folder: Path, *, workers: int = 2, port: int = 0) -> Iterator[Stack]:
    """Start PostgreSQL, the Prefect server on it, the work pool with its deployments and
    ``workers`` workers; yield the ``Stack``; stop all of it (the cluster's files stay in
    ``folder``)."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Under root the cluster (folder/pg) belongs to the postgres user: let it pass through.
    folder.chmod(folder.stat().st_mode | 0o111)
    with ExitStack() as stack:
        pg = PgServer(folder / "pg")
        base_url = pg.start()
        stack.callback(pg.stop)
        _create_database(base_url, PREFECT_DB)
        parts = urlsplit(base_url)
        prefect_db = parts._replace(scheme="postgresql+asyncpg", path=f"/{PREFECT_DB}").geturl()
        server_env = dict(os.environ)
        server_env.update(
            PREFECT_HOME=str(folder / "server-home"),
            PREFECT_API_DATABASE_CONNECTION_URL=prefect_db,
        )
        server = stack.enter_context(
            local_prefect_server(
                port or _free_port(), folder / "server.log", env=server_env, reuse=False,
                timeout_s=300,
            )
        )  # fmt: skip
        running = Stack(
            folder=folder,
            api_url=server.api_url,
            store_root=folder / "store",
            database_url=f"{base_url}?schema={STORE_SCHEMA}",
        )
        env = running.client_env()
        try:
            _prefect("work-pool", "create", POOL, "--type", "process", env=env)
        except RuntimeError as e:
            if "already exists" not in str(e):
                raise
        _prefect("--no-prompt", "deploy", "--all", env=env)
        for i in range(workers):
            proc = _start_worker(running, f"worker-{i + 1}")
            running.workers.append(proc)
            stack.callback(stop_process_group, proc)
        log.info(
            "shared stack up: Prefect %s on PostgreSQL, %d worker(s), store %s",
            server.url, workers, running.store_root,
        )  # fmt: skip
        yield running


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the stack as Ctrl-C does (Python's default would leave it running)."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.stack", description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running_stack(args.folder, workers=args.workers, port=args.port) as stack:
            shown = ("PREFECT_API_URL", "TOWERFLOW_ROOT", "TOWERFLOW_PROJECT_DIR")
            env = stack.client_env({})
            exports = "\n".join(f"export {k}={env[k]}" for k in shown)
            log.info(
                "use it from a shell with:\n%s\nexport TOWERFLOW_DATABASE_URL=<%s, "
                "password in %s>\nCtrl-C stops everything.",
                exports, stack.database_url.split(":")[0] + "://...", stack.folder / "pg" / "url",
            )  # fmt: skip
            while True:
                for i, proc in enumerate(stack.workers):
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"worker-{i + 1} exited with {proc.returncode}:\n"
                            + log_tail(stack.folder / f"worker-{i + 1}.log")
                        )
                time.sleep(1)
    except KeyboardInterrupt:
        log.info("stopping the shared stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
