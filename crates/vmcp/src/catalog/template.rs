//! RFC 6570 URI template matching, just enough to route `resources/read` and
//! `resources/subscribe` for URIs that are not listed resources.
//!
//! Rules: a simple expression `{var}` (also `{a,b}`) matches one or more chars, none of them `/`;
//! an expression with an operator (`{+var}`, `{#var}`, `{?q}`, `{/p}`, ...) matches any run of
//! chars, including none; everything else is literal. An unclosed `{` is literal.
//!
//! Invariant: matching is a reachability sweep over (expression, offset) states, so it runs in
//! `O(parts * len^2)` at worst and never backtracks exponentially on hostile URIs or templates.

/// A parsed URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Must appear verbatim.
    Literal(String),
    /// `{var}`: one or more chars, no `/`.
    Segment,
    /// `{+var}` and other operators: anything, possibly empty.
    Any,
}

impl UriTemplate {
    /// Parses `template`; never fails (malformed expressions are taken literally).
    pub fn parse(template: &str) -> Self {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else { break };
            literal.push_str(&rest[..open]);
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            let expr = &rest[open + 1..close];
            let operator = expr.chars().next().is_some_and(|c| "+#./;?&=,!@|".contains(c));
            parts.push(if operator { Part::Any } else { Part::Segment });
            rest = &rest[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Self { parts }
    }

    /// True if some expansion of the template equals `uri`.
    pub fn matches(&self, uri: &str) -> bool {
        let bytes = uri.as_bytes();
        // reach[i]: the parts consumed so far can end at byte offset i.
        let mut reach = vec![false; bytes.len() + 1];
        reach[0] = true;
        for part in &self.parts {
            let mut next = vec![false; bytes.len() + 1];
            for start in (0..=bytes.len()).filter(|&i| reach[i]) {
                match part {
                    Part::Literal(lit) => {
                        if bytes[start..].starts_with(lit.as_bytes()) {
                            next[start + lit.len()] = true;
                        }
                    }
                    Part::Segment => {
                        // Every reachable offset is a char boundary (literals are whole UTF-8
                        // strings and this arm advances by whole chars); `get` keeps that
                        // assumption from ever turning into a panic.
                        let Some(tail) = uri.get(start..) else { continue };
                        for (i, c) in tail.char_indices() {
                            if c == '/' {
                                break;
                            }
                            next[start + i + c.len_utf8()] = true;
                        }
                    }
                    Part::Any => {
                        // Every later offset is reachable; the earliest start covers the rest.
                        next[start..].iter_mut().for_each(|r| *r = true);
                        break;
                    }
                }
            }
            reach = next;
        }
        reach[bytes.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(template: &str, uri: &str) -> bool {
        UriTemplate::parse(template).matches(uri)
    }

    #[test]
    fn literal_only() {
        assert!(m("file:///a.txt", "file:///a.txt"));
        assert!(!m("file:///a.txt", "file:///a.txt2"));
        assert!(!m("file:///a.txt", "file:///a"));
    }

    #[test]
    fn simple_var_is_one_segment() {
        assert!(m("repo://{owner}/{name}", "repo://acme/widgets"));
        assert!(!m("repo://{owner}/{name}", "repo://acme/widgets/extra"));
        assert!(!m("repo://{owner}/{name}", "repo:///widgets"), "empty var");
        assert!(!m("repo://{owner}", "repo://"));
        assert!(m("user://{id}.json", "user://42.json"));
        assert!(m("user://{id}.json", "user://4.2.json"), "greedy var backs off");
        assert!(m("x://{a,b}", "x://1,2"));
        assert!(m("x://{a}{b}", "x://ab"));
        assert!(!m("x://{a}{b}", "x://a"));
    }

    #[test]
    fn operators_match_anything() {
        assert!(m("file://{+path}", "file:///etc/hosts"));
        assert!(m("file://{+path}", "file://"));
        assert!(m("search://q{?query,limit}", "search://q?query=a&limit=2"));
        assert!(m("search://q{?query}", "search://q"));
        assert!(m("a://{/seg}/end", "a://x/y/end"));
        assert!(!m("a://{/seg}/end", "a://x/y/en"));
    }

    #[test]
    fn unclosed_brace_is_literal() {
        assert!(m("x://{oops", "x://{oops"));
        assert!(!m("x://{oops", "x://value"));
        assert!(m("x://{a}/{b", "x://1/{b"));
    }

    #[test]
    fn non_ascii_uris() {
        assert!(m("n://{name}", "n://héllo"));
        assert!(m("n://{name}/é", "n://ü/é"));
        assert!(!m("n://{name}/é", "n://ü/e"));
        assert!(!m("n://{a}{b}", "n://é"), "vars hold whole chars");
    }

    #[test]
    fn pathological_input_is_fast() {
        let template = "x://".to_owned() + &"{a}".repeat(30) + "!";
        let uri = "x://".to_owned() + &"a".repeat(2000);
        assert!(!m(&template, &uri));
    }
}
