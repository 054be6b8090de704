"""Connecting the official Python SDK client to VMCP_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

RequestHook = Callable[[httpx2.Request], Awaitable[None]]


@asynccontextmanager
async def connect(
    url: str,
    mode: str,
    *,
    bearer: str | None = None,
    on_request: RequestHook | None = None,
    timeout: float = 30.0,
) -> AsyncIterator[Client]:
    """Yield an entered `mcp.Client` over streamable HTTP.

    mode="legacy" does the initialize handshake; mode="2026-07-28" adopts that
    version without any handshake (the first request on the wire is the first
    call the test makes); mode="auto" probes server/discover and falls back.
    cache=None switches off the SDK's client-side response cache so every call
    reaches the server.
    """
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    hooks = {"request": [on_request]} if on_request else {}
    # The transport does not close a client it was handed; this `async with` does.
    async with httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(timeout, read=timeout),
        event_hooks=hooks,
    ) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, cache=None, read_timeout_seconds=timeout) as client:
            yield client


def texts(result) -> list[str]:
    """The text of each text content block of a CallToolResult."""
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]
