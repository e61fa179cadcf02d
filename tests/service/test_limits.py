"""The body size limit as ASGI middleware, driven directly (no server): 413 whether the
size is declared or only streamed, 400 for a malformed Content-Length, bodies under the
limit reach the app intact."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from service.limits import BodySizeLimitMiddleware


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that answers 200 with the body it read."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(BodySizeLimitMiddleware(_echo, max_bytes=100)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_bodies_under_the_limit_reach_the_app_intact() -> None:
    assert _call([b"a" * 60, b"b" * 40], [(b"content-length", b"100")]) == (
        200,
        b"a" * 60 + b"b" * 40,
    )
    assert _call([b"x" * 30, b"y" * 30], []) == (200, b"x" * 30 + b"y" * 30)


def test_declared_oversize_is_413_before_reading() -> None:
    status, body = _call([b"{}"], [(b"content-length", b"101")])
    assert status == 413 and "100 bytes" in json.loads(body)["detail"]


def test_streamed_oversize_without_content_length_is_413() -> None:
    status, body = _call([b"x" * 60, b"x" * 60], [])
    assert status == 413 and "exceeds" in json.loads(body)["detail"]


def test_a_lying_content_length_is_cut_off_too() -> None:
    assert _call([b"x" * 60, b"x" * 60], [(b"content-length", b"10")])[0] == 413


def test_malformed_content_length_is_400() -> None:
    status, body = _call([b"{}"], [(b"content-length", b"abc")])
    assert status == 400 and "Content-Length" in json.loads(body)["detail"]
