//! `backends[].caBundlePath`: extra root CAs for one backend's HTTPS.
//!
//! The file is read and checked when the config is loaded, so a missing or malformed bundle is a
//! `FILE:LINE:COL` error at `vmcp validate` time rather than a TLS failure at the first connect.
//! The certificates are added to the system's roots (they do not replace them) in the backend's
//! own HTTP client (`backend/streamable_http`, `backend/sse`).
//!
//! Invariant: a [`CaBundle`] holds at least one certificate, and a reqwest client accepted it.

use std::fmt;
use std::path::Path;

use super::locate::key_path;
use super::validate::Finding;
use super::{Config, TransportKind};

/// Largest accepted bundle file. A system bundle of every public root is about 220 KiB.
pub const MAX_CA_BUNDLE_BYTES: u64 = 1024 * 1024;

/// The root certificates of one `caBundlePath`.
#[derive(Clone)]
pub struct CaBundle {
    certs: Vec<reqwest::Certificate>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certs.len())
    }
}

impl CaBundle {
    /// Reads and checks a PEM bundle; the error says what is wrong, without the path.
    pub fn read(path: &Path) -> Result<Self, String> {
        if !path.is_absolute() {
            return Err("must be an absolute path (as in ToolHive)".to_owned());
        }
        let len = std::fs::metadata(path).map_err(|e| format!("cannot read {path:?}: {e}"))?.len();
        if len > MAX_CA_BUNDLE_BYTES {
            return Err(format!(
                "{path:?} is {len} bytes; a CA bundle may be at most {MAX_CA_BUNDLE_BYTES}"
            ));
        }
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
        Self::from_pem(&pem).map_err(|e| format!("{path:?}: {e}"))
    }

    /// Parses PEM text holding one or more `CERTIFICATE` blocks.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("not a PEM certificate bundle ({e})"))?;
        if certs.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
        }
        // PEM parsing does not look inside the DER; building a client does.
        reqwest::Client::builder()
            .tls_certs_merge(certs.iter().cloned())
            .build()
            .map_err(|e| format!("invalid certificate in the bundle ({e})"))?;
        Ok(Self { certs })
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Always false (see the module invariant); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Adds the bundle's certificates to a client's roots (the system's are kept).
    pub fn apply(bundle: Option<&Self>, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match bundle {
            Some(b) => builder.tls_certs_merge(b.certs.iter().cloned()),
            None => builder,
        }
    }
}

/// Reads every backend's `caBundlePath` into its `ca_bundle`; each unreadable or invalid one is
/// a finding at the key.
pub(super) fn load_all(cfg: &mut Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, b) in cfg.backends.iter_mut().enumerate() {
        let Some(path) = &b.ca_bundle_path else { continue };
        let at = key_path(&super::locate::index_path("backends", i), "caBundlePath");
        if b.transport == TransportKind::Stdio {
            findings.push(Finding {
                path: at,
                message: "only HTTP backends (streamable-http, sse) use a CA bundle".to_owned(),
            });
            continue;
        }
        match CaBundle::read(path) {
            Ok(bundle) => b.ca_bundle = Some(bundle),
            Err(message) => findings.push(Finding { path: at, message }),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_text_without_certificates() {
        let err = CaBundle::from_pem(b"hello\n").err().unwrap_or_default();
        assert!(err.starts_with("holds no PEM certificate"), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(CaBundle::from_pem(garbage).is_err());
    }

    #[test]
    fn config_errors_name_the_key_and_line() {
        use super::super::validate::tests::problems;
        let dir = std::env::temp_dir().join(format!("vmcp-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a certificate\n").unwrap();
        let text = format!(
            "name: gw\nbackends:\n  - name: a\n    transport: sse\n    url: https://h/sse\n    \
             caBundlePath: {}\n  - name: b\n    transport: stdio\n    command: x\n    \
             caBundlePath: /etc/ca.pem\n  - name: c\n    transport: streamable-http\n    \
             url: https://h/mcp\n    caBundlePath: /nonexistent/ca.pem\n",
            bad.display()
        );
        let ps = problems(&text);
        let got: Vec<_> = ps.iter().map(|(l, p, _)| (*l, p.as_str())).collect();
        assert_eq!(
            got,
            [
                (Some(6), "backends[0].caBundlePath"),
                (Some(10), "backends[1].caBundlePath"),
                (Some(14), "backends[2].caBundlePath"),
            ],
            "{ps:#?}"
        );
        assert!(ps[0].2.contains("holds no PEM certificate"), "{}", ps[0].2);
        assert!(ps[1].2.starts_with("only HTTP backends"), "{}", ps[1].2);
        assert!(ps[2].2.starts_with("cannot read"), "{}", ps[2].2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn relative_and_missing_paths() {
        let err = CaBundle::read(Path::new("ca.pem")).err().unwrap_or_default();
        assert!(err.starts_with("must be an absolute path"), "{err}");
        let err = CaBundle::read(Path::new("/nonexistent/ca.pem")).err().unwrap_or_default();
        assert!(err.starts_with("cannot read \"/nonexistent/ca.pem\""), "{err}");
    }
}
