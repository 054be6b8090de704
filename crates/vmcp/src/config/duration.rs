//! Go-style duration strings (`30s`, `1m30s`, `250ms`, `1.5h`), as ToolHive configs write them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// Parses `([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: expected e.g. \"30s\", \"1m30s\", \"250ms\"");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
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
}
