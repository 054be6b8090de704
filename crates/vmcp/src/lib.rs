//! vmcp: a virtual MCP server.
