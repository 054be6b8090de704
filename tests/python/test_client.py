"""The official Python SDK client (mcp==2.3.0) against VMCP_URL: list tools, call one."""

from __future__ import annotations

import anyio
import httpx2
import pytest
from conftest import Settings, modes
from mcp_helpers import connect, texts
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", modes())
async def test_list_tools_and_call(settings: Settings, mode: str) -> None:
    with anyio.fail_after(settings.timeout * 2):
        async with connect(settings.url, mode, bearer=settings.bearer, timeout=settings.timeout) as client:
            if mode == "legacy":
                assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
            elif mode != "auto":
                assert client.protocol_version == mode

            listed = await client.list_tools()
            names = [t.name for t in listed.tools]
            assert settings.tool in names, f"{settings.tool!r} not among listed tools {names}"

            result = await client.call_tool(settings.tool, settings.tool_args)
            assert not result.is_error, f"tool returned an error: {texts(result)}"
            assert settings.expect in texts(result), f"expected {settings.expect!r}, got {texts(result)}"


@pytest.mark.parametrize("mode", modes())
async def test_bearer_header_is_sent(settings: Settings, mode: str) -> None:
    """Every HTTP request the client makes carries the bearer token (no server-side check)."""
    token = settings.bearer or "vmcp-test-token"
    seen: list[tuple[str, str | None]] = []

    async def record(request: httpx2.Request) -> None:
        seen.append((f"{request.method} {request.url.path}", request.headers.get("authorization")))

    with anyio.fail_after(settings.timeout * 2):
        async with connect(settings.url, mode, bearer=token, on_request=record, timeout=settings.timeout) as client:
            await client.list_tools()

    assert seen, "no HTTP request was made"
    wrong = [(what, auth) for what, auth in seen if auth != f"Bearer {token}"]
    assert not wrong, f"requests without the bearer token: {wrong}"
