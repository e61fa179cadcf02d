"""A throwaway S3-compatible server on loopback: moto in server mode (the dev extras'
``moto[server]``), for the object-store tests and ``bench.shared_store``. Clients reach
it through the AWS SDK's usual variables (``AWS_ENDPOINT_URL`` and test credentials)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["moto_server"]


@contextmanager
def moto_server(timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``moto_server`` on a free loopback port until the block ends; yield its
    endpoint (``http://127.0.0.1:PORT``). RuntimeError when it is missing or not up in
    ``timeout_s``."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise RuntimeError("moto_server is missing: install the dev extras (moto[server])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start at {endpoint}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(30)
