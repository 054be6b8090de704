//! RFC 6570 URI template matching, just enough to route `resources/read` and
//! `resources/subscribe` for URIs that are not listed resources.
//!
//! Rules: a simple expression `{var}` (also `{a,b}`) matches one or more chars, none of them `/`;
//! an expression with an operator (`{+var}`, `{#var}`, `{?q}`, `{/p}`, ...) matches any run of
//! chars, including none; everything else is literal. An unclosed `{` is literal.
//!
//! Invariant: a template is compiled once (at catalog build) into a small non-deterministic
//! automaton over chars, and matching simulates it in one left-to-right pass over the URI:
//! `O(len(uri) * len(template))` time, `O(len(template))` memory, no backtracking. A hostile URI
//! therefore costs at most linear time per template; `server.limits.maxUriLength` bounds `len(uri)`.

/// A parsed URI template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate {
    atoms: Vec<Atom>,
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
        Self { atoms: compile(&parts) }
    }

    /// True if some expansion of the template equals `uri`.
    pub fn matches(&self, uri: &str) -> bool {
        let atoms = &self.atoms;
        let n = atoms.len();
        // active[i]: some prefix of `uri` read so far leaves the automaton before atom i
        // (i == n: after the last atom). Star atoms may be skipped, hence the closure.
        let mut active = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        active[0] = true;
        close(atoms, &mut active);
        for c in uri.chars() {
            next.iter_mut().for_each(|x| *x = false);
            let mut any = false;
            for i in (0..n).filter(|&i| active[i]) {
                match atoms[i] {
                    Atom::Char(l) if l == c => next[i + 1] = true,
                    Atom::NotSlash if c != '/' => next[i + 1] = true,
                    Atom::NotSlashStar if c != '/' => next[i] = true,
                    Atom::AnyStar => next[i] = true,
                    _ => continue,
                }
                any = true;
            }
            if !any {
                return false;
            }
            close(atoms, &mut next);
            std::mem::swap(&mut active, &mut next);
        }
        active[n]
    }
}

/// One step of the compiled template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    /// Exactly this char.
    Char(char),
    /// One char other than `/`.
    NotSlash,
    /// Any number (possibly none) of chars other than `/`.
    NotSlashStar,
    /// Any number (possibly none) of any chars.
    AnyStar,
}

impl Atom {
    fn is_star(self) -> bool {
        matches!(self, Atom::NotSlashStar | Atom::AnyStar)
    }
}

fn compile(parts: &[Part]) -> Vec<Atom> {
    let mut atoms = Vec::new();
    for part in parts {
        match part {
            Part::Literal(lit) => atoms.extend(lit.chars().map(Atom::Char)),
            // One or more: one, then any number.
            Part::Segment => atoms.extend([Atom::NotSlash, Atom::NotSlashStar]),
            Part::Any => atoms.push(Atom::AnyStar),
        }
    }
    atoms
}

/// Adds the states reachable by skipping star atoms (one forward pass: skips only go forward).
fn close(atoms: &[Atom], active: &mut [bool]) {
    for i in 0..atoms.len() {
        if active[i] && atoms[i].is_star() {
            active[i + 1] = true;
        }
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

    #[test]
    fn pathological_64k_uri_completes() {
        // Quadratic matching took most of a second here; the single pass is linear. What this
        // asserts is the answer on inputs that used to be slow (no timing: CI machines vary).
        let uri = "x://".to_owned() + &"a".repeat(64 * 1024);
        for template in ["x://{a}{b}{c}!", "x://{+a}{+b}{+c}!", "x://{a}{+b}a{c}!"] {
            assert!(!m(template, &uri), "{template}");
            assert!(m(template, &format!("{uri}!")), "{template}");
        }
        let slashes = "x://".to_owned() + &"a/".repeat(32 * 1024);
        assert!(!m("x://{a}", &slashes));
        assert!(m("x://{+a}", &slashes));
        assert!(m("x://{a}/{+rest}", &slashes));
    }

    #[test]
    fn adjacent_and_trailing_stars() {
        assert!(m("x://{+a}{b}", "x://q"));
        assert!(!m("x://{+a}{b}", "x://"));
        assert!(m("x://{a}{+b}", "x://q/r"));
        assert!(m("{+a}", ""));
        assert!(m("", ""));
        assert!(!m("", "x"));
    }
}
