//! The agent crate's layers (`scanwatch/src`): each top-level folder is a
//! layer, and a module may import only from its own layer or the ones
//! below; no two files may import each other, directly or around a circle.
//!
//! | rank | folder |
//! |---|---|
//! | 0 | `model` |
//! | 1 | `config` |
//! | 2 | `kernel` |
//! | 3 | `detect` |
//! | 4 | `output` |
//! | 5 | `app` |
//!
//! It reads the source as text: every `crate::…`, `super::…` and
//! `self::…` path (in `use` items, grouped or not, and inline), with
//! comments and string literals left out, resolved to the file that defines
//! the module it names. A name a `mod.rs` re-exports (`pub use child::X`)
//! resolves to the child that defines it. `cargo xtask lint` runs the
//! check, and so does `cargo test` (the unit tests below).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// The layers, lowest first.
pub const LAYERS: [&str; 6] = ["model", "config", "kernel", "detect", "output", "app"];

/// A module path inside the crate (`["kernel", "object"]`); empty: the crate root.
type ModPath = Vec<String>;

/// One thing wrong with the layering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `from` (a file) imports `to`, which is in a higher layer.
    Upward {
        from: PathBuf,
        line: usize,
        path: String,
        to: PathBuf,
    },
    /// These files import each other around a circle.
    Cycle(Vec<PathBuf>),
    /// A file outside the layer folders (other than lib.rs and main.rs).
    Unlayered(PathBuf),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upward {
                from,
                line,
                path,
                to,
            } => write!(
                f,
                "{}:{line}: `{path}` imports {} from a higher layer ({} is in `{}`, {} in `{}`)",
                from.display(),
                to.display(),
                from.display(),
                layer_of_file(from).unwrap_or("?"),
                to.display(),
                layer_of_file(to).unwrap_or("?"),
            ),
            Self::Cycle(files) => {
                let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
                write!(f, "import cycle: {}", names.join(" -> "))
            }
            Self::Unlayered(file) => write!(
                f,
                "{}: not in a layer folder ({})",
                file.display(),
                LAYERS.join(", ")
            ),
        }
    }
}

fn layer_of_file(file: &Path) -> Option<&'static str> {
    let first = file.components().next()?.as_os_str().to_str()?;
    LAYERS.iter().copied().find(|l| *l == first)
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// The module path a source file defines (`app/agent/mod.rs` -> `app::agent`).
fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel
        .iter()
        .filter_map(|c| c.to_str())
        .map(str::to_string)
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" && stem != "main" {
            parts.push(stem.to_string());
        }
    }
    parts
}

/// Tokens of Rust source: identifiers, `::`, and single punctuation
/// characters, each with its line; comments, strings and char literals
/// are dropped (lifetimes are kept as identifiers, harmlessly).
fn tokens(src: &str) -> Vec<(String, usize)> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(b[i] == b'\n');
                        i += 1;
                    }
                }
            }
            b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                && (i == 0 || !is_ident(b[i - 1])) =>
            {
                // Raw string: r"…", r#"…"#, …
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"' && b[j + 1..].iter().take(hashes).all(|h| *h == b'#') {
                        j += 1 + hashes;
                        break;
                    }
                    line += usize::from(b[j] == b'\n');
                    j += 1;
                }
                i = j;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    line += usize::from(b.get(i) == Some(&b'\n'));
                    i += 1;
                }
                i += 1;
            }
            b'\'' => {
                // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            c if is_ident(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                out.push((src[start..i].to_string(), line));
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                out.push(("::".to_string(), line));
                i += 2;
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                out.push(((c as char).to_string(), line));
                i += 1;
            }
        }
    }
    out
}

const fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A path read from the source: its segments (groups expanded) and line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// The module the path is written in (inline `mod tests` included).
    scope: ModPath,
    segments: Vec<String>,
    line: usize,
    /// Part of a `pub use` (a re-export).
    reexport: bool,
}

/// Reads the `{ a::b, c::{d, e}, f as g }` group starting at `toks[i]`
/// (the `{`); appends each full path to `out`; returns the index after `}`.
fn group(
    toks: &[(String, usize)],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    i += 1; // `{`
    let mut current: Vec<String> = prefix.to_vec();
    while i < toks.len() {
        match toks[i].0.as_str() {
            "}" => {
                if current.len() > prefix.len() {
                    out.push(current);
                }
                return i + 1;
            }
            "," => {
                if current.len() > prefix.len() {
                    out.push(current.clone());
                }
                current = prefix.to_vec();
                i += 1;
            }
            "{" => {
                i = group(toks, i, &current, out);
                current = prefix.to_vec();
            }
            "::" => i += 1,
            "as" => i += 2, // the alias names nothing new
            "self" => {
                // `{self, …}`: the prefix module itself.
                out.push(prefix.to_vec());
                current = prefix.to_vec();
                i += 1;
            }
            t => {
                current.push(t.to_string());
                i += 1;
            }
        }
    }
    i
}

/// Every `crate::`/`super::`/`self::` path in a file whose module is `module`.
fn references(src: &str, module: &ModPath) -> Vec<Reference> {
    let toks = tokens(src);
    let mut out = Vec::new();
    // Inline modules: (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].0.as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if toks.get(i + 2).is_some_and(|t| t.0 == "{") => {
                inline.push((toks[i + 1].0.clone(), depth));
            }
            _ if toks.get(i + 1).is_some_and(|n| n.0 == "::")
                && (matches!(t, "crate" | "super" | "self")
                    || (i > 0 && toks[i - 1].0 == "use" && is_ident(t.as_bytes()[0]))) =>
            {
                let previous = if i > 0 { toks[i - 1].0.as_str() } else { "" };
                // `x::super` is a path continued, not a new one.
                if previous == "::" {
                    i += 1;
                    continue;
                }
                let reexport = previous == "use" && i >= 2 && toks[i - 2].0 == "pub";
                let line = toks[i].1;
                let mut scope = module.clone();
                scope.extend(inline.iter().map(|(n, _)| n.clone()));
                // `use child::X` (2018 paths): relative to this module; an
                // external crate's path resolves to this module and is skipped.
                let mut segments = if matches!(t, "crate" | "super" | "self") {
                    vec![t.to_string()]
                } else {
                    vec!["self".to_string(), t.to_string()]
                };
                let mut paths = Vec::new();
                let mut j = i + 1;
                while j < toks.len() && toks[j].0 == "::" {
                    match toks.get(j + 1).map(|t| t.0.as_str()) {
                        Some("{") => {
                            j = group(&toks, j + 1, &segments, &mut paths);
                            segments.clear();
                            break;
                        }
                        Some(s) if s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                            segments.push(s.to_string());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                if !segments.is_empty() {
                    paths.push(segments);
                }
                for segments in paths {
                    out.push(Reference {
                        scope: scope.clone(),
                        segments,
                        line,
                        reexport,
                    });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The crate's source files by module, and what each `mod.rs` re-exports.
struct Tree {
    files: BTreeMap<ModPath, PathBuf>,
    refs: BTreeMap<ModPath, Vec<Reference>>,
    /// (module, exported name) -> the module that defines it.
    exports: BTreeMap<(ModPath, String), ModPath>,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rs_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

impl Tree {
    fn read(src: &Path) -> anyhow::Result<Self> {
        let mut paths = Vec::new();
        rs_files(src, &mut paths)?;
        paths.sort();
        let mut tree = Self {
            files: BTreeMap::new(),
            refs: BTreeMap::new(),
            exports: BTreeMap::new(),
        };
        for path in paths {
            let rel = path.strip_prefix(src)?.to_path_buf();
            let module = module_of(&rel);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            tree.refs.insert(module.clone(), references(&text, &module));
            tree.files.insert(module, rel);
        }
        tree.collect_exports();
        Ok(tree)
    }

    /// Re-exports: `pub use child::X` (or `self::`, `crate::`) in a module.
    fn collect_exports(&mut self) {
        let mut exports = BTreeMap::new();
        for (module, refs) in &self.refs {
            for r in refs.iter().filter(|r| r.reexport) {
                if let Some((target, rest)) = self.resolve(r)
                    && let Some(name) = rest.first()
                {
                    exports.insert((module.clone(), name.clone()), target);
                }
            }
        }
        self.exports = exports;
    }

    /// The module a reference names and the segments after it.
    fn resolve(&self, r: &Reference) -> Option<(ModPath, Vec<String>)> {
        let mut base: ModPath = match r.segments.first()?.as_str() {
            "crate" => Vec::new(),
            "self" => r.scope.clone(),
            _ => r.scope.clone(),
        };
        let mut rest = &r.segments[1..];
        if r.segments[0] == "super" {
            base.pop();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        // Inline modules have no file: their file is the nearest ancestor.
        while !self.files.contains_key(&base) && !base.is_empty() {
            base.pop();
        }
        let mut module = base;
        let mut i = 0;
        while i < rest.len() {
            let mut next = module.clone();
            next.push(rest[i].clone());
            if self.files.contains_key(&next) {
                module = next;
                i += 1;
            } else {
                break;
            }
        }
        // A name re-exported by the module: its defining module.
        if let Some(name) = rest.get(i)
            && let Some(target) = self.exports.get(&(module.clone(), name.clone()))
        {
            return Some((target.clone(), rest[i..].to_vec()));
        }
        Some((module, rest[i..].to_vec()))
    }

    fn check(&self) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        for (module, file) in &self.files {
            let layer = module.first().and_then(|l| rank(l));
            if module.is_empty() {
                continue; // lib.rs / main.rs: declarations and wiring
            }
            let Some(from_rank) = layer else {
                violations.push(Violation::Unlayered(file.clone()));
                continue;
            };
            for r in &self.refs[module] {
                let Some((target, _)) = self.resolve(r) else {
                    continue;
                };
                if &target == module || target.is_empty() {
                    continue;
                }
                let to_rank = target.first().and_then(|l| rank(l)).unwrap_or(0);
                if to_rank > from_rank {
                    violations.push(Violation::Upward {
                        from: file.clone(),
                        line: r.line,
                        path: r.segments.join("::"),
                        to: self.files[&target].clone(),
                    });
                }
                // A parent naming its children in `pub use` is the module's
                // table of contents, not a dependency.
                if r.reexport && target.starts_with(module) {
                    continue;
                }
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
        for cycle in cycles(&edges) {
            violations.push(Violation::Cycle(
                cycle.iter().map(|m| self.files[m].clone()).collect(),
            ));
        }
        violations
    }
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    fn visit(s: &mut State<'_>, v: &ModPath) {
        s.index.insert(v.clone(), s.next);
        s.low.insert(v.clone(), s.next);
        s.next += 1;
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        let targets: Vec<ModPath> = s
            .edges
            .get(v)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        for w in &targets {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Checks the crate whose sources are in `src`; returns the number of files.
pub fn check(src: &Path) -> anyhow::Result<usize> {
    let tree = Tree::read(src)?;
    let violations = tree.check();
    if violations.is_empty() {
        return Ok(tree.files.len());
    }
    let list: Vec<String> = violations.iter().map(|v| format!("  {v}")).collect();
    bail!(
        "{} layering violations in {} (layers, lowest first: {}):\n{}",
        violations.len(),
        src.display(),
        LAYERS.join(" < "),
        list.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway crate tree under the system temp dir.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str, files: &[(&str, &str)]) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-layers-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (path, text) in files {
                let p = dir.join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const LIB: &str = "pub mod model; pub mod config; pub mod kernel; pub mod detect; pub mod output; pub mod app;";

    fn tree(name: &str, extra: &[(&str, &str)]) -> (Scratch, Vec<Violation>) {
        let mut files = vec![
            ("lib.rs", LIB),
            ("model/mod.rs", "pub mod scan;\npub use scan::ScanType;\n"),
            ("model/scan.rs", "pub enum ScanType {}\n"),
            ("config/mod.rs", "use crate::model::ScanType;\n"),
            ("kernel/mod.rs", "pub mod maps;\n"),
            ("kernel/maps.rs", "use crate::config;\n"),
            (
                "detect/mod.rs",
                "use crate::{kernel::maps, model::{self, ScanType}};\n",
            ),
            ("output/mod.rs", "use crate::detect;\n"),
            ("app/mod.rs", "pub mod run;\n"),
            (
                "app/run.rs",
                "use super::super::output;\nfn f() { crate::kernel::maps::g(); }\n",
            ),
        ];
        files.extend_from_slice(extra);
        let s = Scratch::new(name, &files);
        let violations = Tree::read(&s.0).unwrap().check();
        (s, violations)
    }

    #[test]
    fn a_clean_tree_passes() {
        let (_s, v) = tree("clean", &[]);
        assert_eq!(v, vec![]);
    }

    #[test]
    fn an_upward_import_is_named_with_file_line_and_layers() {
        let (_s, v) = tree(
            "upward",
            &[(
                "kernel/maps.rs",
                "use crate::config;\n// crate::app is fine in a comment\nfn f() -> crate::detect::X { todo!(\"crate::app\") }\n",
            )],
        );
        // detect imports kernel::maps in this tree: the upward import also closes a circle.
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(matches!(v[1], Violation::Cycle(_)), "{v:?}");
        let text = v[0].to_string();
        assert_eq!(
            text,
            "kernel/maps.rs:3: `crate::detect::X` imports detect/mod.rs from a higher layer (kernel/maps.rs is in `kernel`, detect/mod.rs in `detect`)"
        );
    }

    #[test]
    fn grouped_and_relative_paths_are_read() {
        let (_s, v) = tree(
            "grouped",
            &[(
                "model/scan.rs",
                "use crate::{config::{self as c}, model::ScanType as S};\npub enum ScanType {}\n",
            )],
        );
        assert!(
            matches!(&v[..], [Violation::Upward { path, .. }, Violation::Cycle(_)] if path == "crate::config"),
            "{v:?}"
        );
        let (_s, v) = tree(
            "super",
            &[(
                "kernel/maps.rs",
                "mod tests { use super::super::super::output::X; }\n",
            )],
        );
        assert!(
            matches!(&v[..], [Violation::Upward { path, .. }, Violation::Cycle(_)] if path == "super::super::super::output::X"),
            "{v:?}"
        );
    }

    #[test]
    fn a_cycle_within_a_layer_is_found_and_reexports_resolve_to_their_file() {
        let (_s, v) = tree(
            "cycle",
            &[
                (
                    "app/mod.rs",
                    "pub mod run;\npub mod other;\npub use other::Thing;\n",
                ),
                ("app/other.rs", "use super::run::f;\npub struct Thing;\n"),
                ("app/run.rs", "use crate::app::Thing;\npub fn f() {}\n"),
            ],
        );
        assert_eq!(
            v,
            vec![Violation::Cycle(vec![
                PathBuf::from("app/other.rs"),
                PathBuf::from("app/run.rs")
            ])]
        );
    }

    #[test]
    fn files_outside_the_layers_are_refused() {
        let (_s, v) = tree("unlayered", &[("util.rs", "pub fn f() {}\n")]);
        assert_eq!(v, vec![Violation::Unlayered(PathBuf::from("util.rs"))]);
    }

    #[test]
    fn the_agent_crate_is_layered() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scanwatch/src");
        if let Err(e) = check(&src) {
            panic!("{e:#}");
        }
    }
}
