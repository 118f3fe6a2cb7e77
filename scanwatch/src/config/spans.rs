//! Where a key sits in TOML text, for error messages that name the line and
//! the field: works for `[table]` headers, dotted keys, inline tables and
//! arrays of tables alike (it reads toml's own spans, not the raw lines).

use std::ops::Range;

use toml::{
    Spanned,
    de::{DeTable, DeValue},
};

/// The 1-based line holding byte `offset` of `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line where the key at `path` is set (table keys; numbers index an
/// array of tables, e.g. `["feeds", "1", "name"]`), or `None` if the text
/// does not set it (its value is the default) or does not parse.
pub fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut line = None;
    let mut rest = path;
    while let Some((first, tail)) = rest.split_first() {
        let (key, value) = table.get_key_value(*first)?;
        line = Some(line_at(text, key.span().start));
        rest = tail;
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            DeValue::Array(items) => {
                let Some((index, tail)) = rest.split_first() else {
                    break;
                };
                let item = items.get(index.parse::<usize>().ok()?)?;
                line = Some(line_at(text, item.span().start));
                rest = tail;
                match item.get_ref() {
                    DeValue::Table(t) => table = t,
                    _ => break,
                }
            }
            _ => break,
        }
    }
    if rest.is_empty() { line } else { None }
}

/// The innermost key whose key or value covers `span` (where toml reported
/// an error): its dotted path (`detection.port_scan.distinct_ports`,
/// `feeds[1].action`) and its line.
pub fn key_at(text: &str, span: Range<usize>) -> Option<(String, usize)> {
    let (root, _) = DeTable::parse_recoverable(text);
    let mut found = None;
    walk_table(text, root.get_ref(), &span, String::new(), &mut found);
    found
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

fn walk_table(
    text: &str,
    table: &DeTable<'_>,
    span: &Range<usize>,
    prefix: String,
    found: &mut Option<(String, usize)>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if covers(&key.span(), span) || covers(&value.span(), span) {
            *found = Some((path.clone(), line_at(text, key.span().start)));
        }
        walk_value(text, value, span, path, found);
    }
}

fn walk_value(
    text: &str,
    value: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: String,
    found: &mut Option<(String, usize)>,
) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(text, t, span, path, found),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                if covers(&item.span(), span) {
                    *found = Some((path.clone(), line_at(text, item.span().start)));
                }
                walk_value(text, item, span, path, found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[detection]
window_seconds = 5
port_scan = { distinct_ports = 7 }
detection2.x = 1

[[feeds]]
name = \"a\"

[[feeds]]
name = \"b\"
action = \"boom\"
";

    #[test]
    fn lines_of_keys() {
        assert_eq!(line_of_key(TEXT, &["detection", "window_seconds"]), Some(2));
        assert_eq!(
            line_of_key(TEXT, &["detection", "port_scan", "distinct_ports"]),
            Some(3)
        );
        assert_eq!(line_of_key(TEXT, &["feeds", "1", "action"]), Some(11));
        assert_eq!(line_of_key(TEXT, &["feeds", "0", "name"]), Some(7));
        assert_eq!(line_of_key(TEXT, &["detection", "nothing"]), None);
        assert_eq!(line_of_key("[broken", &["x"]), None);
    }

    #[test]
    fn key_at_an_error_span() {
        let at = TEXT.find("\"boom\"").unwrap();
        assert_eq!(
            key_at(TEXT, at..at + 6),
            Some(("feeds[1].action".to_string(), 11))
        );
        let at = TEXT.find('7').unwrap();
        assert_eq!(
            key_at(TEXT, at..at + 1),
            Some(("detection.port_scan.distinct_ports".to_string(), 3))
        );
        assert_eq!(line_at(TEXT, 0), 1);
        assert_eq!(line_at(TEXT, usize::MAX), TEXT.lines().count() + 1);
    }
}
