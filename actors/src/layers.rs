//! The shape of this crate, checked: imports run one way.
//!
//! Reads every source file (up to its tests), finds the files each one imports (`use` lines
//! and paths in code, through `crate::`, `super::`, `self::` or a child module's name), and
//! asserts that no file imports a file that imports it back, however indirectly, and that
//! each layer imports only from the layers below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The rooms of the support layer (the bottom), and the supervisor (the top); everything else
/// is an actor.
const SUPPORT: &[&str] = &["runtime", "store", "crypto", "metrics", "error", "time"];
const TOP: &[&str] = &["supervisor", "layers"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/token/issue.rs` → `["token", "issue"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without its tests: an inline `#[cfg(test)] mod … {` ends the file's
/// code (tests sit at the bottom), a `#[cfg(test)] mod …;` declaration is skipped.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && let Some(next) = lines.peek()
        {
            let next = next.trim();
            if next.starts_with("mod ") || next.starts_with("pub mod ") {
                if next.ends_with(';') {
                    lines.next();
                    continue;
                }
                break;
            }
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Every `a::b::c` path in `code` that starts with `crate`, `super`, `self` or a child module.
fn paths(code: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    // Expand `use x::{a, b::c}` groups into whole paths first.
    let mut expanded = String::new();
    let mut rest = code;
    while let Some(start) = rest.find("::{") {
        let (before, after) = rest.split_at(start);
        let head_start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        let head = &before[head_start..];
        let mut depth = 0;
        let mut end = 0;
        for (i, c) in after.char_indices().skip(3) {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        if end == 0 {
            break;
        }
        expanded.push_str(&before[..head_start]);
        let inner = &after[3..end];
        for item in split_top(inner) {
            let item = item.trim();
            if !item.is_empty() {
                expanded.push_str(&format!(" {head}::{item};"));
            }
        }
        rest = &after[end + 1..];
    }
    expanded.push_str(rest);
    let mut found = Vec::new();
    for token in expanded.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        let segs: Vec<String> = token.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if segs.len() >= 2 && (["crate", "super", "self"].contains(&segs[0].as_str()) || children.contains(&segs[0])) {
            found.push(segs);
        }
    }
    found
}

/// Splits a `use` group's items at its top-level commas.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

#[test]
fn imports_run_one_way_with_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_of(&src, f), f.clone())).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let code = code_of(&text);
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
                l.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')).map(str::to_owned)
            })
            .collect();
        for path in paths(&code, &children) {
            // Resolve the path's start to an absolute module path.
            let mut abs: Vec<String> = match path[0].as_str() {
                "crate" => Vec::new(),
                "super" => {
                    let mut m = module.clone();
                    m.pop();
                    m
                }
                "self" => module.clone(),
                _ => {
                    let mut m = module.clone();
                    m.push(path[0].clone());
                    m
                }
            };
            let skip = usize::from(["crate", "super", "self"].contains(&path[0].as_str()));
            let mut target = None;
            for seg in &path[skip..] {
                if seg == "super" {
                    abs.pop();
                    continue;
                }
                abs.push(seg.clone());
                if modules.contains_key(&abs) {
                    target = Some(abs.clone());
                }
            }
            if let Some(t) = target.filter(|t| t != module) {
                edges.entry(module.clone()).or_default().insert(t);
            }
        }
    }
    // No cycles: a depth-first search that never meets a file still on its path.
    fn visit<'a>(
        m: &'a Vec<String>,
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        done: &mut BTreeSet<&'a Vec<String>>,
        path: &mut Vec<&'a Vec<String>>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| *p == m) {
            let cycle: Vec<String> = path[i..].iter().map(|p| p.join("::")).collect();
            panic!("import cycle: {} -> {}", cycle.join(" -> "), m.join("::"));
        }
        path.push(m);
        for next in edges.get(m).into_iter().flatten() {
            visit(next, edges, done, path);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in modules.keys() {
        visit(m, &edges, &mut done, &mut Vec::new());
    }
    // Layers: support imports no actor and not the supervisor; actors do not import the supervisor.
    let layer = |m: &Vec<String>| match m.first().map(String::as_str) {
        None => 3,
        Some(r) if SUPPORT.contains(&r) => 0,
        Some(r) if TOP.contains(&r) => 2,
        Some(_) => 1,
    };
    for (from, tos) in &edges {
        for to in tos {
            assert!(
                layer(to) <= layer(from),
                "{} (layer {}) imports {} (layer {}): imports must run downwards",
                from.join("::"),
                layer(from),
                to.join("::"),
                layer(to)
            );
        }
    }
    assert!(edges.len() > 20, "the checker found too few imports to be reading the code");
}
