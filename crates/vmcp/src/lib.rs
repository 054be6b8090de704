//! vmcp: a virtual MCP server that puts many MCP servers behind one Streamable HTTP endpoint.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod backend;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod gateway;
pub mod http;
pub mod layer;
pub mod protocol;
pub mod ratelimit;
pub mod session;
pub mod store;
pub mod telemetry;
