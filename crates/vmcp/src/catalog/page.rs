//! Pagination over an advertised list (`tools/list`, `resources/list`, ...).
//!
//! A cursor is `o` followed by the decimal offset of the page's first item. Clients must treat it
//! as opaque; the prefix just makes accidental values (a bare number, a token from another server)
//! fail validation instead of silently paging from a random place.
//!
//! Invariants: walking from `None` through every returned cursor yields each item exactly once, in
//! order; a cursor is returned only when more items follow. A well-formed cursor past the end (the
//! catalog shrank between pages) yields an empty last page rather than an error.

/// The cursor did not come from [`page`]; the gateway answers JSON-RPC `-32602`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

const PREFIX: char = 'o';

/// Returns the page of `items` that `cursor` points at, and the cursor of the next page if any.
///
/// `None` is the first page. A `page_size` of 0 disables pagination: everything in one page.
pub fn page<'a>(
    items: &'a [serde_json::Value],
    cursor: Option<&str>,
    page_size: usize,
) -> Result<(&'a [serde_json::Value], Option<String>), InvalidCursor> {
    let (r, next) = range(items.len(), cursor, page_size)?;
    Ok((items.get(r).unwrap_or_default(), next))
}

/// [`page`] over a list of `len` items: the positions of the page `cursor` points at, and the
/// cursor of the next page if any.
pub fn range(
    len: usize,
    cursor: Option<&str>,
    page_size: usize,
) -> Result<(std::ops::Range<usize>, Option<String>), InvalidCursor> {
    let start = match cursor {
        None => 0,
        Some(c) => decode(c)?,
    };
    if start >= len {
        return Ok((len..len, None));
    }
    if page_size == 0 || len - start <= page_size {
        return Ok((start..len, None));
    }
    Ok((start..start + page_size, Some(encode(start + page_size))))
}

fn encode(offset: usize) -> String {
    format!("{PREFIX}{offset}")
}

fn decode(cursor: &str) -> Result<usize, InvalidCursor> {
    let digits = cursor.strip_prefix(PREFIX).ok_or(InvalidCursor)?;
    // `parse` alone would accept a leading `+`; only plain digits are ours.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidCursor);
    }
    digits.parse().map_err(|_| InvalidCursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({ "name": format!("t{i:03}") })).collect()
    }

    fn walk(items: &[Value], size: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let (chunk, next) = page(items, cursor.as_deref(), size).expect("valid cursor");
            if size > 0 {
                assert!(chunk.len() <= size);
            }
            out.extend_from_slice(chunk);
            match next {
                Some(n) => {
                    assert!(!chunk.is_empty(), "no empty page before the end");
                    cursor = Some(n);
                }
                None => return out,
            }
        }
    }

    #[test]
    fn round_trip_through_all_pages() {
        for n in [0, 1, 9, 10, 11, 25, 100] {
            for size in [0, 1, 3, 10, 200] {
                let all = items(n);
                assert_eq!(walk(&all, size), all, "n={n} size={size}");
            }
        }
    }

    #[test]
    fn exact_multiple_has_no_trailing_cursor() {
        let all = items(20);
        let (first, next) = page(&all, None, 10).expect("first");
        assert_eq!(first.len(), 10);
        let (second, next) = page(&all, next.as_deref(), 10).expect("second");
        assert_eq!(second.len(), 10);
        assert_eq!(next, None);
    }

    #[test]
    fn bad_cursors_are_rejected() {
        let all = items(5);
        for bad in ["", "o", "5", "o-1", "o+1", "o1x", "x1", "o99999999999999999999999", " o1"] {
            assert_eq!(page(&all, Some(bad), 2), Err(InvalidCursor), "{bad:?}");
        }
    }

    #[test]
    fn cursor_past_the_end_is_an_empty_last_page() {
        let all = items(5);
        assert_eq!(page(&all, Some("o5"), 2), Ok((&all[5..], None)));
        assert_eq!(page(&all, Some("o50"), 2), Ok((&all[5..], None)));
    }
}
