//! Issue 14: the source tree repeats the data flow. Imports between the library's wings (the
//! top-level modules: `zone`, `health`, `cluster`, `dns`, `ops`, ...) and between its files
//! point one way only: this reads every `crate::` and `super::` path in `src/` (outside
//! `#[cfg(test)]` modules, which may look anywhere) and fails with the cycle when there is one.
//!
//! A child module using its parent's items (`super::Handler` in `dns/udp.rs`) is the one
//! exception at file level: the parent owns the child, the two are one unit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (e.g. `["dns", "limit"]`) of every library file under `src/`.
fn modules(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under src/");
            let mut segs: Vec<String> = rel
                .iter()
                .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            match segs.last().map(String::as_str) {
                Some("main") if segs.len() == 1 => continue, // the binary: it uses `steerdns::`
                Some("lib") if segs.len() == 1 => segs.clear(),
                Some("mod") => {
                    segs.pop();
                }
                _ => {}
            }
            out.insert(segs, path);
        }
    }
    out
}

/// The source without comments and without `#[cfg(test)]` items (test modules and helpers).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_cfg_test = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let opens = line.matches('{').count() as i32;
        let closes = line.matches('}').count() as i32;
        if skip_depth.is_none() && t.starts_with("#[cfg(test)]") {
            pending_cfg_test = true;
            continue;
        }
        if pending_cfg_test && skip_depth.is_none() {
            if t.starts_with("#[") {
                continue;
            }
            pending_cfg_test = false;
            if opens > closes {
                skip_depth = Some(depth);
                depth += opens - closes;
            }
            // A one-line item (`use ...;` or `fn f() {}`) under cfg(test) is dropped whole.
            continue;
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every path that starts with `crate::` or `super::`, as absolute module paths, with brace
/// groups (`crate::{a, b::c}`) expanded.
fn paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let prev_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &bytes[i..];
        let base: Option<(Vec<String>, usize)> = if prev_ok && rest.starts_with(b"crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if prev_ok && rest.starts_with(b"super::") {
            // `super` of a file module is its parent; of `x/mod.rs` it is x's parent too.
            let mut m = module.to_vec();
            m.pop();
            Some((m, "super::".len()))
        } else {
            None
        };
        if let Some((prefix, skip)) = base {
            let end = expand(code, i + skip, prefix, &mut out);
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads `a::b::{c, d::e}` from `start` onwards below `prefix`, pushing each full path.
fn expand(code: &str, start: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes = code.as_bytes();
    let mut i = start;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return i + 1;
                }
                i = expand(code, i, prefix.clone(), out);
                // Skip `as alias` and anything else up to the next item.
                while i < bytes.len() && bytes[i] != b',' && bytes[i] != b'}' {
                    i += 1;
                }
            }
        }
        let s = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if s == i {
            out.push(prefix);
            return i;
        }
        let ident = &code[s..i];
        if ident != "self" {
            prefix.push(ident.to_string());
        }
        if bytes[i..].starts_with(b"::") {
            i += 2;
        } else {
            out.push(prefix);
            return i;
        }
    }
}

/// The module file a path names: its longest prefix that is a module.
fn target(path: &[String], modules: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

struct Graphs {
    files: BTreeMap<String, BTreeSet<String>>,
    wings: BTreeMap<String, BTreeSet<String>>,
}

fn graphs() -> Graphs {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&root);
    let mut files: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("source is readable");
        files.entry(name(module)).or_default();
        for path in paths(&code(&text), module) {
            let Some(to) = target(&path, &modules) else {
                continue;
            };
            // Self-references, the crate root, and a child using its parent (see the top).
            if &to == module || to.is_empty() || module.starts_with(&to) {
                continue;
            }
            files.entry(name(module)).or_default().insert(name(&to));
            let (from_wing, to_wing) = (&module[0], &to[0]);
            if from_wing != to_wing {
                wings
                    .entry(from_wing.clone())
                    .or_default()
                    .insert(to_wing.clone());
            }
        }
    }
    Graphs { files, wings }
}

#[test]
fn wings_import_one_way() {
    let g = graphs();
    // `cargo test --test layout -- --nocapture` prints who imports whom.
    for (wing, uses) in &g.wings {
        eprintln!(
            "{wing} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(
        g.wings.len() >= 8,
        "expected the wings' imports, read {:?}",
        g.wings
    );
    if let Some(cycle) = find_cycle(&g.wings) {
        panic!(
            "the wings import each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn files_import_one_way() {
    let g = graphs();
    assert!(
        g.files.len() >= 30,
        "expected every file, read {:?}",
        g.files.keys()
    );
    if let Some(cycle) = find_cycle(&g.files) {
        panic!("files import each other in a cycle: {}", cycle.join(" -> "));
    }
}

/// The checker itself finds a cycle and expands brace groups (so a clean result means
/// something).
#[test]
fn the_checker_sees_cycles_and_brace_groups() {
    let module = vec!["dns".to_string(), "limit".to_string()];
    let code = code(
        "use crate::{zone::{self, Name}, rrl};\nfn f() { super::answer::x(); }\n\
         #[cfg(test)]\nmod tests {\n    use crate::ops::admin;\n}\n",
    );
    let mut got = paths(&code, &module);
    got.sort();
    let want: Vec<Vec<String>> = vec![
        vec!["dns".into(), "answer".into(), "x".into()],
        vec!["rrl".into()],
        vec!["zone".into()],
        vec!["zone".into(), "Name".into()],
    ];
    assert_eq!(got, want);
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.insert("c".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
}
