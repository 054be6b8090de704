//! `passthrough`: the caller's own bearer token, forwarded as `Authorization: Bearer`.
//!
//! The token is read from the caller of each request (for teardown, the principal's latest
//! identity); a caller without an identity (anonymous, system work) sends no credentials.

use std::fmt;
use std::sync::Arc;

use http::header::AUTHORIZATION;

use super::{bearer, set_header};
use crate::auth::Caller;
use crate::auth::current::CurrentIdentities;

pub(super) struct Passthrough {
    identities: Arc<CurrentIdentities>,
}

impl Passthrough {
    pub(super) fn new(identities: Arc<CurrentIdentities>) -> Self {
        Self { identities }
    }

    pub(super) fn apply(
        &self,
        caller: &Caller,
        request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        let Some(identity) = self.identities.resolve(caller) else { return request };
        // A verified token is always a valid header value; if one is not, send none rather than
        // a malformed header.
        match bearer(identity.token.expose()) {
            Some(v) => set_header(request, AUTHORIZATION, v),
            None => request,
        }
    }
}

impl fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passthrough")
    }
}
