//! What makes `serve` reload its config: SIGHUP, and with `--watch-config` a change in the
//! config file's content.
//!
//! The watch polls: every [`WATCH_INTERVAL`] it reads the config file (and
//! `authserver-config.yaml` beside it) and reloads when their SHA-256 differs from what was last
//! loaded or tried. Polling the content, not inotify, sees every way a file can be replaced,
//! including Kubernetes' ConfigMap updates (a symlink swapped in the directory, the file itself
//! untouched). A file that was refused is tried again only once it changes again (or on SIGHUP).
//!
//! Invariant: reloads run one at a time ([`Gateway::reload_with`]); the file is read and checked
//! exactly as at start ([`load`]), and the outcome is logged either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{self, Config, ConfigError};
use crate::gateway::{Gateway, ReloadError};

/// How often `--watch-config` reads the config file.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Command-line settings of `serve` that override the config, at start and on every reload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    /// `--session-ttl`.
    pub session_ttl: Option<Duration>,
    /// `--enable-audit`.
    pub enable_audit: bool,
}

/// Reads and validates the config at `path` as `serve` does: `authserver-config.yaml` beside
/// it, then the command line's overrides applied.
pub fn load(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
    let mut cfg = config::load(path)?;
    if let Some(ttl) = overrides.session_ttl {
        cfg.server.limits.session_idle_timeout = ttl;
    }
    if overrides.enable_audit {
        // As ToolHive: defaults when the file has no block; the flag also wins over
        // `enabled: false`.
        cfg.audit.get_or_insert_with(config::AuditConfig::cli_default).enabled = Some(true);
    }
    Ok(cfg)
}

/// SIGHUP, listened to from the moment this exists (the default disposition would end vmcp).
pub struct Hangups(Option<Signal>);

impl Hangups {
    /// Installs the handler. One that cannot be installed is logged and never fires.
    pub fn install() -> Hangups {
        match signal(SignalKind::hangup()) {
            Ok(s) => Hangups(Some(s)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: no reload on SIGHUP");
                Hangups(None)
            }
        }
    }

    async fn recv(&mut self) {
        if let Some(s) = &mut self.0
            && s.recv().await.is_some()
        {
            return;
        }
        std::future::pending().await
    }
}

/// Where the config comes from, and what `serve` adds to it.
pub struct Source {
    path: PathBuf,
    auth_path: PathBuf,
    overrides: Overrides,
    watch: bool,
    /// The files as they were before the first load.
    started: [u8; 32],
    started_auth: Option<[u8; 32]>,
}

impl Source {
    /// The config at `path`, with the command line's `overrides`, polled when `watch`; reads the
    /// files' digests now, so call it before the first [`load`].
    pub fn new(path: &Path, overrides: Overrides, watch: bool) -> Source {
        let auth_path = path.with_file_name(config::authserver::FILE_NAME);
        let started_auth = std::fs::read(&auth_path).ok().map(|b| Sha256::digest(&b).into());
        let started = digest_now(path, &auth_path);
        Source { path: path.to_owned(), auth_path, overrides, watch, started, started_auth }
    }

    /// The command line's overrides.
    pub fn overrides(&self) -> Overrides {
        self.overrides
    }
}

/// Reloads on SIGHUP and, when watching, on a change of the file, until the gateway stops.
pub async fn run(gw: Arc<Gateway>, source: Source, mut hangups: Hangups) {
    let (auth_path, started_auth) = (&source.auth_path, source.started_auth);
    let mut seen = source.started;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let trigger = tokio::select! {
            _ = gw.stop.cancelled() => return,
            () = hangups.recv() => "SIGHUP",
            _ = tick.tick(), if source.watch => {
                let now = digest(&source.path, auth_path).await;
                if now == seen {
                    continue;
                }
                "config file changed"
            }
        };
        tracing::info!(trigger, path = %source.path.display(), "reloading the config");
        seen = digest(&source.path, auth_path).await;
        let auth_now = file_digest(auth_path).await;
        let _ = gw
            .reload_with(|| {
                let cfg = load(&source.path, source.overrides)?;
                // Its parsed values are compared too, but an inline secret in it is not.
                if auth_now != started_auth {
                    return Err(ReloadError::RestartRequired(vec![
                        config::authserver::FILE_NAME.to_owned(),
                    ]));
                }
                for w in config::validate_warnings(&cfg) {
                    tracing::warn!("{w}");
                }
                Ok(cfg)
            })
            .await;
    }
}

/// SHA-256 of the config file and of `authserver-config.yaml` beside it (absent or unreadable
/// files count as empty: the loader reports them).
async fn digest(path: &Path, auth_path: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(file_digest(path).await.unwrap_or_default());
    h.update(file_digest(auth_path).await.unwrap_or_default());
    h.finalize().into()
}

fn digest_now(path: &Path, auth_path: &Path) -> [u8; 32] {
    let file = |p: &Path| -> [u8; 32] {
        std::fs::read(p).map(|b| Sha256::digest(&b).into()).unwrap_or_default()
    };
    let mut h = Sha256::new();
    h.update(file(path));
    h.update(file(auth_path));
    h.finalize().into()
}

async fn file_digest(path: &Path) -> Option<[u8; 32]> {
    tokio::fs::read(path).await.ok().map(|bytes| Sha256::digest(&bytes).into())
}
