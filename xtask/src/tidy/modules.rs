//! The import graph of a crate's modules, for the check that no two modules import each other,
//! directly or around a circle.
//!
//! A module is a file: `src/a.rs` or `src/a/mod.rs` is `a`, `src/a/b.rs` is `a::b`, the crate
//! root (`lib.rs`, `main.rs`) is `crate`; modules written inline in a file (`mod x { … }`)
//! count as their file. Module `m` imports module `n` when its code (its `#[cfg(test)]` items
//! left out) names a path into `n`: `use crate::n::…`, `crate::n::x`, `super::…`, `self::…`, or
//! the name of a child module. A re-export (`pub use`, `pub(crate) use`) is not an import of
//! the module that writes it: a path through it leads to the module that defines the item, as
//! `crate::Emulator` leads to `emulator` when the root says `pub use emulator::Emulator` (a
//! glob, `pub use x::*`, leads to the module that writes it).
//!
//! A module and the modules inside it are parts of one: imports between them do not count
//! (the crate root and a folder's `mod.rs` are the hubs of theirs, used by their parts and
//! using them). Between any other two modules, the imports must go one way.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use super::source::{Source, identifiers, matching_brace};

/// A module path from the crate root (empty for the root).
type ModPath = Vec<String>;

/// One module file.
struct Module {
    path: ModPath,
    file: PathBuf,
    source: Source,
    /// Inline modules (`mod x { … }`): name, and the span of the code inside.
    inline: Vec<(String, usize, usize)>,
    /// Its `use` declarations: where each starts, whether it re-exports, and the paths it
    /// brings in (segments, the name it is known by, whether it is a glob).
    uses: Vec<Use>,
}

struct Use {
    at: usize,
    end: usize,
    reexport: bool,
    items: Vec<UseItem>,
}

#[derive(Clone, Debug, PartialEq)]
struct UseItem {
    segments: Vec<String>,
    name: String,
    glob: bool,
}

/// The file holding module `name`, declared in `file`.
fn child_file(file: &Path, name: &str) -> Option<PathBuf> {
    let stem = file.file_stem()?.to_str()?;
    let dir = file.parent()?;
    let dir = if matches!(stem, "lib" | "main" | "mod") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The names of the `mod x;` declarations of some code.
fn declared_modules(code: &str) -> Vec<String> {
    let idents: Vec<(usize, &str)> = identifiers(code).collect();
    idents
        .windows(2)
        .filter(|w| w[0].1 == "mod")
        .filter(|w| code[w[1].0 + w[1].1.len()..].trim_start().starts_with(';'))
        .map(|w| w[1].1.to_owned())
        .collect()
}

/// The tokens of a `use` tree: identifiers, `::`, `{`, `}`, `,`, `*`.
fn use_tokens(tree: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = tree.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek().filter(|n| n.is_alphanumeric() || **n == '_') {
                word.push(n);
                chars.next();
            }
            out.push(word);
        } else if c == ':' {
            if chars.peek() == Some(&':') {
                chars.next();
            }
            out.push("::".to_owned());
        } else if matches!(c, '{' | '}' | ',' | '*') {
            out.push(c.to_string());
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{self, d as e}, f::*}`) into its paths.
pub(crate) fn expand_use(tree: &str) -> Vec<(Vec<String>, String, bool)> {
    let tokens = use_tokens(tree);
    let mut out = Vec::new();
    let mut at = 0;
    expand(&tokens, &mut at, &[], &mut out);
    out.into_iter()
        .map(|i| (i.segments, i.name, i.glob))
        .collect()
}

fn expand(tokens: &[String], at: &mut usize, prefix: &[String], out: &mut Vec<UseItem>) {
    let mut segments = prefix.to_vec();
    loop {
        match tokens.get(*at).map(String::as_str) {
            Some("::") => *at += 1,
            Some("{") => {
                *at += 1;
                loop {
                    match tokens.get(*at).map(String::as_str) {
                        Some("}") => {
                            *at += 1;
                            return;
                        }
                        Some(",") => *at += 1,
                        None => return,
                        Some(_) => expand(tokens, at, &segments, out),
                    }
                }
            }
            Some("*") => {
                *at += 1;
                out.push(UseItem {
                    name: String::new(),
                    segments,
                    glob: true,
                });
                return;
            }
            Some("," | "}") | None => {
                if segments.last().is_some_and(|s| s == "self") {
                    segments.pop();
                }
                if let Some(name) = segments.last().cloned() {
                    out.push(UseItem {
                        segments,
                        name,
                        glob: false,
                    });
                }
                return;
            }
            Some("as") => {
                *at += 1;
                let name = tokens.get(*at).cloned().unwrap_or_default();
                *at += 1;
                if segments.last().is_some_and(|s| s == "self") {
                    segments.pop();
                }
                out.push(UseItem {
                    segments,
                    name,
                    glob: false,
                });
                return;
            }
            Some(word) => {
                segments.push(word.to_owned());
                *at += 1;
            }
        }
    }
}

/// Whether the code just before `at` says `pub` or `pub(…)`.
fn is_public_before(code: &str, at: usize) -> bool {
    let before = code[..at].trim_end();
    let before = match before.strip_suffix(')') {
        Some(b) => match b.rfind('(') {
            Some(open) => b[..open].trim_end(),
            None => return false,
        },
        None => before,
    };
    before.ends_with("pub")
        && !before[..before.len() - 3]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

impl Module {
    fn read(path: ModPath, file: PathBuf) -> Option<Module> {
        let text = std::fs::read_to_string(&file).ok()?;
        let source = Source::new(&text).without_tests();
        let code = source.code();
        let idents: Vec<(usize, &str)> = identifiers(code).collect();
        let mut inline = Vec::new();
        for w in idents.windows(2).filter(|w| w[0].1 == "mod") {
            let after = w[1].0 + w[1].1.len();
            if code[after..].trim_start().starts_with('{') {
                let open = after + code[after..].find('{').unwrap_or(0);
                inline.push((
                    w[1].1.to_owned(),
                    open,
                    matching_brace(code.as_bytes(), open),
                ));
            }
        }
        let mut uses = Vec::new();
        for &(at, word) in &idents {
            if word != "use" {
                continue;
            }
            let start = at + "use".len();
            let Some(len) = code[start..].find(';') else {
                continue;
            };
            let tree = &code[start..start + len];
            // `use` in other positions (`use<'a>` bounds) is not a declaration.
            if !tree.starts_with(char::is_whitespace) {
                continue;
            }
            let items = expand_use(tree)
                .into_iter()
                .map(|(segments, name, glob)| UseItem {
                    segments,
                    name,
                    glob,
                })
                .collect();
            uses.push(Use {
                at,
                end: start + len,
                reexport: is_public_before(code, at),
                items,
            });
        }
        Some(Module {
            path,
            file,
            source,
            inline,
            uses,
        })
    }

    /// The module a position of the code is in: this file's, or an inline one in it.
    fn path_at(&self, offset: usize) -> ModPath {
        let mut path = self.path.clone();
        path.extend(
            self.inline
                .iter()
                .filter(|(_, start, end)| *start <= offset && offset < *end)
                .map(|(name, _, _)| name.clone()),
        );
        path
    }
}

/// A crate's modules, found from its root file through the `mod` declarations.
struct Crate {
    modules: Vec<Module>,
    index: HashMap<ModPath, usize>,
}

impl Crate {
    fn load(root: &Path) -> Crate {
        let mut modules = Vec::new();
        let mut queue = VecDeque::from([(Vec::new(), root.to_path_buf())]);
        while let Some((path, file)) = queue.pop_front() {
            let Some(module) = Module::read(path.clone(), file.clone()) else {
                continue;
            };
            for name in declared_modules(module.source.code()) {
                if let Some(child) = child_file(&file, &name) {
                    let mut child_path = path.clone();
                    child_path.push(name);
                    queue.push_back((child_path, child));
                }
            }
            modules.push(module);
        }
        let index = modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.path.clone(), i))
            .collect();
        Crate { modules, index }
    }

    fn is_module(&self, path: &[String]) -> bool {
        self.index.contains_key(path)
    }

    /// The module file a module path (maybe into an inline module) belongs to.
    fn file_module(&self, path: &[String]) -> ModPath {
        let mut path = path.to_vec();
        while !self.is_module(&path) {
            path.pop();
        }
        path
    }

    /// Where a re-export of `name` by module `module` leads, if it has one.
    fn reexport(&self, module: &[String], name: &str, depth: usize) -> Option<ModPath> {
        let m = &self.modules[*self.index.get(module)?];
        let item = m
            .uses
            .iter()
            .filter(|u| u.reexport)
            .flat_map(|u| &u.items)
            .find(|i| !i.glob && i.name == name)?;
        self.resolve(module, &item.segments, depth + 1)
    }

    /// The module a path written in module `from` leads to, or `None` for a path outside the
    /// crate.
    fn resolve(&self, from: &[String], segments: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 {
            return None;
        }
        let (first, rest) = segments.split_first()?;
        let mut at: ModPath = match first.as_str() {
            "crate" | "$crate" => Vec::new(),
            "self" => from.to_vec(),
            "super" => {
                let mut at = from.to_vec();
                at.pop();
                let mut rest = rest;
                while rest.first().is_some_and(|s| s == "super") {
                    at.pop();
                    rest = &rest[1..];
                }
                return Some(self.walk(self.file_module(&at), rest, depth));
            }
            child => {
                let mut path = self.file_module(from);
                path.push(child.to_owned());
                if !self.is_module(&path) {
                    return None;
                }
                path
            }
        };
        if first == "self" {
            at = self.file_module(&at);
        }
        Some(self.walk(at, rest, depth))
    }

    /// Follows `rest` from module `at` through child modules and re-exports.
    fn walk(&self, mut at: ModPath, rest: &[String], depth: usize) -> ModPath {
        for (i, segment) in rest.iter().enumerate() {
            let mut child = at.clone();
            child.push(segment.clone());
            if self.is_module(&child) {
                at = child;
            } else if let Some(target) = self.reexport(&at, segment, depth) {
                return self.walk(target, &rest[i + 1..], depth + 1);
            } else {
                break;
            }
        }
        at
    }

    /// Every import of a module by another: (from, to) → where it is first written.
    fn edges(&self) -> BTreeMap<(ModPath, ModPath), (PathBuf, usize, String)> {
        let mut edges = BTreeMap::new();
        for m in &self.modules {
            let code = m.source.code();
            let mut found: Vec<(usize, ModPath, Vec<String>)> = Vec::new();
            for u in m.uses.iter().filter(|u| !u.reexport) {
                let from = m.path_at(u.at);
                for item in &u.items {
                    found.push((u.at, from.clone(), item.segments.clone()));
                }
            }
            let in_use = |offset: usize| m.uses.iter().any(|u| u.at <= offset && offset < u.end);
            let idents: Vec<(usize, &str)> = identifiers(code).collect();
            let children: BTreeSet<&str> = self
                .modules
                .iter()
                .filter(|c| c.path.len() == m.path.len() + 1 && c.path.starts_with(&m.path))
                .filter_map(|c| c.path.last().map(String::as_str))
                .collect();
            let mut i = 0;
            while i < idents.len() {
                let (at, word) = idents[i];
                let starts_path =
                    matches!(word, "crate" | "super" | "self") || children.contains(word);
                let after_colons = code[..at].trim_end().ends_with("::");
                if !starts_path || after_colons || in_use(at) {
                    i += 1;
                    continue;
                }
                let mut segments = vec![word.to_owned()];
                let mut end = at + word.len();
                let mut j = i + 1;
                while j < idents.len() && code[end..idents[j].0].trim() == "::" {
                    segments.push(idents[j].1.to_owned());
                    end = idents[j].0 + idents[j].1.len();
                    j += 1;
                }
                if segments.len() > 1 {
                    found.push((at, m.path_at(at), segments));
                }
                i = j;
            }
            for (at, from, segments) in found {
                let Some(to) = self.resolve(&from, &segments, 0) else {
                    continue;
                };
                let to = self.file_module(&to);
                // A module and the modules inside it are one unit's parts: the root and a
                // folder's `mod.rs` are the hubs of theirs.
                if to.starts_with(&m.path) || m.path.starts_with(&to) {
                    continue;
                }
                edges
                    .entry((m.path.clone(), to))
                    .or_insert_with(|| (m.file.clone(), m.source.line_of(at), segments.join("::")));
            }
        }
        edges
    }
}

fn name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".to_owned()
    } else {
        path.join("::")
    }
}

/// The shortest chain of imports from `from` to `to`, if any.
fn shortest_path(
    adjacent: &BTreeMap<&ModPath, Vec<&ModPath>>,
    from: &ModPath,
    to: &ModPath,
) -> Option<Vec<ModPath>> {
    let mut came_from: HashMap<&ModPath, &ModPath> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![at.clone()];
            let mut cur = at;
            while cur != from {
                cur = came_from[cur];
                path.push(cur.clone());
            }
            path.reverse();
            return Some(path);
        }
        for next in adjacent.get(at).into_iter().flatten() {
            if *next != from && !came_from.contains_key(next) {
                came_from.insert(next, at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// Every circle of imports between the modules of the crate whose root file is `root`
/// (`src/lib.rs` or `src/main.rs`): each as the modules around it and where each import is
/// written (paths shown relative to `base`).
pub(crate) fn import_circles(root: &Path, base: &Path) -> Vec<String> {
    let krate = Crate::load(root);
    let edges = krate.edges();
    let mut adjacent: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        adjacent.entry(from).or_default().push(to);
    }
    let mut circles: BTreeSet<Vec<ModPath>> = BTreeSet::new();
    for (from, to) in edges.keys() {
        let Some(mut back) = shortest_path(&adjacent, to, from) else {
            continue;
        };
        // The circle from → to → … → from, started at its least module so that each circle
        // is reported once.
        back.pop();
        let mut circle = vec![from.clone()];
        circle.extend(back);
        let least = (0..circle.len())
            .min_by_key(|&i| &circle[i])
            .unwrap_or_default();
        circle.rotate_left(least);
        circles.insert(circle);
    }
    let crate_dir = root.parent().unwrap_or(root);
    let shown = |p: &Path| p.strip_prefix(base).unwrap_or(p).display().to_string();
    circles
        .into_iter()
        .map(|circle| {
            let mut around: Vec<String> = circle.iter().map(|m| name(m)).collect();
            around.push(name(&circle[0]));
            let mut text = format!("{}: import circle {}", shown(crate_dir), around.join(" → "));
            for (i, from) in circle.iter().enumerate() {
                let to = &circle[(i + 1) % circle.len()];
                if let Some((file, line, path)) = edges.get(&(from.clone(), to.clone())) {
                    text.push_str(&format!(
                        "\n    {}:{line}: `{path}` ({} imports {})",
                        shown(file),
                        name(from),
                        name(to)
                    ));
                }
            }
            text
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(segments: &[&str], name: &str) -> (Vec<String>, String, bool) {
        (
            segments.iter().map(|s| (*s).to_owned()).collect(),
            name.to_owned(),
            false,
        )
    }

    #[test]
    fn use_trees_expand() {
        assert_eq!(
            expand_use(" crate::{a, b::{self, c as d}, e::*}"),
            [
                item(&["crate", "a"], "a"),
                item(&["crate", "b"], "b"),
                item(&["crate", "b", "c"], "d"),
                (vec!["crate".into(), "e".into()], String::new(), true),
            ]
        );
        assert_eq!(
            expand_use(" super::args::{Args, Wait}"),
            [
                item(&["super", "args", "Args"], "Args"),
                item(&["super", "args", "Wait"], "Wait"),
            ]
        );
    }

    #[test]
    fn public_uses_are_reexports() {
        let code = "pub use a::b; pub(crate) use c::d; use e::f; fn x() {} use g;";
        let at = |s: &str| code.find(s).unwrap();
        assert!(is_public_before(code, at("use a")));
        assert!(is_public_before(code, at("use c")));
        assert!(!is_public_before(code, at("use e")));
        assert!(!is_public_before(code, at("use g")));
    }
}
