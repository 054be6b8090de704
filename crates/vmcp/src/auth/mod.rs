//! Authentication: who the caller is (incoming) and what credentials each backend request carries
//! (outgoing).
//!
//! Invariant: identity travels as an explicit [`Caller`] argument. No connection, pool, session or
//! transport stores a credential; a session stores only its [`Binding`].

pub mod current;
pub mod embedded;
pub mod identity;
pub mod incoming;
pub mod outgoing;
pub mod server;
pub mod upstream;

pub use identity::{Binding, Caller, Identity};

/// The HTTP client for token endpoints (upstream IdPs, token exchange, obo, xaa): bounded by
/// `timeout`, and never following a redirect, because a 307/308 would re-send a form carrying a
/// client secret or a user's token to wherever it points.
pub fn token_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// `application/x-www-form-urlencoded` encoding of one value, as OAuth client authentication
/// (RFC 6749 §2.3.1) and form bodies need it.
pub(crate) fn form_urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn form_urlencoding() {
        assert_eq!(super::form_urlencode("a b+c/d=~é"), "a+b%2Bc%2Fd%3D%7E%C3%A9");
    }
}
