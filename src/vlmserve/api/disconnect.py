"""Cancel a request's handler when its client goes away before the answer is complete.

Starlette only notices disconnects while streaming; a non-streaming request waiting in a model's queue would
otherwise keep its place (and later run for nobody). Cancelling the handler makes it leave the queue at once,
or stops its engine work (the engine connection is closed, llama.cpp aborts).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        answered = False
        client_gone = False

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, tracked_receive, tracked_send))

        async def watch() -> None:
            nonlocal client_gone
            await body_read.wait()
            while not answered:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not answered:
                        client_gone = True
                        handler.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not client_gone:
                raise  # we ourselves are being cancelled (server shutdown): pass it on
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
