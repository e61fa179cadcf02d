"""A throwaway PostgreSQL server in a folder of its own, on loopback: for the tests of the
shared backend and for trying the shared deployment on one machine.

It runs Debian's server binaries (``/usr/lib/postgresql/<major>/bin``, or ``initdb`` on
the PATH) on a cluster it initialises in the folder: it never touches a system cluster
or ``/etc/postgresql``. PostgreSQL refuses to run as root, so under root the cluster
belongs to the ``postgres`` system user and the commands run through ``runuser``.

    python -m devtools.pgserver start DIR [--port N]   # prints the database URL
    python -m devtools.pgserver stop DIR

Local socket connections are trusted; TCP connections (what towerflow uses) need the
password, which ``start`` generates and writes only into ``DIR/url`` (mode 600).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgServer", "find_bindir"]

log = logging.getLogger(__name__)

USER = "towerflow"
DBNAME = "towerflow"


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: the newest Debian major version, else the
    PATH's; None when PostgreSQL's server is not installed."""
    majors = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if majors:
        return majors[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A cluster in ``folder`` (created by ``start``), serving on 127.0.0.1:``port``."""

    folder: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url_file(self) -> Path:
        return self.folder / "url"

    def url(self) -> str:
        """postgresql://towerflow:PASSWORD@127.0.0.1:PORT/towerflow (after ``start``)."""
        return self.url_file.read_text().strip()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        bindir = find_bindir()
        if bindir is None:
            raise FileNotFoundError(
                "PostgreSQL's server is not installed (no initdb): apt-get install postgresql"
            )
        command = [str(bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
                + (
                    " (under root the cluster belongs to the postgres user, who must be able "
                    f"to enter every folder above {self.folder})"
                    if os.geteuid() == 0
                    else ""
                )
            )
        return done

    def start(self) -> str:
        """Initialise the cluster (first time), start the server and return its URL."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        password = secrets.token_urlsafe(16)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.folder / "pw"
            pwfile.write_text(password + "\n")
            pwfile.chmod(0o600)
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            try:
                self._run(
                    "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                    "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                    "--no-instructions",
                )  # fmt: skip
            finally:
                pwfile.unlink()
            self.url_file.write_text(
                f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{DBNAME}\n"
            )
            self.url_file.chmod(0o600)
            created = True
        else:
            created = False
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
            "-c max_connections=200 -c fsync=on"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
            "-w", "-t", "60", "start", check=False,
        )  # fmt: skip
        if done.returncode != 0:
            logfile = self.folder / "log"
            log_tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{log_tail}")
        # The URL names the port this start used (a restart may take a new one).
        url = self.url_file.read_text().strip().rsplit("@", 1)
        self.url_file.write_text(f"{url[0]}@127.0.0.1:{self.port}/{DBNAME}\n")
        if created:
            self._run("createdb", "-h", str(self.folder), "-p", str(self.port), "-U", USER, DBNAME)
        return self.url()

    def stop(self) -> None:
        """Stop the server (fast shutdown); the cluster stays in the folder."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.pgserver", description=__doc__)
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = PgServer(args.folder.resolve(), args.port)
    if args.action == "start":
        server.start()
        # The URL holds the password: it goes to the mode-600 file, not the terminal.
        log.info("PostgreSQL is running; its URL (with the password) is in %s", server.url_file)
    else:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
