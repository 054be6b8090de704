"""Shared settings for the MCP client tests (official Python SDK, mcp==2.3.0).

Environment:
  VMCP_URL         streamable HTTP MCP endpoint, e.g. http://127.0.0.1:8080/mcp (required;
                   without it every test fails)
  VMCP_MODES       comma list of client modes to run (default "legacy,2026-07-28");
                   each is a `Client(mode=...)` value: "legacy", "auto" or "2026-07-28"
  VMCP_TOOL        tool to call (default "echo")
  VMCP_TOOL_ARGS   JSON object of its arguments (default {"message":"hi"})
  VMCP_EXPECT      exact text one of its text content blocks must have (default "Echo: hi")
  VMCP_BEARER      optional token, sent as "Authorization: Bearer <token>"
  VMCP_TIMEOUT     seconds per test's network wait (default 30)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pytest

DEFAULT_MODES = "legacy,2026-07-28"


@dataclass(frozen=True)
class Settings:
    url: str
    tool: str
    tool_args: dict[str, Any]
    expect: str
    bearer: str | None
    timeout: float
    modes: list[str] = field(default_factory=list)


def _settings() -> Settings | None:
    url = os.environ.get("VMCP_URL", "").strip()
    if not url:
        return None
    args = json.loads(os.environ.get("VMCP_TOOL_ARGS", '{"message":"hi"}'))
    if not isinstance(args, dict):
        raise ValueError("VMCP_TOOL_ARGS must be a JSON object")
    return Settings(
        url=url,
        tool=os.environ.get("VMCP_TOOL", "echo"),
        tool_args=args,
        expect=os.environ.get("VMCP_EXPECT", "Echo: hi"),
        bearer=os.environ.get("VMCP_BEARER") or None,
        timeout=float(os.environ.get("VMCP_TIMEOUT", "30")),
        modes=modes(),
    )


def modes() -> list[str]:
    raw = os.environ.get("VMCP_MODES", DEFAULT_MODES)
    return [m.strip() for m in raw.split(",") if m.strip()]


@pytest.fixture(scope="session")
def settings() -> Settings:
    s = _settings()
    if s is None:
        pytest.fail("VMCP_URL is not set: run through scripts/e2e-python.sh", pytrace=False)
    return s


@pytest.fixture
def anyio_backend() -> str:
    # The anyio pytest plugin (anyio is an mcp dependency) runs the async tests.
    return "asyncio"
