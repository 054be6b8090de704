//! Encryption at rest of the vault's entries: AES-256-GCM with a fresh random 96-bit nonce per
//! write, and additional authenticated data binding each blob to its (user, upstream) key, so a
//! blob copied under another key does not open.
//!
//! Blob layout: `version (1 byte) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//!
//! Invariant: key material never appears in `Debug` or an error message.

use std::fmt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

/// Length of a vault key in bytes.
pub const KEY_LEN: usize = 32;
/// Format version written as the first byte of every blob.
const BLOB_VERSION: u8 = 1;
/// Domain separation for the AAD: a blob of this vault never opens as anything else.
const AAD_LABEL: &[u8] = b"vmcp-upstream-vault-v1\0";
/// Largest key file read (a key is 32 bytes; its hex text with a newline is 65).
const MAX_KEY_FILE: u64 = 4096;

/// Why a vault key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum VaultKeyError {
    /// The key is not 32 bytes (or text that decodes to 32 bytes).
    #[error("a vault key must be 32 bytes (raw, or 64 hex digits, or base64 of 32 bytes)")]
    BadKey,
    /// The key file could not be read.
    #[error("cannot read vault key file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong (never the file's content).
        reason: String,
    },
    /// The environment variable is not set.
    #[error("environment variable {0} (vault key) is not set")]
    MissingEnv(String),
    /// The system random generator failed.
    #[error("no randomness available for the vault key")]
    Random,
}

/// The AES-256-GCM key the vault encrypts its entries with. Redacted in `Debug`.
pub struct VaultKey {
    key: LessSafeKey,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(***)")
    }
}

impl VaultKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VaultKeyError> {
        if bytes.len() != KEY_LEN {
            return Err(VaultKeyError::BadKey);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| VaultKeyError::BadKey)?;
        Ok(Self { key: LessSafeKey::new(unbound) })
    }

    /// A key from text: 64 hex digits, or standard/URL-safe base64 (padded or not) of 32 bytes.
    /// Surrounding whitespace is ignored.
    pub fn from_text(text: &str) -> Result<Self, VaultKeyError> {
        let t = text.trim();
        if t.len() == 2 * KEY_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Self::from_bytes(&decode_hex(t).ok_or(VaultKeyError::BadKey)?);
        }
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(bytes) = engine.decode(t)
                && bytes.len() == KEY_LEN
            {
                return Self::from_bytes(&bytes);
            }
        }
        Err(VaultKeyError::BadKey)
    }

    /// A key from a file holding either exactly 32 raw bytes, or the key as text (see
    /// [`VaultKey::from_text`]). Files larger than 4 KiB are refused.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, VaultKeyError> {
        let path = path.as_ref();
        let err = |reason: String| VaultKeyError::File { path: path.display().to_string(), reason };
        let meta = std::fs::metadata(path).map_err(|e| err(e.kind().to_string()))?;
        if meta.len() > MAX_KEY_FILE {
            return Err(err("file too large for a key".into()));
        }
        let bytes = std::fs::read(path).map_err(|e| err(e.kind().to_string()))?;
        if bytes.len() == KEY_LEN {
            return Self::from_bytes(&bytes);
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultKeyError::BadKey)?;
        Self::from_text(text)
    }

    /// A key from the environment variable `var`, as text (see [`VaultKey::from_text`]).
    pub fn from_env(var: &str) -> Result<Self, VaultKeyError> {
        let value = std::env::var(var).map_err(|_| VaultKeyError::MissingEnv(var.to_string()))?;
        Self::from_text(&value)
    }

    /// A fresh random key: for a store that does not outlive the process (the in-memory
    /// default), where nothing encrypted with it must ever be read by another process.
    pub fn generate() -> Result<Self, VaultKeyError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| VaultKeyError::Random)?;
        Self::from_bytes(&bytes)
    }

    /// Encrypts `plaintext` of another kind of record than a vault entry (a pending login's
    /// secrets in shared storage), bound to (`kind`, `id`). `kind` is kept apart from every
    /// vault user id by a leading NUL, so such a blob never opens as a vault entry.
    pub fn seal_record(&self, kind: &str, id: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
        self.seal(&format!("\0{kind}"), id, plaintext)
    }

    /// Opens what [`VaultKey::seal_record`] sealed for (`kind`, `id`).
    pub fn open_record(&self, kind: &str, id: &str, blob: &[u8]) -> Option<Vec<u8>> {
        self.open(&format!("\0{kind}"), id, blob)
    }

    /// Encrypts `plaintext` for (user, upstream).
    pub(super) fn seal(&self, user: &str, upstream: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(BLOB_VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(user, upstream)),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Decrypts a blob sealed for (user, upstream); `None` when it was sealed for another key,
    /// under another vault key, or tampered with.
    pub(super) fn open(&self, user: &str, upstream: &str, blob: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = blob.split_first()?;
        if version != BLOB_VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(aad(user, upstream)), &mut body).ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }
}

/// `label || len(user) (u32 BE) || user || upstream`: the length prefix keeps ("ab", "c") and
/// ("a", "bc") apart.
fn aad(user: &str, upstream: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(AAD_LABEL.len() + 4 + user.len() + upstream.len());
    out.extend_from_slice(AAD_LABEL);
    out.extend_from_slice(&(user.len() as u32).to_be_bytes());
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(upstream.as_bytes());
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(*p.get(1)?)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> VaultKey {
        VaultKey::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = key();
        let blob = k.seal("alice", "github", b"tokens").unwrap();
        assert_eq!(k.open("alice", "github", &blob).unwrap(), b"tokens");
        // A fresh nonce per write: the same plaintext never gives the same blob.
        assert_ne!(blob, k.seal("alice", "github", b"tokens").unwrap());
    }

    #[test]
    fn tampering_and_aad_mismatch_are_detected() {
        let k = key();
        let blob = k.seal("alice", "github", b"tokens").unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(k.open("alice", "github", &bad).is_none(), "flipped byte {i}");
        }
        assert!(k.open("bob", "github", &blob).is_none());
        assert!(k.open("alice", "google", &blob).is_none());
        // The length prefix separates the two parts of the key.
        let b2 = k.seal("ab", "c", b"x").unwrap();
        assert!(k.open("a", "bc", &b2).is_none());
        assert!(k.open("alice", "github", &blob[..blob.len() - 1]).is_none());
        assert!(k.open("alice", "github", &[]).is_none());
        let other = VaultKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(other.open("alice", "github", &blob).is_none());
    }

    #[test]
    fn key_forms() {
        let raw = [0xabu8; 32];
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        let sealed = VaultKey::from_bytes(&raw).unwrap().seal("u", "p", b"x").unwrap();
        for text in [hex.clone(), hex.to_uppercase(), format!("  {b64}\n")] {
            assert_eq!(VaultKey::from_text(&text).unwrap().open("u", "p", &sealed).unwrap(), b"x");
        }
        assert!(VaultKey::from_text("short").is_err());
        assert!(VaultKey::from_bytes(&[1u8; 31]).is_err());
        assert_eq!(format!("{:?}", VaultKey::from_bytes(&raw).unwrap()), "VaultKey(***)");

        let dir = std::env::temp_dir();
        let f1 = dir.join(format!("vmcp-vault-key-raw-{}", std::process::id()));
        std::fs::write(&f1, raw).unwrap();
        assert!(VaultKey::from_file(&f1).unwrap().open("u", "p", &sealed).is_some());
        let f2 = dir.join(format!("vmcp-vault-key-hex-{}", std::process::id()));
        std::fs::write(&f2, format!("{hex}\n")).unwrap();
        assert!(VaultKey::from_file(&f2).unwrap().open("u", "p", &sealed).is_some());
        let _ = std::fs::remove_file(f1);
        let _ = std::fs::remove_file(f2);
        assert!(matches!(
            VaultKey::from_env("VMCP_TEST_SURELY_UNSET_VAULT_KEY"),
            Err(VaultKeyError::MissingEnv(_))
        ));
        let g = VaultKey::generate().unwrap();
        assert!(g.open("u", "p", &g.seal("u", "p", b"y").unwrap()).is_some());
    }
}
