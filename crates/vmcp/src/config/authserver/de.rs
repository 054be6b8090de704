//! Serde helpers that read values the way ToolHive's Go loader (gopkg.in/yaml.v3 into Go zero
//! values) does: `null` is the zero value, and an empty string means "not set".

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error as _};

/// `null` (or `key:` with no value) reads as the type's default, as a Go nil slice or map would.
pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An optional string: `null` and `""` are both "not set".
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// An optional file path: `null` and `""` are both "not set".
pub fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(opt_string(d)?.map(PathBuf::from))
}

/// An optional Go duration string: `null` and `""` are "not set" (ToolHive then applies its
/// default), anything else must parse.
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    opt_string(d)?.map(|t| crate::config::duration::parse(&t).map_err(D::Error::custom)).transpose()
}
