"""Request body size limit as pure ASGI middleware: 413 before the app parses anything,
whether the client declared a Content-Length or streams a chunked body."""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodySizeLimitMiddleware"]


class BodySizeLimitMiddleware:
    """Reject HTTP requests whose body exceeds ``max_bytes`` with 413 and a JSON reason.

    The body is read (up to the limit) before the app runs and replayed to it, so a client
    that omits Content-Length or lies about it is cut off after ``max_bytes`` bytes.
    Recall bodies are small, so buffering them costs nothing worth streaming for.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reply(scope, receive, send, 400, "Content-Length is not an integer")
                return
            if length > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nothing to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = f"request body exceeds {self.max_bytes} bytes"
        await _reply(scope, receive, send, 413, reason)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the real one (so the
    app still sees the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(scope: Scope, receive: Receive, send: Send, status: int, reason: str) -> None:
    await JSONResponse({"detail": reason}, status_code=status)(scope, receive, send)
