//! The import picture: no cycles between sibling modules, in the daemon (`src/`) or in
//! neon-sim (`sim/src/`).
//!
//! Why a test: a cycle between two modules means neither can be read, changed or tested
//! without the other, and cycles come back unnoticed one convenient `use` at a time (the
//! redesign of issue 9 removed them; new features had brought three back before this test).
//! Modules are files; an edge is a `crate::` or `super::` path in a file's code (comments and
//! the `#[cfg(test)]` tail left out), attributed to the deepest module it names. A child
//! naming its parent, or a parent its child, is how Rust modules are built and not counted:
//! the check compares siblings (same parent) at every depth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `.rs` file under `root`, as its module path (`jobs/engine.rs` -> `[jobs, engine]`,
/// `jobs/mod.rs` -> `[jobs]`, `lib.rs`/`main.rs` -> `[]`).
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(root).expect("under the root");
                let mut m: Module = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if m.last().is_some_and(|l| l == "mod") {
                    m.pop();
                }
                if m == ["lib"] || m == ["main"] {
                    m.clear();
                }
                out.insert(m, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The code of a file: without its `#[cfg(test)]` tail (tests sit at the end by this
/// project's convention) and without `//` comments (doc links are not imports).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| match l.find("//") {
            // `"https://..."`: a `//` inside a string is not a comment.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths named after `crate::` / `super::` in `code`, with `{a::X, b::{c}}`
/// groups expanded; each path stops at its first segment that is not a module name
/// (a type, `self`, `*`). `super` is returned as the first segment, to be resolved.
fn paths(code: &str) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start_kw = ["crate::", "super::"]
            .into_iter()
            .find(|kw| b[i..].starts_with(kw.as_bytes()) && (i == 0 || !is_ident(b[i - 1])));
        match start_kw {
            Some(kw) => {
                let head = kw.trim_end_matches("::").to_string();
                i += kw.len();
                // `super::super::x`
                let mut prefix = vec![head];
                while b[i..].starts_with(b"super::") {
                    prefix.push("super".into());
                    i += "super::".len();
                }
                i = tree(code, i, prefix, &mut out);
            }
            None => i += 1,
        }
    }
    out
}

/// Reads one use-tree at `i` (`a::b::{c, d::E}` or `a::B`) below `prefix`; returns where it
/// ends.
fn tree(code: &str, mut i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let b = code.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut path = prefix;
    loop {
        i = skip_ws(i);
        if i < b.len() && b[i] == b'{' {
            i += 1;
            loop {
                i = skip_ws(i);
                if i >= b.len() {
                    return i;
                }
                if b[i] == b'}' {
                    out.push(path.clone());
                    return i + 1;
                }
                if b[i] == b',' {
                    i += 1;
                    continue;
                }
                let before = i;
                i = tree(code, i, path.clone(), out);
                if i == before {
                    i += 1;
                }
            }
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        let seg = &code[start..i];
        let module_name = !seg.is_empty()
            && seg.as_bytes()[0].is_ascii_lowercase()
            && seg != "self"
            && b[i..].starts_with(b"::");
        if module_name {
            path.push(seg.to_string());
            i += 2;
        } else {
            out.push(path);
            return i.max(start);
        }
    }
}

/// Sibling edges of the tree under `root`: (depth, from, to).
fn sibling_edges(root: &Path) -> BTreeSet<(Module, Module)> {
    let mods = modules(root);
    let mut edges = BTreeSet::new();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for p in paths(&code(&text)) {
            let mut full: Module = if p[0] == "crate" {
                Vec::new()
            } else {
                // `super` in file module `m` is `m`'s parent.
                m.clone()
            };
            for seg in &p {
                match seg.as_str() {
                    "crate" => {}
                    "super" => {
                        full.pop();
                    }
                    s => full.push(s.to_string()),
                }
            }
            let target = (0..=full.len())
                .rev()
                .map(|k| full[..k].to_vec())
                .find(|k| mods.contains_key(k))
                .unwrap_or_default();
            // The first place where the two module paths part: siblings there.
            let common = m.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < m.len() && common < target.len() {
                edges.insert((m[..=common].to_vec(), target[..=common].to_vec()));
            }
        }
    }
    edges
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeSet<(Module, Module)>) -> Option<Vec<Module>> {
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state: BTreeMap<&Module, u8> = BTreeMap::new();
    fn dfs<'a>(
        v: &'a Module,
        next: &BTreeMap<&'a Module, Vec<&'a Module>>,
        state: &mut BTreeMap<&'a Module, u8>,
        path: &mut Vec<&'a Module>,
    ) -> Option<Vec<Module>> {
        state.insert(v, 1);
        path.push(v);
        for w in next.get(v).into_iter().flatten() {
            match state.get(w).copied().unwrap_or(0) {
                1 => {
                    let at = path.iter().position(|p| p == w).expect("on the path");
                    let mut cycle: Vec<Module> = path[at..].iter().map(|m| (*m).clone()).collect();
                    cycle.push((*w).clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = dfs(w, next, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(v, 2);
        None
    }
    let starts: Vec<&Module> = next.keys().copied().collect();
    for v in starts {
        if state.get(v).copied().unwrap_or(0) == 0 {
            if let Some(c) = dfs(v, &next, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn assert_acyclic(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let edges = sibling_edges(&root);
    assert!(
        edges.len() > 10,
        "{dir}: only {} module edges found; the scanner is broken",
        edges.len()
    );
    if let Some(cycle) = find_cycle(&edges) {
        let shown: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        panic!(
            "{dir}: import cycle between sibling modules: {}\n\
             Move what both need into a leaf module (or the parent), so that one only names the other.",
            shown.join(" -> ")
        );
    }
}

#[test]
fn the_daemon_has_no_import_cycles() {
    assert_acyclic("src");
}

#[test]
fn neon_sim_has_no_import_cycles() {
    assert_acyclic("sim/src");
}

#[test]
fn the_scanner_sees_grouped_and_nested_paths_and_finds_a_cycle() {
    let found = paths(
        "use crate::jobs::{plan::PlannedAction, saved::{self, Facts}};\n\
         let x = super::super::neon::Branch::default();\n\
         fn f() -> crate::store::Store {}",
    );
    let found: BTreeSet<String> = found.iter().map(|p| p.join("::")).collect();
    for want in [
        "crate::jobs::plan",
        "crate::jobs::saved",
        "super::super::neon",
        "crate::store",
    ] {
        assert!(found.contains(want), "{want} not in {found:?}");
    }
    let m = |s: &str| s.split("::").map(String::from).collect::<Module>();
    let edges: BTreeSet<_> = [
        (m("a::x"), m("a::y")),
        (m("a::y"), m("a::z")),
        (m("a::z"), m("a::x")),
    ]
    .into();
    let cycle = find_cycle(&edges).expect("a -> y -> z -> x is a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let acyclic: BTreeSet<_> = [(m("a::x"), m("a::y")), (m("a::y"), m("a::z"))].into();
    assert_eq!(find_cycle(&acyclic), None);
    assert!(!code("let a = 1; // crate::x::y\n").contains("crate::x"));
}
