//! Reading a token endpoint response: the standard fields (RFC 6749 §5.1), or fields found by
//! dotted paths in a non-standard body; and identity fields found the same way.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::settings::{IdentityFromToken, TokenResponseMapping};
use super::{TokenSet, UpstreamIdentity};
use crate::auth::identity::Secret;

/// Longest lifetime believed from `expires_in` (ten years): keeps time arithmetic finite.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The value at a dotted path: object keys, and numeric segments indexing arrays.
pub(super) fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return None;
    }
    path.split('.').try_fold(value, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A scalar as a string: a non-empty string, or an integer (GitHub's numeric user ids).
pub(super) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Some(u.to_string()),
            (_, Some(i), _) => Some(i.to_string()),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Some(format!("{f:.0}")),
            _ => None,
        },
        _ => None,
    }
}

/// A lifetime in seconds: a positive number, or a string of one. Zero or absent: unknown.
pub(super) fn seconds(v: &Value) -> Option<Duration> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(secs).min(MAX_EXPIRES_IN))
}

/// The OAuth `error` code of an error body, cut to something printable.
pub(super) fn error_code(body: &Value) -> Option<String> {
    let code = body.get("error").and_then(Value::as_str)?;
    Some(printable(code, 64))
}

/// At most `max` printable ASCII characters of `s`.
pub(super) fn printable(s: &str, max: usize) -> String {
    s.chars().take(max).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// The tokens of a successful token response received at `now`.
pub(super) fn parse_tokens(
    body: &Value,
    mapping: Option<&TokenResponseMapping>,
    now: SystemTime,
) -> Result<TokenSet, String> {
    let path = |custom: Option<&String>, default: &'static str| -> String {
        custom.cloned().unwrap_or_else(|| default.to_string())
    };
    let (access, refresh, expires, scope) = match mapping {
        Some(m) => (
            m.access_token_path.clone(),
            path(m.refresh_token_path.as_ref(), "refresh_token"),
            path(m.expires_in_path.as_ref(), "expires_in"),
            path(m.scope_path.as_ref(), "scope"),
        ),
        None => {
            // A mapped response is Bearer by declaration; a standard one must say so if it
            // says anything (a DPoP- or MAC-bound token is useless as a bearer token).
            if let Some(t) = body.get("token_type").and_then(Value::as_str)
                && !t.eq_ignore_ascii_case("bearer")
            {
                return Err(format!("token_type {:?} is not Bearer", printable(t, 32)));
            }
            ("access_token".into(), "refresh_token".into(), "expires_in".into(), "scope".into())
        }
    };
    let text = |p: &str| lookup(body, p).and_then(Value::as_str).filter(|s| !s.is_empty());
    let access_token = text(&access).ok_or("token response has no access token")?;
    let scope = lookup(body, &scope).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        // Some providers list scopes as an array.
        Value::Array(a) => Some(a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
        _ => None,
    });
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        refresh_token: text(&refresh).map(Secret::new),
        id_token: text("id_token").map(Secret::new),
        expires_at: earliest(
            lookup(body, &expires).and_then(seconds).map(|d| now + d),
            jwt_exp(access_token),
        ),
        scope,
    })
}

/// The earlier of two optional instants.
fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `exp` claim of an access token that is a JWT, read without verifying it. Only ever used
/// to refresh *earlier* than `expires_in` says: IdPs compute `exp` from a whole-second `iat`, so
/// a token can expire at a resource server up to a second before `now + expires_in`.
fn jwt_exp(token: &str) -> Option<SystemTime> {
    let exp = unverified_claims(token)?.get("exp")?.as_u64()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(exp))
}

/// The claims of a JWT, read without verifying its signature: for tokens whose authenticity is
/// settled elsewhere (verified on receipt) or does not matter (an earlier refresh). `None` for
/// anything that is not a three-part JWT with a JSON payload of at most 16 KiB.
pub(super) fn unverified_claims(token: &str) -> Option<Value> {
    use base64::Engine;
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    if payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The identity in a token response body (`identity_from_token`).
pub(super) fn identity_from_body(
    body: &Value,
    cfg: &IdentityFromToken,
) -> Result<UpstreamIdentity, String> {
    let subject = lookup(body, &cfg.subject_path).and_then(scalar_string).ok_or_else(|| {
        format!("no string or number at subject path {:?} of the token response", cfg.subject_path)
    })?;
    let optional =
        |p: &Option<String>| p.as_deref().and_then(|p| lookup(body, p)).and_then(scalar_string);
    Ok(UpstreamIdentity {
        subject,
        name: optional(&cfg.name_path),
        email: optional(&cfg.email_path),
    })
}

/// The first non-empty value among `fields` of a userinfo response.
pub(super) fn first_field(claims: &Value, fields: &[String], default: &str) -> Option<String> {
    if fields.is_empty() {
        return claims.get(default).and_then(scalar_string);
    }
    fields.iter().find_map(|f| claims.get(f).and_then(scalar_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dotted_paths() {
        let v = json!({"authed_user": {"access_token": "xoxp", "ids": [7, {"id": 42}]}, "n": 1});
        assert_eq!(lookup(&v, "authed_user.access_token"), Some(&json!("xoxp")));
        assert_eq!(lookup(&v, "authed_user.ids.1.id"), Some(&json!(42)));
        assert_eq!(lookup(&v, "authed_user.ids.x"), None);
        assert_eq!(lookup(&v, "n.x"), None);
        assert_eq!(lookup(&v, ""), None);
        assert_eq!(scalar_string(&json!(42)), Some("42".into()));
        assert_eq!(scalar_string(&json!(-3)), Some("-3".into()));
        assert_eq!(scalar_string(&json!(12.0)), Some("12".into()));
        assert_eq!(scalar_string(&json!(1.5)), None);
        assert_eq!(scalar_string(&json!("")), None);
        assert_eq!(scalar_string(&json!(true)), None);
        assert_eq!(scalar_string(&json!({"a": 1})), None);
    }

    #[test]
    fn a_jwt_access_token_expiring_first_wins() {
        use base64::Engine;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_900);
        // `iat` 1000 (whole seconds), lifetime 2 s: the token dies at 1002 s, 0.9 s before
        // `now + expires_in`.
        let jwt = format!("{}.{}.sig", b64(&json!({"alg": "none"})), b64(&json!({"exp": 1002})));
        let body = json!({"access_token": jwt, "token_type": "Bearer", "expires_in": 2});
        let t = parse_tokens(&body, None, now).unwrap();
        assert_eq!(t.expires_at, Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1002)));
        // A later `exp` never extends `expires_in`.
        let jwt = format!("{}.{}.sig", b64(&json!({"alg": "none"})), b64(&json!({"exp": 9999})));
        let body = json!({"access_token": jwt, "token_type": "Bearer", "expires_in": 2});
        let t = parse_tokens(&body, None, now).unwrap();
        assert_eq!(t.expires_at, Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn standard_and_mapped_responses() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let std = json!({"access_token": "a", "token_type": "bearer", "expires_in": 60,
                         "refresh_token": "r", "id_token": "i", "scope": "openid"});
        let t = parse_tokens(&std, None, now).unwrap();
        assert_eq!(t.access_token.expose(), "a");
        assert_eq!(t.refresh_token.unwrap().expose(), "r");
        assert_eq!(t.id_token.unwrap().expose(), "i");
        assert_eq!(t.expires_at, Some(now + Duration::from_secs(60)));
        assert_eq!(t.scope.as_deref(), Some("openid"));
        assert!(
            parse_tokens(&json!({"access_token": "a", "token_type": "DPoP"}), None, now).is_err()
        );
        assert!(parse_tokens(&json!({"token_type": "Bearer"}), None, now).is_err());
        let no_exp =
            parse_tokens(&json!({"access_token": "a", "expires_in": 0}), None, now).unwrap();
        assert_eq!(no_exp.expires_at, None);

        // Slack-style: the user's token is nested; expiry as a string.
        let slack = json!({"ok": true, "authed_user": {"access_token": "xoxp", "refresh_token": "xoxe",
                           "expires_in": "43200", "scope": ["a", "b"]}, "token_type": "user"});
        let m = TokenResponseMapping {
            access_token_path: "authed_user.access_token".into(),
            scope_path: Some("authed_user.scope".into()),
            refresh_token_path: Some("authed_user.refresh_token".into()),
            expires_in_path: Some("authed_user.expires_in".into()),
        };
        let t = parse_tokens(&slack, Some(&m), now).unwrap();
        assert_eq!(t.access_token.expose(), "xoxp");
        assert_eq!(t.refresh_token.unwrap().expose(), "xoxe");
        assert_eq!(t.expires_at, Some(now + Duration::from_secs(43200)));
        assert_eq!(t.scope.as_deref(), Some("a b"));
    }

    #[test]
    fn identity_paths_and_fields() {
        let body = json!({"access_token": "a", "user": {"id": 1234, "login": "octo", "mail": ""}});
        let cfg = IdentityFromToken {
            subject_path: "user.id".into(),
            name_path: Some("user.login".into()),
            email_path: Some("user.mail".into()),
        };
        let id = identity_from_body(&body, &cfg).unwrap();
        assert_eq!(
            (id.subject.as_str(), id.name.as_deref(), id.email),
            ("1234", Some("octo"), None)
        );
        let missing = IdentityFromToken { subject_path: "user.nope".into(), ..Default::default() };
        assert!(identity_from_body(&body, &missing).is_err());

        let claims = json!({"sub": "s", "id": 99, "login": "", "name": "N"});
        assert_eq!(first_field(&claims, &[], "sub").as_deref(), Some("s"));
        let f = vec!["login".to_string(), "id".to_string()];
        assert_eq!(first_field(&claims, &f, "sub").as_deref(), Some("99"));
        assert_eq!(
            error_code(&json!({"error": "invalid_grant\n"})).as_deref(),
            Some("invalid_grant?")
        );
    }
}
