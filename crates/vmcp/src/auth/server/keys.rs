//! The signing keys: the current key signs access tokens, every key (current and fallbacks)
//! verifies them and is published in the JWKS, so tokens signed before a rotation stay valid
//! until they expire.
//!
//! `kid` is the RFC 7638 SHA-256 JWK thumbprint, base64url (ToolHive's `DeriveKeyID`), so the
//! same key always has the same id and a restarted or replicated server publishes the same
//! JWKS. The algorithm follows the key: RSA → RS256, P-256 → ES256, P-384 → ES384, Ed25519 →
//! EdDSA. Private key material never leaves this module and is never printed.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use super::pem::{ParsedKey, parse_private_key};
use crate::auth::identity::Secret;

/// The `typ` header of vmcp's access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Why keys could not be loaded or a token not signed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A configured key is unusable.
    #[error("signing key {which}: {reason}")]
    Invalid {
        /// `current` or `fallback N`.
        which: String,
        /// What is wrong (never the key).
        reason: String,
    },
    /// Fallback keys were given without a current key.
    #[error("fallback signing keys need a current signing key")]
    FallbackWithoutCurrent,
    /// Key generation or signing failed in the crypto library.
    #[error("signing failed: {0}")]
    Crypto(String),
}

/// One key: its id, algorithm, public JWK and what jsonwebtoken signs and verifies with.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

impl SigningKey {
    fn from_parsed(key: ParsedKey) -> Result<Self, String> {
        let encoding = match key.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&key.der),
            Algorithm::EdDSA => EncodingKey::from_ed_der(&key.der),
            _ => EncodingKey::from_ec_der(&key.der),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding, key.alg)
            .map_err(|e| format!("cannot derive the public key: {e}"))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| format!("cannot compute the key thumbprint: {e}"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable public key: {e}"))?;
        Ok(Self { kid, alg: key.alg, encoding, decoding, jwk })
    }

    /// A fresh ES256 key (ToolHive's default algorithm for generated keys).
    pub fn generate_es256() -> Result<Self, KeyError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Crypto("EC key generation failed".into()))?;
        Self::from_parsed(ParsedKey { alg: Algorithm::ES256, der: pkcs8.as_ref().to_vec() })
            .map_err(KeyError::Crypto)
    }

    /// Loads a PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        Self::from_parsed(parse_private_key(pem)?)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm it signs with.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// Signs `claims` as a JWT with this key (`kid` and `typ` in the header).
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

/// The current key and the fallbacks.
#[derive(Debug)]
pub struct KeySet {
    /// `keys[0]` is the current key.
    keys: Vec<SigningKey>,
    ephemeral: bool,
}

impl KeySet {
    /// Loads the configured keys, or generates an ephemeral ES256 key when there are none.
    /// A fallback that is the current key again (same `kid`) is listed once.
    pub fn load(current: Option<&Secret>, fallbacks: &[Secret]) -> Result<Self, KeyError> {
        let Some(current) = current else {
            if !fallbacks.is_empty() {
                return Err(KeyError::FallbackWithoutCurrent);
            }
            return Ok(Self { keys: vec![SigningKey::generate_es256()?], ephemeral: true });
        };
        let mut keys = vec![
            SigningKey::from_pem(current.expose())
                .map_err(|reason| KeyError::Invalid { which: "current".into(), reason })?,
        ];
        for (i, pem) in fallbacks.iter().enumerate() {
            let key = SigningKey::from_pem(pem.expose())
                .map_err(|reason| KeyError::Invalid { which: format!("fallback {i}"), reason })?;
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key);
            }
        }
        Ok(Self { keys, ephemeral: false })
    }

    /// Whether the current key was generated at start (tokens die with the process).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The key with this id, if it is one of ours.
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// Every key's public JWK, current first.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.keys.iter().map(|k| k.jwk.clone()).collect() }
    }

    /// The distinct signing algorithms of all keys, current first.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut out = Vec::new();
        for k in &self.keys {
            if !out.contains(&k.alg) {
                out.push(k.alg);
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, Ed25519KeyPair};

    use super::super::pem::to_pem;
    use super::*;

    /// A fresh PKCS#8 PEM key: `ES256`, `ES384` or `EdDSA`.
    pub(crate) fn pem(alg: &str) -> Secret {
        let rng = SystemRandom::new();
        let der = match alg {
            "ES256" => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap()
            }
            "ES384" => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap()
            }
            _ => Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap(),
        };
        Secret::new(to_pem("PRIVATE KEY", der.as_ref()))
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint_and_stable() {
        let p = pem("ES256");
        let a = KeySet::load(Some(&p), &[]).unwrap();
        let b = KeySet::load(Some(&p), &[]).unwrap();
        assert_eq!(a.current().kid(), b.current().kid());
        assert_eq!(a.current().kid().len(), 43, "base64url SHA-256");
        let jwk = &a.jwks().keys[0];
        assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), a.current().kid());
        assert!(!a.is_ephemeral());
    }

    #[test]
    fn fallbacks_are_published_and_deduplicated() {
        let (cur, old) = (pem("ES384"), pem("EdDSA"));
        let set = KeySet::load(Some(&cur), &[old.clone(), cur.clone()]).unwrap();
        let jwks = set.jwks();
        assert_eq!(jwks.keys.len(), 2);
        assert_eq!(set.algorithms(), [Algorithm::ES384, Algorithm::EdDSA]);
        let old_kid = KeySet::load(Some(&old), &[]).unwrap().current().kid().to_string();
        assert!(set.find(&old_kid).is_some());
        // Published JWKs are public: no private parameter.
        let text = serde_json::to_string(&jwks).unwrap();
        assert!(!text.contains("\"d\""), "{text}");
    }

    #[test]
    fn no_key_means_an_ephemeral_es256_key() {
        let set = KeySet::load(None, &[]).unwrap();
        assert!(set.is_ephemeral());
        assert_eq!(set.current().alg(), Algorithm::ES256);
        assert!(matches!(
            KeySet::load(None, &[pem("ES256")]),
            Err(KeyError::FallbackWithoutCurrent)
        ));
        let bad = Secret::new("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let e = KeySet::load(Some(&bad), &[]).unwrap_err().to_string();
        assert!(e.starts_with("signing key current:"), "{e}");
        assert!(!format!("{:?}", set).contains("BEGIN"));
    }
}
