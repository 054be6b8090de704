//! PEM private keys to the DER forms jsonwebtoken's aws-lc backend signs with.
//!
//! Accepted: PKCS#8 (`PRIVATE KEY`: RSA, EC P-256/P-384, Ed25519), PKCS#1 (`RSA PRIVATE KEY`) and
//! SEC1 (`EC PRIVATE KEY`), the forms ToolHive's `LoadSigningKey` reads. Encrypted keys are
//! refused. Error messages never quote key material.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::Algorithm;

/// Smallest RSA modulus accepted (ToolHive's `MinRSAKeyBits`).
pub const MIN_RSA_BITS: usize = 2048;

/// A private key, as jsonwebtoken's `EncodingKey::from_*_der` wants it: PKCS#1 for RSA, PKCS#8
/// for EC and Ed25519.
pub struct ParsedKey {
    /// The algorithm the key signs with.
    pub alg: Algorithm,
    /// DER bytes for jsonwebtoken.
    pub der: Vec<u8>,
}

/// Parses the first private key block of `pem`.
pub fn parse_private_key(pem: &str) -> Result<ParsedKey, String> {
    let (label, der) = first_private_block(pem)?;
    match label.as_str() {
        "RSA PRIVATE KEY" => rsa_pkcs1(der),
        "EC PRIVATE KEY" => ec_sec1(&der),
        "PRIVATE KEY" => pkcs8(der),
        "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported".into()),
        other => Err(format!("unsupported PEM block {other:?}")),
    }
}

/// The label and decoded body of the first `-----BEGIN ...PRIVATE KEY-----` block (an `EC
/// PARAMETERS` block before it, as `openssl ecparam -genkey` writes, is skipped).
fn first_private_block(pem: &str) -> Result<(String, Vec<u8>), String> {
    let mut rest = pem;
    loop {
        let start = rest.find("-----BEGIN ").ok_or("no PEM private key block found")?;
        let after = &rest[start + 11..];
        let end_label = after.find("-----").ok_or("malformed PEM header")?;
        let label = after[..end_label].to_string();
        let body_start = &after[end_label + 5..];
        let footer = format!("-----END {label}-----");
        let end = body_start.find(&footer).ok_or("PEM block has no matching END line")?;
        if label.ends_with("PRIVATE KEY") {
            let b64: String =
                body_start[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
            if b64.contains(':') {
                return Err("encrypted (Proc-Type) PEM keys are not supported".into());
            }
            let der = STANDARD.decode(b64).map_err(|_| "PEM body is not valid base64")?;
            return Ok((label, der));
        }
        rest = &body_start[end + footer.len()..];
    }
}

fn rsa_pkcs1(der: Vec<u8>) -> Result<ParsedKey, String> {
    let pair = RsaKeyPair::from_der(&der).map_err(|e| match e.to_string().as_str() {
        "TooSmall" => format!("RSA key is below the minimum of {MIN_RSA_BITS} bits"),
        other => format!("invalid RSA key: {other}"),
    })?;
    check_rsa_size(&pair)?;
    Ok(ParsedKey { alg: Algorithm::RS256, der })
}

fn check_rsa_size(pair: &RsaKeyPair) -> Result<(), String> {
    let bits = pair.public_modulus_len() * 8;
    if bits < MIN_RSA_BITS {
        return Err(format!("RSA key of {bits} bits is below the minimum of {MIN_RSA_BITS}"));
    }
    Ok(())
}

fn ec_sec1(der: &[u8]) -> Result<ParsedKey, String> {
    for (alg, signing) in [
        (Algorithm::ES256, &ECDSA_P256_SHA256_FIXED_SIGNING),
        (Algorithm::ES384, &ECDSA_P384_SHA384_FIXED_SIGNING),
    ] {
        if let Ok(pair) = EcdsaKeyPair::from_private_key_der(signing, der) {
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| "cannot re-encode EC key")?;
            return Ok(ParsedKey { alg, der: pkcs8.as_ref().to_vec() });
        }
    }
    Err("EC key is not on P-256 or P-384 (or is malformed)".into())
}

fn pkcs8(der: Vec<u8>) -> Result<ParsedKey, String> {
    if let Ok(pair) = RsaKeyPair::from_pkcs8(&der) {
        check_rsa_size(&pair)?;
        let pkcs1 = pkcs8_inner_key(&der).ok_or("malformed PKCS#8 RSA key")?;
        return Ok(ParsedKey { alg: Algorithm::RS256, der: pkcs1.to_vec() });
    }
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok() {
        return Ok(ParsedKey { alg: Algorithm::ES256, der });
    }
    if EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der).is_ok() {
        return Ok(ParsedKey { alg: Algorithm::ES384, der });
    }
    if Ed25519KeyPair::from_pkcs8(&der).is_ok() {
        return Ok(ParsedKey { alg: Algorithm::EdDSA, der });
    }
    Err("unsupported private key (RSA ≥ 2048, EC P-256/P-384 or Ed25519 expected)".into())
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo` (for RSA, the PKCS#1 key).
fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = der_element(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _version, rest) = der_element(info)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, _algorithm, rest) = der_element(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, key, _) = der_element(rest)?;
    (tag == 0x04).then_some(key)
}

/// One DER element: (tag, contents, what follows).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// PEM-encodes DER bytes (used to hand generated keys around in tests).
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;

    use super::*;

    // A 1024-bit RSA key (`openssl genrsa -traditional 1024`), only to be refused.
    const RSA_1024: &str = include_str!("testdata/rsa1024.pem");

    #[test]
    fn every_supported_form_parses() {
        let rng = SystemRandom::new();
        let p256 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let k = parse_private_key(&to_pem("PRIVATE KEY", p256.as_ref())).unwrap();
        assert_eq!(k.alg, Algorithm::ES256);

        let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        assert_eq!(
            parse_private_key(&to_pem("PRIVATE KEY", p384.as_ref())).unwrap().alg,
            Algorithm::ES384
        );

        // SEC1, after an EC PARAMETERS block as openssl writes it.
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, p256.as_ref()).unwrap();
        let sec1 = pair.private_key().as_der().unwrap();
        let pem = format!(
            "{}{}",
            to_pem("EC PARAMETERS", &[6, 8, 42, 134, 72, 206, 61, 3, 1, 7]),
            to_pem("EC PRIVATE KEY", sec1.as_ref())
        );
        assert_eq!(parse_private_key(&pem).unwrap().alg, Algorithm::ES256);

        let ed = Ed25519KeyPair::generate_pkcs8v1(&rng).unwrap();
        assert_eq!(
            parse_private_key(&to_pem("PRIVATE KEY", ed.as_ref())).unwrap().alg,
            Algorithm::EdDSA
        );

        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let rsa8: Pkcs8V1Der = rsa.as_der().unwrap();
        let k = parse_private_key(&to_pem("PRIVATE KEY", rsa8.as_ref())).unwrap();
        assert_eq!(k.alg, Algorithm::RS256);
        // The inner key is PKCS#1 and parses as such, also from an `RSA PRIVATE KEY` block.
        let k1 = parse_private_key(&to_pem("RSA PRIVATE KEY", &k.der)).unwrap();
        assert_eq!((k1.alg, k1.der), (Algorithm::RS256, k.der));
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        let e = parse_private_key(RSA_1024).err().unwrap();
        assert!(e.contains("2048 bits"), "{e}");
        assert!(parse_private_key("nothing here").is_err());
        assert!(parse_private_key(&to_pem("ENCRYPTED PRIVATE KEY", b"xx")).is_err());
        let e = parse_private_key(&to_pem("PRIVATE KEY", b"not a key")).err().unwrap();
        assert!(!e.contains("not a key"));
        assert!(parse_private_key(&to_pem("PUBLIC KEY", b"x")).is_err());
    }
}
