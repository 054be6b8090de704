//! Reading the config files (the main one and `authserver-config.yaml` beside it): YAML parsing,
//! serde error translation and the final validation pass, the same for both documents.
//!
//! serde-saphyr reports a line and column but no key path, and its wording is aimed at Rust
//! developers ("unknown variant `x`"). Each error is translated here into `FILE:LINE:COL: PATH:
//! PROBLEM`, with the path recovered from the position via [`Index`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Error as YamlError;

use super::locate::{Index, Pos};
use super::validate::{self, Finding};
use super::{Config, authserver};

/// One problem in a config file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name given to [`parse`] / [`load`] (or the `authserver-config.yaml` beside it).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// Key path such as `backends[1].url`; empty for the whole document or a syntax error.
    pub path: String,
    /// What is wrong, in words for the person editing the file.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a config could not be loaded. Display is meant for a terminal: one problem per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The path given to [`load`], or the `authserver-config.yaml` beside it.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{0}")]
    Syntax(Problem),
    /// Valid YAML that does not fit the schema (unknown key, wrong type, bad value).
    #[error("{0}")]
    Schema(Problem),
    /// The config fits the schema but is inconsistent; every problem found is listed.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The located problems (empty for [`ConfigError::Read`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Syntax(p) | ConfigError::Schema(p) => std::slice::from_ref(p),
            ConfigError::Invalid(ps) => ps,
        }
    }
}

fn join_lines(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n")
}

/// Reads, parses and validates the config file at `path`, with `authserver-config.yaml` from
/// the same directory when that file exists (as ToolHive's vMCP does).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let as_path = path.with_file_name(authserver::FILE_NAME);
    let as_text = match std::fs::read_to_string(&as_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ConfigError::Read { path: as_path, source }),
    };
    let as_source = as_path.display().to_string();
    let auth = as_text.as_deref().map(|t| (t, as_source.as_str()));
    parse_files(&text, &path.display().to_string(), auth)
}

/// Parses and validates config `text` alone (no authorization server); `source` names it in
/// messages (usually the file name).
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    parse_files(text, source, None)
}

/// Parses and validates config `text` together with the text of `authserver-config.yaml`
/// (`auth_text`, named `auth_source` in messages).
pub fn parse_with_auth_server(
    text: &str,
    source: &str,
    auth_text: &str,
    auth_source: &str,
) -> Result<Config, ConfigError> {
    parse_files(text, source, Some((auth_text, auth_source)))
}

/// The main file and, optionally, the authorization server file (text, source). Syntax and
/// schema errors stop at the first file that has one; semantic problems of both files are
/// reported together, the main file's first, each file's in line order.
fn parse_files(
    text: &str,
    source: &str,
    auth: Option<(&str, &str)>,
) -> Result<Config, ConfigError> {
    let (mut config, index) =
        parse_document::<Config>(text, source, "expected at least `name` and `backends`")?;
    let mut auth_problems = Vec::new();
    if let Some((auth_text, auth_source)) = auth {
        let (auth_config, auth_index) = parse_document::<authserver::AuthServerConfig>(
            auth_text,
            auth_source,
            "expected at least `issuer`, `upstreams` and `allowed_audiences`",
        )?;
        let findings = authserver::validate::check(&auth_config, &auth_index);
        auth_problems = locate(findings, &auth_index, auth_source);
        config.auth_server = Some(auth_config);
    }
    let mut findings = validate::check(&config, &index);
    findings.extend(super::ca_bundle::load_all(&mut config));
    let mut problems = locate(findings, &index, source);
    problems.extend(auth_problems);
    if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(problems)) }
}

/// Deserializes one YAML document into `T`, translating serde-saphyr's errors into located
/// problems, and returns it with the document's position index. `expected` says what an empty
/// file lacks.
fn parse_document<T: serde::de::DeserializeOwned>(
    text: &str,
    source: &str,
    expected: &str,
) -> Result<(T, Index), ConfigError> {
    let parsed: Result<T, YamlError> = serde_saphyr::from_str(text);
    let value = match parsed {
        Ok(value) => value,
        Err(err) => return Err(translate(err.without_snippet(), text, source, expected)),
    };
    let index = Index::build(text);
    if index.pos("").is_none() {
        // serde-saphyr reads a file of only comments as null, which then fails as "name missing";
        // saying the file is empty is closer to the truth.
        let message = format!("the file is empty; {expected}");
        return Err(ConfigError::Schema(problem(source, None, String::new(), message)));
    }
    Ok((value, index))
}

/// Locates semantic findings in the document `index` was built from, in file order; unlocated
/// ones go last. The sort is stable, so problems on the same node keep the order the checks found
/// them in.
fn locate(findings: Vec<Finding>, index: &Index, source: &str) -> Vec<Problem> {
    let mut problems: Vec<Problem> = findings
        .into_iter()
        .map(|finding| {
            let pos = index.pos_or_ancestor(&finding.path);
            problem(source, pos, finding.path, finding.message)
        })
        .collect();
    problems.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
    problems
}

fn problem(file: &str, pos: Option<Pos>, path: String, message: String) -> Problem {
    Problem {
        file: file.to_owned(),
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        path,
        message,
    }
}

/// Turns a serde-saphyr error into a located [`ConfigError`].
fn translate(err: &YamlError, text: &str, source: &str, expected: &str) -> ConfigError {
    let mut pos =
        err.location().map(|l| Pos { line: l.line() as usize, column: l.column() as usize });
    // Errors about a key point at the key; errors about a value at the value (whose position a
    // block mapping shares with its first key, hence the preference).
    let prefer_key =
        matches!(err, YamlError::SerdeUnknownField { .. } | YamlError::DuplicateMappingKey { .. });
    let index = Index::build(text);
    let mut path = pos.and_then(|p| index.path_at(p, prefer_key)).unwrap_or_default().to_owned();
    // A missing key is reported where serde-saphyr stopped reading the mapping, which may be its
    // last key: name and locate the mapping instead.
    if let YamlError::SerdeMissingField { .. } = err
        && let Some((mapping, at)) = pos.and_then(|p| index.mapping_at(p))
    {
        (path, pos) = (mapping.to_owned(), Some(at));
    }
    let (syntax, message) = describe(err, text, expected);
    let p = problem(source, pos, if syntax { String::new() } else { path }, message);
    if syntax { ConfigError::Syntax(p) } else { ConfigError::Schema(p) }
}

/// The message for a serde-saphyr error, and whether it is a YAML syntax error.
fn describe(err: &YamlError, text: &str, expected: &str) -> (bool, String) {
    let message = match err {
        YamlError::ExternalMessage { msg, .. } => return (true, format!("invalid YAML: {msg}")),
        YamlError::Eof { .. } if text.trim().is_empty() => format!("the file is empty; {expected}"),
        YamlError::SerdeUnknownField { field, expected, .. } => {
            match suggest(field, expected.iter().copied()) {
                Some(s) => format!("unknown key; did you mean {s:?}?"),
                None if expected.is_empty() => "unknown key".to_owned(),
                None => format!("unknown key; expected one of: {}", expected.join(", ")),
            }
        }
        YamlError::SerdeUnknownVariant { variant, expected, .. } => {
            let allowed = expected.join(", ");
            match suggest(variant, expected.iter().copied()) {
                Some(s) => {
                    format!("unknown value {variant:?}; did you mean {s:?}? (allowed: {allowed})")
                }
                None => format!("unknown value {variant:?}; allowed values: {allowed}"),
            }
        }
        YamlError::SerdeMissingField { field, .. } => format!("missing key {field:?}"),
        YamlError::DuplicateMappingKey { .. } => "key given twice".to_owned(),
        YamlError::SerdeInvalidType { unexpected, expected, .. }
        | YamlError::SerdeInvalidValue { unexpected, expected, .. } => {
            format!("expected {expected}, found {unexpected}")
        }
        YamlError::Unexpected { expected, .. } => format!("expected {}", noun(expected)),
        YamlError::InvalidScalar { ty, .. } => format!("expected {}", noun(ty)),
        YamlError::ExternallyTaggedEnumExpectedScalarOrMapping { .. } => {
            "expected a single value, not a list or mapping".to_owned()
        }
        YamlError::Message { msg, .. } => msg.clone(),
        other => strip_location(&other.to_string()),
    };
    (false, message)
}

/// Plain words for serde-saphyr's type names.
fn noun(what: &str) -> String {
    match what {
        "sequence start" => "a list".to_owned(),
        "mapping start" => "a mapping (key: value lines)".to_owned(),
        "string scalar" => "a string".to_owned(),
        "boolean" | "bool" => "true or false".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative whole number".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        other => other.to_owned(),
    }
}

/// Drops serde-saphyr's trailing " at line N, column M": the location is printed up front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => message[..i].to_owned(),
        _ => message.to_owned(),
    }
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Case and separators are the commonest slips (`max_request_body_bytes`, `Streamable_HTTP`).
    let norm =
        |s: &str| s.chars().filter(|c| *c != '_' && *c != '-').collect::<String>().to_lowercase();
    let word_n = norm(word);
    candidates
        .into_iter()
        .map(|c| {
            let c_n = norm(c);
            // Two edits turn short words into anything; allow one there.
            let max_edits = if word_n.len() <= 4 { 1 } else { 2 };
            let close = c_n == word_n
                || strsim::levenshtein(&word_n, &c_n) <= max_edits
                || strsim::jaro_winkler(&word_n, &c_n) >= 0.85;
            (c, close, strsim::jaro_winkler(&word_n, &c_n))
        })
        .filter(|(_, close, _)| *close)
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(c, _, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as `t.yaml`, expecting exactly one located problem; returns (line, path, message).
    fn one(text: &str) -> (Option<usize>, String, String) {
        let err = match parse(text, "t.yaml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        };
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        let p = &problems[0];
        assert_eq!(p.to_string(), err.to_string());
        (p.line, p.path.clone(), p.message.clone())
    }

    const HEAD: &str = "name: gw\nbackends:\n  - name: a\n    transport: stdio\n    command: x\n";

    #[test]
    fn valid_config_loads() {
        let cfg = match parse(HEAD, "t.yaml") {
            Ok(cfg) => cfg,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(cfg.backends[0].command.as_deref(), Some("x"));
    }

    #[test]
    fn syntax_error_has_parser_position() {
        let text = "name: gw\n  bad: indent\n";
        let err = match parse(text, "t.yaml") {
            Err(e @ ConfigError::Syntax(_)) => e,
            other => panic!("{other:?}"),
        };
        let p = &err.problems()[0];
        assert_eq!((p.line, p.column, p.path.as_str()), (Some(2), Some(6), ""));
        assert!(
            p.message.starts_with("invalid YAML: mapping values are not allowed"),
            "{}",
            p.message
        );
        assert!(err.to_string().starts_with("t.yaml:2:6: invalid YAML"), "{err}");
    }

    #[test]
    fn unknown_key_suggests_close_match() {
        let text = format!("{HEAD}  - name: b\n    transprot: sse\n");
        let err = match parse(&text, "quickstart.yaml") {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(
            err.to_string(),
            "quickstart.yaml:7:5: backends[1].transprot: unknown key; did you mean \"transport\"?"
        );
    }

    #[test]
    fn unknown_key_lists_expected_keys() {
        let (line, path, msg) = one("name: gw\nfrobnicate: 1\n");
        assert_eq!((line, path.as_str()), (Some(2), "frobnicate"));
        assert!(msg.starts_with("unknown key; expected one of: name, groupRef, backends"), "{msg}");
    }

    #[test]
    fn wrong_types() {
        let (line, path, msg) = one("name: gw\nbackends: 5\n");
        assert_eq!((line, path.as_str(), msg.as_str()), (Some(2), "backends", "expected a list"));

        let (line, path, msg) = one(&format!("{HEAD}    timeout: true\n"));
        assert_eq!((line, path.as_str()), (Some(6), "backends[0].timeout"));
        assert!(msg.starts_with("invalid duration \"true\""), "{msg}");

        let (line, path, msg) = one("name: [gw]\n");
        assert_eq!((line, path.as_str(), msg.as_str()), (Some(1), "name", "expected a string"));

        let (line, path, msg) = one("name: gw\nbackends:\n  - name: a\n    transport: [stdio]\n");
        assert_eq!((line, path.as_str()), (Some(4), "backends[0].transport"));
        assert_eq!(msg, "expected a single value, not a list or mapping");

        let (line, path, msg) = one("name: gw\nserver:\n  maxRequestBodyBytes: -1\n");
        assert_eq!((line, path.as_str()), (Some(3), "server.maxRequestBodyBytes"));
        assert_eq!(msg, "expected a non-negative whole number");
    }

    #[test]
    fn bad_enum_value_lists_allowed_and_suggests() {
        let (line, path, msg) = one("name: gw\nbackends:\n  - name: a\n    transport: websocket\n");
        assert_eq!((line, path.as_str()), (Some(4), "backends[0].transport"));
        assert_eq!(msg, "unknown value \"websocket\"; allowed values: streamable-http, sse, stdio");

        let (_, _, msg) = one("name: gw\nbackends:\n  - name: a\n    transport: streamable_http\n");
        assert_eq!(
            msg,
            "unknown value \"streamable_http\"; did you mean \"streamable-http\"? \
             (allowed: streamable-http, sse, stdio)"
        );
    }

    #[test]
    fn invalid_duration() {
        let (line, path, msg) = one("name: gw\noperational:\n  timeouts:\n    default: 30\n");
        assert_eq!((line, path.as_str()), (Some(4), "operational.timeouts.default"));
        assert!(msg.starts_with("invalid duration \"30\": expected e.g. \"30s\""), "{msg}");

        let (line, path, _) =
            one("name: gw\noperational:\n  timeouts:\n    perWorkload:\n      a: 3q\n");
        assert_eq!((line, path.as_str()), (Some(5), "operational.timeouts.perWorkload.a"));
    }

    #[test]
    fn missing_required_key_and_duplicates_and_empty() {
        let (line, path, msg) = one("name: gw\nbackends:\n  - name: a\n");
        assert_eq!(
            (line, path.as_str(), msg.as_str()),
            (Some(3), "backends[0]", "missing key \"transport\"")
        );

        // Also when the mapping has other keys, read before the error is noticed.
        let (line, path, msg) =
            one("name: gw\nbackends:\n  - name: a\n    url: http://x\n    timeout: 1s\n");
        assert_eq!(
            (line, path.as_str(), msg.as_str()),
            (Some(3), "backends[0]", "missing key \"transport\"")
        );

        let (line, path, msg) = one("name: gw\nname: other\n");
        assert_eq!((line, path.as_str(), msg.as_str()), (Some(2), "name", "key given twice"));

        let (_, _, msg) = one("\n# nothing\n");
        assert!(msg.starts_with("the file is empty"), "{msg}");
    }

    #[test]
    fn env_references_and_anchors_pass_through() {
        let text = "name: gw\nbackends:\n  - &b\n    name: a\n    transport: stdio\n    command: x\n    \
                    env: {TOKEN: '${TOKEN}'}\n  - name: b\n    transport: stdio\n    command: x\n    env: *e\n";
        // The alias is unknown, which must be a located error rather than a panic.
        assert!(parse(text, "t.yaml").is_err());
        let text = text.replace("*e", "{}");
        match parse(&text, "t.yaml") {
            Ok(cfg) => assert_eq!(cfg.backends[0].env["TOKEN"], "${TOKEN}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn suggestions_are_conservative() {
        assert_eq!(suggest("transprot", ["name", "transport"]), Some("transport"));
        assert_eq!(
            suggest("max_request_body_bytes", ["maxRequestBodyBytes"]),
            Some("maxRequestBodyBytes")
        );
        assert_eq!(suggest("uri", ["url", "args"]), Some("url"));
        assert_eq!(suggest("foo", ["cwd", "env", "url"]), None);
    }

    #[test]
    fn load_reports_unreadable_file() {
        let err = match load(Path::new("/nonexistent/vmcp.yaml")) {
            Err(e) => e,
            Ok(_) => panic!("loaded"),
        };
        assert!(
            err.to_string().starts_with("/nonexistent/vmcp.yaml: cannot read config:"),
            "{err}"
        );
    }
}
