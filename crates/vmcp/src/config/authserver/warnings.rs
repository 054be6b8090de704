//! Legal but risky `authserver-config.yaml` settings, as `path: message` lines: development
//! defaults that do not survive a restart, insecure transport, an OAuth 2.0 upstream that cannot
//! say who the user is, and a ToolHive key that has no effect.

use super::{AuthServerConfig, UpstreamKind};
use crate::config::locate::{index_path, key_path};

/// Warnings about `cfg`, in schema order of the keys they name.
pub(crate) fn warnings(cfg: &AuthServerConfig) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.signing_key_config.as_ref().is_none_or(|s| s.signing_key_file.is_none()) {
        out.push(
            "signing_key_config: not set: an ephemeral signing key is generated at start, so \
             issued tokens stop validating when vmcp restarts"
                .to_owned(),
        );
    }
    if cfg.hmac_secret_files.is_empty() {
        out.push(
            "hmac_secret_files: not set: the upstream token vault's key is generated at start, so \
             a store that outlives vmcp could not be read after a restart"
                .to_owned(),
        );
    }
    for (i, up) in cfg.upstreams.iter().enumerate() {
        let p = index_path("upstreams", i);
        match up.kind {
            UpstreamKind::Oidc => {}
            UpstreamKind::OAuth2 => {
                if up
                    .oauth2_config
                    .as_ref()
                    .is_some_and(|o| o.userinfo.is_none() && o.identity_from_token.is_none())
                {
                    out.push(format!(
                        "{}: neither userinfo nor identity_from_token is set: the user's subject \
                         is derived from each access token (it changes at every sign-in) and \
                         there is no name or email",
                        key_path(&p, "oauth2_config")
                    ));
                }
            }
        }
        if up.insecure_allow_http(false) {
            out.push(format!(
                "{}: plain-HTTP URLs are accepted for this upstream; for trusted networks only",
                key_path(
                    &key_path(&p, &format!("{}_config", up.kind.as_str())),
                    "insecure_allow_http"
                )
            ));
        }
    }
    if cfg.disable_upstream_token_injection {
        out.push(
            "disable_upstream_token_injection: has no effect in vmcp (nor in ToolHive's vMCP): \
             upstream tokens reach a backend only through outgoingAuth type upstream_inject"
                .to_owned(),
        );
    }
    if cfg.insecure_allow_http {
        out.push(
            "insecure_allow_http: plain-HTTP URLs are accepted for the issuer and every upstream; \
             for trusted networks only"
                .to_owned(),
        );
    }
    out
}
