"""A tiny MCP server from the official Python SDK (mcp==2.3.0) that speaks both
2025-11-25 (initialize handshake) and 2026-07-28 (stateless) on streamable HTTP.

It has the `echo` tool with server-everything's output ("Echo: <message>"), so the
client suite's defaults pass against it in every mode. Used to check the suite
itself; the gateway is what the suite is really for.

    python tests/python/reference_server.py PORT      # serves http://127.0.0.1:PORT/mcp
Prints "reference server listening on http://127.0.0.1:PORT/mcp" once ready.
"""

from __future__ import annotations

import sys

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("vmcp-reference")


@server.tool()
def echo(message: str) -> str:
    """Echoes back the input string."""
    return f"Echo: {message}"


async def main(port: int) -> None:
    app = server.streamable_http_app()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)

    async def announce() -> None:
        while not srv.started:
            await anyio.sleep(0.05)
        print(f"reference server listening on http://127.0.0.1:{port}/mcp", flush=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce)
        await srv.serve()


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]))
