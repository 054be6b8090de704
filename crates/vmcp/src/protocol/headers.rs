//! The standard request headers of 2026-07-28 (SEP-2243): `Mcp-Method`, `Mcp-Name` and the
//! `Mcp-Param-*` headers that tools opt into with `x-mcp-header` schema annotations.
//!
//! The gateway checks them on requests from clients (a mismatch is -32020, HTTP 400) and writes
//! them on requests to Modern backends, so middleboxes can route without reading bodies.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use http::HeaderMap;
use serde_json::Value;
use serde_json::value::RawValue;

use super::params;

const B64_PREFIX: &str = "=?base64?";
const B64_SUFFIX: &str = "?=";
const PARAM_PREFIX: &str = "mcp-param-";

/// The body field that `Mcp-Name` mirrors for `method`.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// `(path, header)` for each well-formed `x-mcp-header` annotation reached through `properties`.
fn annotations(schema: &Value) -> Vec<(Vec<&str>, &str)> {
    fn walk<'a>(
        props: Option<&'a Value>,
        path: &mut Vec<&'a str>,
        out: &mut Vec<(Vec<&'a str>, &'a str)>,
    ) {
        let Some(Value::Object(props)) = props else { return };
        for (name, schema) in props {
            path.push(name);
            if let Some(Value::String(h)) = schema.get("x-mcp-header")
                && !h.is_empty()
            {
                out.push((path.clone(), h));
            }
            walk(schema.get("properties"), path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema.get("properties"), &mut Vec::new(), &mut out);
    out
}

fn value_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn primitive(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn encode(value: &str) -> String {
    let b = value.as_bytes();
    let needs = matches!(b.first(), Some(b' ' | b'\t'))
        || matches!(b.last(), Some(b' ' | b'\t'))
        || value.chars().any(|c| (c as u32) < 0x20 || (c as u32) > 0x7e)
        || (value.starts_with(B64_PREFIX) && value.ends_with(B64_SUFFIX));
    if needs {
        format!("{B64_PREFIX}{}{B64_SUFFIX}", BASE64_STANDARD.encode(value))
    } else {
        value.to_owned()
    }
}

fn decode(value: &str) -> Option<String> {
    match value.strip_prefix(B64_PREFIX).and_then(|v| v.strip_suffix(B64_SUFFIX)) {
        Some(inner) => String::from_utf8(BASE64_STANDARD.decode(inner).ok()?).ok(),
        None => Some(value.to_owned()),
    }
}

fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(format!("duplicate {name} header"));
    }
    first.to_str().map(Some).map_err(|_| format!("{name} header contains invalid characters"))
}

/// Checks the standard headers of a client request against its body. `tool_schema` is the input
/// schema of the called tool (for `Mcp-Param-*`). The error text explains the mismatch.
pub fn validate(
    headers: &HeaderMap,
    method: &str,
    params: Option<&RawValue>,
    tool_schema: Option<&Value>,
) -> Result<(), String> {
    match single(headers, super::HEADER_METHOD)? {
        None => return Err("missing required Mcp-Method header".into()),
        Some(v) if v != method => {
            return Err(format!("Mcp-Method header `{v}` does not match body method `{method}`"));
        }
        Some(_) => {}
    }
    if let Some(field) = name_field(method)
        && let Some(expected) = params::get_str(params, field)
    {
        match single(headers, super::HEADER_NAME)? {
            None => return Err(format!("missing required Mcp-Name header for `{method}`")),
            Some(raw) => {
                let got = decode(raw).ok_or("Mcp-Name header is not valid base64")?;
                if got != expected {
                    return Err(format!(
                        "Mcp-Name header `{got}` does not match body value `{expected}`"
                    ));
                }
            }
        }
    }
    let annotated = match (method, tool_schema) {
        ("tools/call", Some(schema)) => annotations(schema),
        _ => Vec::new(),
    };
    if !annotated.is_empty() {
        // Decoded only for tools that annotate their arguments.
        let args = arguments(params);
        let args = args.as_ref();
        for (path, header) in annotated {
            let full = format!("{PARAM_PREFIX}{}", header.to_ascii_lowercase());
            let prop = path.join(".");
            let body =
                args.and_then(|a| value_at(a, &path)).filter(|v| !v.is_null()).and_then(primitive);
            match (single(headers, &full)?, body) {
                (None, None) => {}
                (Some(_), None) => {
                    return Err(format!(
                        "unexpected Mcp-Param-{header} header for absent `{prop}`"
                    ));
                }
                (None, Some(_)) => {
                    return Err(format!("missing Mcp-Param-{header} header for `{prop}`"));
                }
                (Some(raw), Some(expected)) => {
                    let got = decode(raw)
                        .ok_or_else(|| format!("Mcp-Param-{header} header is not valid base64"))?;
                    if got != expected {
                        return Err(format!(
                            "Mcp-Param-{header} header `{got}` does not match body value `{expected}`"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The standard headers for a request to a Modern backend.
pub fn outgoing(
    method: &str,
    params: Option<&RawValue>,
    tool_schema: Option<&Value>,
) -> Vec<(String, String)> {
    let mut out = vec![("Mcp-Method".to_owned(), method.to_owned())];
    if let Some(field) = name_field(method)
        && let Some(name) = params::get_str(params, field)
    {
        out.push(("Mcp-Name".to_owned(), encode(&name)));
    }
    let annotated = match (method, tool_schema) {
        ("tools/call", Some(schema)) => annotations(schema),
        _ => Vec::new(),
    };
    if !annotated.is_empty()
        && let Some(args) = arguments(params)
    {
        for (path, header) in annotated {
            if let Some(v) = value_at(&args, &path).and_then(primitive) {
                out.push((format!("Mcp-Param-{header}"), encode(&v)));
            }
        }
    }
    out
}

/// `params.arguments`, decoded.
fn arguments(params: Option<&RawValue>) -> Option<Value> {
    serde_json::from_str(params::get(params, "arguments")?.get()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn checks_method_and_name() {
        let p = crate::protocol::jsonrpc::raw(&json!({"name": "echo"}));
        assert!(
            validate(
                &hm(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]),
                "tools/call",
                Some(&p),
                None
            )
            .is_ok()
        );
        assert!(
            validate(&hm(&[("mcp-method", "tools/list")]), "tools/call", Some(&p), None).is_err()
        );
        assert!(
            validate(&hm(&[("mcp-method", "tools/call")]), "tools/call", Some(&p), None).is_err()
        );
        assert!(
            validate(
                &hm(&[("mcp-method", "tools/call"), ("mcp-name", "other")]),
                "tools/call",
                Some(&p),
                None
            )
            .is_err()
        );
        assert!(validate(&hm(&[]), "tools/list", None, None).is_err());
    }

    #[test]
    fn checks_param_headers_and_base64() {
        let schema =
            json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}}});
        let p = crate::protocol::jsonrpc::raw(
            &json!({"name": "t", "arguments": {"region": "eu wést"}}),
        );
        let out = outgoing("tools/call", Some(&p), Some(&schema));
        let h: Vec<(String, String)> =
            out.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(pairs.iter().any(|(k, v)| *k == "mcp-param-region" && v.starts_with(B64_PREFIX)));
        assert!(validate(&hm(&pairs), "tools/call", Some(&p), Some(&schema)).is_ok());
        let p2 =
            crate::protocol::jsonrpc::raw(&json!({"name": "t", "arguments": {"region": "us"}}));
        assert!(validate(&hm(&pairs), "tools/call", Some(&p2), Some(&schema)).is_err());
    }
}
