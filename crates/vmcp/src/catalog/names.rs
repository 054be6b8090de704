//! Name rules: the prefix template and the mapping of any string onto a valid advertised name.
//!
//! Invariants: [`sanitize`] is a pure function of its input (no random seeds, no locale), always
//! returns 1 to [`MAX_NAME_LEN`] chars of `[A-Za-z0-9_.-]`, and is the identity on names that are
//! already valid. Long names keep a readable head plus a hash of the whole original, so two long
//! names that differ only in their tails still (almost always) get different advertised names.

/// The longest advertised tool or prompt name (MCP clients commonly reject longer ones).
pub const MAX_NAME_LEN: usize = 64;

/// Chars kept from a long name before the `_` + 8-hex-digit hash suffix (55 + 1 + 8 = 64).
const HEAD_LEN: usize = MAX_NAME_LEN - 9;

/// True if `name` may be advertised as is.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(is_name_char)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Maps `name` onto a valid advertised name.
///
/// Every char outside `[A-Za-z0-9_.-]` becomes `_` (one `_` per char, not per byte). A result
/// longer than 64 chars keeps its first 55 chars and gets `_` plus 8 lowercase hex digits of the
/// FNV-1a hash of the full, unsanitized `name`. The empty name becomes `_`.
pub fn sanitize(name: &str) -> String {
    if is_valid(name) {
        return name.to_owned();
    }
    if name.is_empty() {
        return "_".to_owned();
    }
    let replaced: String = name.chars().map(|c| if is_name_char(c) { c } else { '_' }).collect();
    // After replacement every char is ASCII, so byte length is char length.
    if replaced.len() <= MAX_NAME_LEN {
        return replaced;
    }
    format!("{}_{:08x}", &replaced[..HEAD_LEN], fold32(fnv1a64(name.as_bytes())))
}

/// The prefix for `backend`: `format` with `{backend}` and its alias `{workload}` replaced.
pub fn prefix(format: &str, backend: &str) -> String {
    format.replace("{backend}", backend).replace("{workload}", backend)
}

/// The prefix template used when `prefixFormat` is not configured.
pub const DEFAULT_PREFIX_FORMAT: &str = "{backend}_";

/// FNV-1a, 64-bit. Hand-written because std's hashers are randomly seeded (or unspecified), and
/// advertised names must be identical across runs, hosts and releases.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// XOR-folds a 64-bit hash to 32 bits so all of it contributes to the 8 hex digits.
fn fold32(h: u64) -> u32 {
    // Truncation is the point: the high half has already been mixed into the low half.
    ((h >> 32) ^ h) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn valid_names_are_unchanged() {
        for n in ["a", "get_weather", "x.y-z_1", &"a".repeat(64)] {
            assert_eq!(sanitize(n), n);
        }
    }

    #[test]
    fn invalid_chars_become_underscores() {
        assert_eq!(sanitize("get weather"), "get_weather");
        assert_eq!(sanitize("a/b:c"), "a_b_c");
        // One underscore per char, even for multi-byte chars.
        assert_eq!(sanitize("héllo"), "h_llo");
        assert_eq!(sanitize(""), "_");
    }

    #[test]
    fn long_names_are_truncated_with_a_stable_hash() {
        let long = "a".repeat(100);
        let s = sanitize(&long);
        assert_eq!(s.len(), 64);
        assert!(s.starts_with(&"a".repeat(55)));
        assert_eq!(&s[55..56], "_");
        assert!(s[56..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(s, sanitize(&long), "stable");
        let other = format!("{}b", "a".repeat(99));
        assert_ne!(sanitize(&other), s, "the tail changes the hash");
        assert!(is_valid(&s));
        // Exactly 65 chars is already too long.
        assert_eq!(sanitize(&"b".repeat(65)).len(), 64);
    }

    #[test]
    fn long_names_with_invalid_chars_are_valid() {
        let s = sanitize(&"é ".repeat(80));
        assert!(is_valid(&s));
        assert_eq!(s.len(), 64);
    }

    #[test]
    fn prefix_accepts_both_placeholders() {
        assert_eq!(prefix(DEFAULT_PREFIX_FORMAT, "gh"), "gh_");
        assert_eq!(prefix("{workload}.", "gh"), "gh.");
        assert_eq!(prefix("x-{backend}-{workload}-", "gh"), "x-gh-gh-");
        assert_eq!(prefix("static_", "gh"), "static_");
    }
}
