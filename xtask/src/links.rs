//! Relative links in the Markdown documentation (README.md, DEVELOPING.md,
//! BENCHMARKS.md, docs/*.md): every `[text](path)` and `[text](path#anchor)`
//! must name a file that exists (relative to the linking file), and an
//! anchor must be the slug of a heading of the target, by GitHub's rules
//! (lowercase; drop punctuation but '-' and '_'; spaces to '-'; `-1`, `-2`
//! for repeated headings). `http(s)://` and `mailto:` links, fenced code
//! blocks and inline code are not checked. `cargo xtask lint` runs it, and
//! so does `cargo test` (the unit tests below).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// The documentation files at the workspace root; `docs/*.md` is added.
const ROOT_DOCS: [&str; 3] = ["README.md", "DEVELOPING.md", "BENCHMARKS.md"];

/// A link that does not lead where it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The linking file, relative to the workspace root.
    pub file: PathBuf,
    /// 1-based line of the link's `[`.
    pub line: usize,
    /// The link's destination as written.
    pub target: String,
    pub problem: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: link ({}): {}",
            self.file.display(),
            self.line,
            self.target,
            self.problem
        )
    }
}

/// A link found in Markdown text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// Checks the documentation under `root`; returns how many relative links
/// were checked, or an error listing every broken one with file and line.
pub fn check(root: &Path) -> anyhow::Result<usize> {
    let mut docs = Vec::new();
    for rel in doc_files(root)? {
        let path = root.join(&rel);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        docs.push((rel, text));
    }
    let (checked, broken) = check_docs(root, &docs);
    if !broken.is_empty() {
        let list: Vec<String> = broken.iter().map(ToString::to_string).collect();
        bail!(
            "{} broken documentation link(s):\n{}",
            broken.len(),
            list.join("\n")
        );
    }
    Ok(checked)
}

/// README.md, DEVELOPING.md, BENCHMARKS.md and docs/*.md (sorted), relative
/// to `root`. A missing one is an error.
pub fn doc_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = ROOT_DOCS.iter().map(PathBuf::from).collect();
    for f in &files {
        if !root.join(f).is_file() {
            bail!("{} is missing", root.join(f).display());
        }
    }
    let dir = root.join("docs");
    let mut more = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = PathBuf::from(entry.file_name());
        if name.extension().is_some_and(|e| e == "md") && entry.path().is_file() {
            more.push(Path::new("docs").join(name));
        }
    }
    more.sort();
    files.extend(more);
    Ok(files)
}

/// Checks the links of `docs` (path relative to `root`, text). Targets are
/// looked up among `docs` first, then on disk under `root`. Returns the
/// number of relative links checked and the broken ones.
pub fn check_docs(root: &Path, docs: &[(PathBuf, String)]) -> (usize, Vec<Broken>) {
    let known: BTreeMap<PathBuf, &str> = docs
        .iter()
        .map(|(p, t)| (normalize(p).unwrap_or_else(|| p.clone()), t.as_str()))
        .collect();
    let mut anchors: BTreeMap<PathBuf, Result<BTreeSet<String>, String>> = BTreeMap::new();
    let mut checked = 0;
    let mut broken = Vec::new();
    for (file, text) in docs {
        for link in links(text) {
            let Some((path, anchor)) = relative_target(&link.target) else {
                continue;
            };
            checked += 1;
            let mut fail = |problem: String| {
                broken.push(Broken {
                    file: file.clone(),
                    line: link.line,
                    target: link.target.clone(),
                    problem,
                });
            };
            let resolved = if path.is_empty() {
                Some(file.clone())
            } else {
                normalize(&file.parent().unwrap_or(Path::new("")).join(path))
            };
            let Some(resolved) = resolved else {
                fail(format!("{path} points outside the repository"));
                continue;
            };
            let in_docs = known.contains_key(&resolved);
            if !in_docs && !root.join(&resolved).exists() {
                fail(format!("{} does not exist", resolved.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if resolved.extension().is_none_or(|e| e != "md") {
                // Line anchors of source files and the like: not checked.
                continue;
            }
            let slugs =
                anchors
                    .entry(resolved.clone())
                    .or_insert_with(|| match known.get(&resolved) {
                        Some(text) => Ok(heading_slugs(text)),
                        None => std::fs::read_to_string(root.join(&resolved))
                            .map(|t| heading_slugs(&t))
                            .map_err(|e| format!("cannot read {}: {e}", resolved.display())),
                    });
            match slugs {
                Ok(slugs) if slugs.contains(anchor) => {}
                Ok(_) => fail(format!(
                    "{} has no heading with the anchor #{anchor}",
                    resolved.display()
                )),
                Err(e) => fail(e.clone()),
            }
        }
    }
    (checked, broken)
}

/// The path and anchor of a relative link, `None` for external links
/// (`http://`, `https://`, `mailto:`).
fn relative_target(target: &str) -> Option<(&str, Option<&str>)> {
    let lower = target.to_ascii_lowercase();
    if ["http://", "https://", "mailto:"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        return None;
    }
    Some(match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    })
}

/// `path` without `.` and `..` components; `None` if it climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Lines of `text` with those of fenced code blocks (``` or ~~~) blanked,
/// so line numbers stay and nothing inside a fence counts.
fn without_fences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let run = |c: char| trimmed.chars().take_while(|x| *x == c).count();
        match fence {
            Some((c, n)) => {
                // A closing fence: at least as long, nothing after it.
                if run(c) >= n && trimmed.trim_start_matches(c).trim().is_empty() {
                    fence = None;
                }
                out.push("");
            }
            None => {
                // A backtick fence's info string holds no backtick (else
                // the line is a paragraph with inline code).
                let opening = ['`', '~']
                    .into_iter()
                    .find(|c| run(*c) >= 3 && (*c == '~' || !trimmed[run(*c)..].contains('`')));
                if let Some(c) = opening {
                    fence = Some((c, run(c)));
                    out.push("");
                } else {
                    out.push(line);
                }
            }
        }
    }
    out
}

/// Every inline link and image `[text](target)` and link definition
/// `[label]: target` outside code, with the line of its `[`.
pub fn links(text: &str) -> Vec<Link> {
    let lines = without_fences(text);
    let mut out = Vec::new();
    // Link definitions: `[label]: target` on a line of its own.
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('[')
            && let Some((label, after)) = rest.split_once("]:")
            && !label.is_empty()
            && !label.contains(']')
            && let Some(target) = after.split_whitespace().next()
        {
            out.push(Link {
                line: i + 1,
                target: strip_angle(target).to_owned(),
            });
        }
    }
    let joined = lines.join("\n");
    let chars: Vec<char> = joined.chars().collect();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\n' => {
                line += 1;
                i += 1;
            }
            // An escaped character (not a line break: the line count stays right).
            '\\' if chars.get(i + 1).is_some_and(|c| *c != '\n') => i += 2,
            '`' => {
                let n = run_len(&chars, i, '`');
                match closing_backticks(&chars, i + n, n) {
                    Some(end) => {
                        line += chars[i..end].iter().filter(|c| **c == '\n').count();
                        i = end;
                    }
                    None => i += n,
                }
            }
            '[' => {
                if let Some((_, _, target)) = inline_link(&chars, i) {
                    out.push(Link {
                        line,
                        target: strip_angle(&target).to_owned(),
                    });
                }
                // Scanning on from inside the text finds an image in a link too.
                i += 1;
            }
            _ => i += 1,
        }
    }
    out.sort_by_key(|l| l.line);
    out
}

fn run_len(chars: &[char], from: usize, c: char) -> usize {
    chars[from..].iter().take_while(|x| **x == c).count()
}

/// The index just past the run of exactly `n` backticks closing a code span
/// that starts at `from`, within the paragraph (no blank line crossed).
fn closing_backticks(chars: &[char], from: usize, n: usize) -> Option<usize> {
    let mut j = from;
    while j < chars.len() {
        if chars[j] == '\n' && chars.get(j + 1) == Some(&'\n') {
            return None;
        }
        if chars[j] == '`' {
            let m = run_len(chars, j, '`');
            if m == n {
                return Some(j + m);
            }
            j += m;
        } else {
            j += 1;
        }
    }
    None
}

/// An inline link whose `[` is at `open`: the index of its `]`, the index
/// just past its `)` and its destination (without a title).
fn inline_link(chars: &[char], open: usize) -> Option<(usize, usize, String)> {
    let mut depth = 0usize;
    let mut j = open;
    let close = loop {
        match chars.get(j)? {
            '\\' => j += 1,
            '`' => {
                let n = run_len(chars, j, '`');
                j = closing_backticks(chars, j + n, n)?.checked_sub(1)?;
            }
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    break j;
                }
            }
            '\n' if chars.get(j + 1) == Some(&'\n') => return None,
            _ => {}
        }
        j += 1;
    };
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let mut k = close + 2;
    let mut parens = 0usize;
    let mut dest = String::new();
    loop {
        match *chars.get(k)? {
            '\n' => return None,
            ')' if parens == 0 => break,
            ')' => parens -= 1,
            '(' => parens += 1,
            _ => {}
        }
        dest.push(chars[k]);
        k += 1;
    }
    // A title after the destination: `(path "title")`.
    let dest = dest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    Some((close, k + 1, dest))
}

fn strip_angle(target: &str) -> &str {
    target
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(target)
}

/// The anchors GitHub gives the headings of a Markdown text.
pub fn heading_slugs(text: &str) -> BTreeSet<String> {
    let lines = without_fences(text);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut prev: Option<&str> = None;
    for &line in &lines {
        let heading = atx_heading(line).or_else(|| {
            // Setext: a paragraph line underlined with === or ---.
            let t = line.trim();
            let underline =
                !t.is_empty() && (t.chars().all(|c| c == '=') || t.chars().all(|c| c == '-'));
            match prev {
                Some(p) if underline && !p.trim().is_empty() && atx_heading(p).is_none() => {
                    Some(p.trim().to_owned())
                }
                _ => None,
            }
        });
        prev = Some(line);
        let Some(heading) = heading else { continue };
        let base = slug(&heading);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 { base } else { format!("{base}-{n}") };
        *n += 1;
        out.insert(anchor);
    }
    out
}

/// The text of an ATX heading (`#` to `######`), without a closing `#` run.
fn atx_heading(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let t = &line[indent..];
    let level = t.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut text = rest.trim();
    let closing = text.trim_end_matches('#');
    if closing.is_empty() || closing.ends_with([' ', '\t']) {
        text = closing.trim_end();
    }
    Some(text.to_owned())
}

/// GitHub's anchor for a heading: the rendered text (links and images give
/// their text, code spans their content), lowercased; letters, digits, '-'
/// and '_' kept, spaces made '-', everything else dropped.
pub fn slug(heading: &str) -> String {
    let chars: Vec<char> = heading.chars().collect();
    let mut rendered = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '['
            && let Some((close, end, _)) = inline_link(&chars, i)
        {
            rendered.extend(&chars[i + 1..close]);
            i = end;
            continue;
        }
        rendered.push(chars[i]);
        i += 1;
    }
    rendered
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(files: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_owned()))
            .collect()
    }

    /// A root with nothing in it: targets must be among the given texts.
    fn nowhere() -> PathBuf {
        PathBuf::from("/nonexistent/scanwatch-link-check")
    }

    #[test]
    fn the_repository_docs_have_no_broken_links() {
        let root = crate::root();
        match check(&root) {
            Ok(n) => assert!(
                n >= 10,
                "only {n} relative links found: is the scan working?"
            ),
            Err(e) => panic!("{e:#}"),
        }
    }

    #[test]
    fn slugs_follow_github() {
        assert_eq!(slug("Stop, crash and restart"), "stop-crash-and-restart");
        assert_eq!(slug("`scanwatch run`"), "scanwatch-run");
        assert_eq!(
            slug("Reply-aware detection (`reply_scan`)"),
            "reply-aware-detection-reply_scan"
        );
        assert_eq!(slug("Blocking (mitigation)"), "blocking-mitigation");
        assert_eq!(slug("Control (root only)"), "control-root-only");
        assert_eq!(slug("A [linked](x.md) heading"), "a-linked-heading");
        assert_eq!(slug("Tests: what runs where"), "tests-what-runs-where");
        assert_eq!(slug("1.2 -- Ünïcode & more"), "12----ünïcode--more");
    }

    #[test]
    fn repeated_headings_get_numbered_and_fences_hide_headings() {
        let text =
            "# Title\n## Notes\n```sh\n# not a heading\n```\n## Notes\nSetext\n---\n## Closed ##\n";
        let s = heading_slugs(text);
        let want: BTreeSet<String> = ["title", "notes", "notes-1", "setext", "closed"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(s, want);
    }

    #[test]
    fn finds_links_outside_code_only() {
        let text = "see [a](a.md) and [b `x`](b.md#sec \"title\")\n\
                    `[not](code.md)` and ``[nor](this.md)``\n\
                    ```\n[fenced](fence.md)\n```\n\
                    [multi\nline](multi.md) ![img](pic.png)\n\
                    \\[escaped](no.md) [ref]: def.md\n\
                    [label]: <defined.md>\n\
                    ```` ```toml ```` is inline code, [after](after.md)\n";
        let got: Vec<(usize, String)> = links(text)
            .into_iter()
            .map(|l| (l.line, l.target))
            .collect();
        let want = [
            (1, "a.md"),
            (1, "b.md#sec"),
            (6, "multi.md"),
            (7, "pic.png"),
            (9, "defined.md"),
            (10, "after.md"),
        ];
        let want: Vec<(usize, String)> = want.iter().map(|(l, t)| (*l, (*t).to_owned())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn catches_a_broken_link_and_a_broken_anchor() {
        let files = docs(&[
            (
                "README.md",
                "# Front\n\
                 [ok](docs/a.md) [ok](docs/a.md#the-section) [ok](#front)\n\
                 [gone](docs/missing.md)\n\
                 [bad anchor](docs/a.md#no-such-section)\n\
                 [bad self anchor](#nowhere)\n\
                 [web](https://example.invalid/x.md#y) [mail](mailto:a@example.invalid)\n",
            ),
            (
                "docs/a.md",
                "# A\n## The section\n[up](../README.md#front) [out](../../etc/passwd)\n",
            ),
        ]);
        let (checked, broken) = check_docs(&nowhere(), &files);
        assert_eq!(checked, 8, "{broken:?}");
        let got: Vec<String> = broken.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "README.md:3: link (docs/missing.md): docs/missing.md does not exist",
                "README.md:4: link (docs/a.md#no-such-section): docs/a.md has no heading with the anchor #no-such-section",
                "README.md:5: link (#nowhere): README.md has no heading with the anchor #nowhere",
                "docs/a.md:3: link (../../etc/passwd): ../../etc/passwd points outside the repository",
            ]
        );
    }

    #[test]
    fn existing_files_on_disk_count_and_their_anchors_are_read() {
        let root = crate::root();
        let files = docs(&[(
            "docs/x.md",
            "[cargo](../xtask/Cargo.toml) [dir](../xtask/src) [line](../xtask/src/main.rs#L1)\n\
             [bench](../BENCHMARKS.md#no-such-heading)\n",
        )]);
        let (checked, broken) = check_docs(&root, &files);
        assert_eq!(checked, 4);
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert_eq!(broken[0].line, 2);
        assert!(
            broken[0].problem.contains("BENCHMARKS.md has no heading"),
            "{}",
            broken[0]
        );
    }
}
