//! `header_injection`: one fixed header (an API key, a static bearer token) on every request,
//! the same for every caller. The value is resolved once, when the strategy is built.

use std::fmt;

use http::{HeaderName, HeaderValue};

use super::{OutgoingAuthConfigError, resolve_secret, set_header};
use crate::config::HeaderInjectionConfig;

pub(super) struct HeaderInjection {
    name: HeaderName,
    /// Marked sensitive, so HTTP/2 never indexes it.
    value: HeaderValue,
}

impl HeaderInjection {
    pub(super) fn from_config(
        cfg: &HeaderInjectionConfig,
        backend: &str,
    ) -> Result<Self, OutgoingAuthConfigError> {
        let invalid = |message: String| OutgoingAuthConfigError::Invalid {
            backend: backend.to_owned(),
            message,
        };
        let name = HeaderName::try_from(cfg.header_name.as_str()).map_err(|_| {
            invalid(format!(
                "headerInjection.headerName {:?} is not a valid header name",
                cfg.header_name
            ))
        })?;
        let secret = resolve_secret(
            backend,
            cfg.header_value.as_ref(),
            cfg.header_value_env.as_deref(),
            "headerInjection.headerValue",
            "headerInjection.headerValueEnv",
        )?;
        let mut value = HeaderValue::try_from(secret.expose()).map_err(|_| {
            let source = match &cfg.header_value_env {
                Some(var) => format!("the value of environment variable {var}"),
                None => "headerInjection.headerValue".to_owned(),
            };
            invalid(format!(
                "{source} is not a valid header value (control characters or newlines?)"
            ))
        })?;
        value.set_sensitive(true);
        Ok(Self { name, value })
    }

    pub(super) fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        set_header(request, self.name.clone(), self.value.clone())
    }
}

impl fmt::Debug for HeaderInjection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderInjection")
            .field("header", &self.name.as_str())
            .field("value", &"***")
            .finish()
    }
}
