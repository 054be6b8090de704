//! Go-style duration strings (`30s`, `1m30s`, `250ms`, `1.5h`), as ToolHive configs write them
//! (Go's `time.ParseDuration`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// Parses a Go duration string as `time.ParseDuration` does: `[+]?([0-9]*(\.[0-9]*)?(ns|us|µs|μs|ms|s|m|h))+`,
/// or a bare `0`. Negative durations (`-1h`), which Go accepts, are rejected: no setting here can use
/// one.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected e.g. \"30s\", \"1m30s\", \"250ms\"");
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.starts_with('-') {
        return Err(format!("invalid duration {text:?}: must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        // Go accepts "1." and ".5" but not a lone ".".
        let number = &rest[..num_len];
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            // U+00B5 (micro sign) and U+03BC (Greek mu), as Go accepts both.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// `d` the way Go prints round durations (`1h`, `30m`, `1h30m`, `45s`, `250ms`), for messages.
pub fn display(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d.subsec_nanos() != 0 {
        if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
            return format!("{}ms", d.as_millis());
        }
        return format!("{}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Serde adapter for a required duration.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(D::Error::custom)
}

/// Serde adapter for `Option<Duration>`.
pub mod option {
    use super::*;

    /// Deserializes an optional duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?.map(|t| parse(&t).map_err(D::Error::custom)).transpose()
    }
}

/// Serde adapter for a map of durations.
pub mod map {
    use super::*;

    /// Deserializes a map of name to duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        // Parsing each value as it is read (rather than after the whole map) makes the error
        // point at the bad value instead of the start of the map.
        Ok(BTreeMap::<String, Parsed>::deserialize(d)?.into_iter().map(|(k, v)| (k, v.0)).collect())
    }

    /// A duration parsed while it is deserialized.
    struct Parsed(Duration);

    impl<'de> Deserialize<'de> for Parsed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::deserialize(d).map(Parsed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse("").is_err());
        assert!(parse("30").is_err());
        assert!(parse("s").is_err());
        assert!(parse("3x").is_err());
    }

    #[test]
    fn parses_every_go_form() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("2us"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("2\u{b5}s"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("2\u{3bc}s"), Ok(Duration::from_micros(2)));
        assert_eq!(parse("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert!(parse(".s").is_err());
        assert!(parse("1").is_err());
        assert!(parse("1h 30m").is_err());
        assert_eq!(parse("-1h"), Err("invalid duration \"-1h\": must not be negative".to_owned()));
    }

    #[test]
    fn displays_like_go() {
        assert_eq!(display(Duration::from_secs(3600)), "1h");
        assert_eq!(display(Duration::from_secs(5400)), "1h30m");
        assert_eq!(display(Duration::from_secs(30)), "30s");
        assert_eq!(display(Duration::from_secs(720 * 3600)), "720h");
        assert_eq!(display(Duration::from_millis(250)), "250ms");
        assert_eq!(display(Duration::ZERO), "0s");
    }
}
