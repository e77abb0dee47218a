//! The house rule of `src/`: imports only go down. Each top-level module
//! (a "room": a folder or a single file) has a floor, and a room may name
//! only rooms on floors below its own, through `crate::` or `super::`
//! paths (doc links count: they are dependencies a reader follows too);
//! and inside a folder, files name each other without circles.
//! Test code is exempt (`#[cfg(test)] mod tests` blocks and `tests.rs`
//! files), as it may build whatever it checks.
//!
//! Written by hand rather than with a crate: what is checked is a project
//! rule over path prefixes, which no Rust import-graph crate states, and
//! a few dozen lines of scanning keep it dependency-free.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The floors, bottom first: config at the bottom, then data, models,
/// diffusion, the method, metrics, the engine, and the front ends on top.
const FLOORS: &[&str] = &[
    "files",
    "transfer",
    "config",
    "parallel",
    "rng",
    "data",
    "kernels",
    "model",
    "optim",
    "diffusion",
    "distill",
    "metrics",
    "rundir",
    "report",
    "runtime",
    "engine",
    "compare",
    "export",
    "runner",
    "ui",
    "cli",
];

fn floor(room: &str) -> Option<usize> {
    FLOORS.iter().position(|r| *r == room)
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The module path of a file under `src/`: `engine/session.rs` →
/// [engine, session]; `engine/mod.rs` → [engine]; `lib.rs` → [].
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The source without its test module (by convention the file's last item).
fn without_tests(source: &str) -> &str {
    match source.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &source[..at],
        None => source,
    }
}

fn identifier_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first identifiers of the items of a `{a::b, c, d::{e, f}}` group
/// that starts at `text` (just after its `{`).
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = vec![identifier_at(text.trim_start())];
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => heads.push(identifier_at(text[i + 1..].trim_start())),
            _ => {}
        }
    }
    heads.into_iter().filter(|h| !h.is_empty()).collect()
}

/// The names that follow `prefix` at `at` (one, or a group's heads).
fn names_after(source: &str, at: usize) -> Vec<String> {
    let rest = &source[at..];
    match rest.strip_prefix('{') {
        Some(group) => group_heads(group),
        None if rest.starts_with('*') => vec!["*".into()],
        None => vec![identifier_at(rest)],
    }
}

/// The rooms a file names outside itself: `crate::room…`, and `super::`
/// chains that climb out of its room to the crate root.
fn rooms_named(module: &[String], source: &str) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    for (at, _) in source.match_indices("crate::") {
        let before = source[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in a macro, or a longer identifier
        }
        rooms.extend(names_after(source, at + "crate::".len()));
    }
    for (at, _) in source.match_indices("super::") {
        if source[..at].ends_with("super::") {
            continue; // counted from the chain's first `super::`
        }
        let mut end = at;
        let mut climbs = 0;
        while source[end..].starts_with("super::") {
            end += "super::".len();
            climbs += 1;
        }
        if climbs >= module.len() {
            rooms.extend(names_after(source, end));
        }
    }
    rooms
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    let mut rooms_seen = BTreeSet::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        if relative.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let module = module_path(relative);
        let Some(room) = module.first() else {
            continue; // lib.rs and main.rs sit above every room
        };
        let own = floor(room).unwrap_or_else(|| {
            panic!(
                "src/{}: the room `{room}` has no floor; add it to FLOORS in tests/structure.rs",
                relative.display()
            )
        });
        rooms_seen.insert(room.clone());
        let source = std::fs::read_to_string(&path).unwrap();
        for named in rooms_named(&module, without_tests(&source)) {
            if named == *room || named == "self" {
                continue;
            }
            if floor(&named).is_some_and(|theirs| theirs > own) {
                upward.push(format!("src/{} → {named}", relative.display()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports running back up ({}):\n  {}",
        upward.len(),
        upward.join("\n  ")
    );
    // A floor whose room is gone would let the list drift from the house.
    let missing: Vec<_> = FLOORS.iter().filter(|r| !rooms_seen.contains(**r)).collect();
    assert!(missing.is_empty(), "FLOORS names rooms not in src/: {missing:?}");
}

/// The files a file names inside its own folder (`super::x` and
/// `crate::…::folder::x` paths that land on a sibling file), as module
/// paths. `mod.rs` is the folder itself, which names its files by nature,
/// so it takes no part.
fn siblings_named(
    module: &[String],
    source: &str,
    files: &BTreeSet<Vec<String>>,
    reexports: &Reexports,
) -> BTreeSet<Vec<String>> {
    let folder = &module[..module.len() - 1];
    let mut named = BTreeSet::new();
    let mut land = |path: Vec<String>| {
        // `super::Session`, re-exported by mod.rs, is session.rs; a glob
        // (`super::*`) is every file mod.rs re-exports from.
        let paths: Vec<Vec<String>> = match path.last().map(String::as_str) {
            Some("*") => reexports.values().cloned().collect(),
            _ => vec![reexports.get(&path).cloned().unwrap_or(path)],
        };
        for path in paths {
            if path.len() == module.len()
                && path[..folder.len()] == *folder
                && path != module
                && files.contains(&path)
            {
                named.insert(path);
            }
        }
    };
    for (at, _) in source.match_indices("crate::") {
        let before = source[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        // `crate::engine::{session::Session, team}`: the folder's part,
        // then the names after it.
        let rest = &source[at + "crate::".len()..];
        let mut path = Vec::new();
        let mut tail = rest;
        while path.len() < folder.len() {
            let name = identifier_at(tail);
            if name.is_empty() || !tail[name.len()..].starts_with("::") {
                break;
            }
            tail = &tail[name.len() + 2..];
            path.push(name);
        }
        if path == folder {
            let offset = rest.len() - tail.len();
            for name in names_after(rest, offset) {
                land([folder.to_vec(), vec![name]].concat());
            }
        }
    }
    for (at, _) in source.match_indices("super::") {
        let before = &source[..at];
        if before.ends_with("super::") || before.ends_with("self::") {
            continue;
        }
        if source[at..].starts_with("super::super::") {
            continue; // out of the folder
        }
        for name in names_after(source, at + "super::".len()) {
            land([folder.to_vec(), vec![name]].concat());
        }
    }
    named
}

/// Items a folder's mod.rs re-exports (`pub use session::Session;`),
/// each as the module path of the file that defines it:
/// [engine, Session] → [engine, session].
type Reexports = BTreeMap<Vec<String>, Vec<String>>;

/// The re-exports of the folder `folder` whose mod.rs is `source`.
fn reexports_of(folder: &[String], source: &str, files: &BTreeSet<Vec<String>>) -> Reexports {
    let mut found = Reexports::new();
    for (at, _) in without_tests(source).match_indices("pub use ") {
        let rest = &source[at + "pub use ".len()..];
        let file = identifier_at(rest);
        let file_path = [folder.to_vec(), vec![file.clone()]].concat();
        if !files.contains(&file_path) || !rest[file.len()..].starts_with("::") {
            continue;
        }
        for item in names_after(rest, file.len() + 2) {
            found.insert([folder.to_vec(), vec![item]].concat(), file_path.clone());
        }
    }
    found
}

/// The circles of a graph (each once, as the files of one strongly
/// connected part, sorted).
fn circles(edges: &[(Vec<String>, Vec<String>)]) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&Vec<String>> = edges.iter().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for (a, b) in edges {
                if *a == n && seen.insert(b.clone()) {
                    todo.push(b.clone());
                }
            }
        }
        seen
    };
    let reach: Vec<(&Vec<String>, BTreeSet<Vec<String>>)> = nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut parts: BTreeSet<Vec<String>> = BTreeSet::new();
    for (n, from_n) in &reach {
        if !from_n.contains(*n) {
            continue;
        }
        let part: Vec<String> = (reach.iter())
            .filter(|(m, from_m)| from_n.contains(*m) && from_m.contains(*n))
            .map(|(m, _)| m.join("/") + ".rs")
            .collect();
        parts.insert(part);
    }
    parts.into_iter().collect()
}

/// Within a folder, files name each other one way only: a circle (`a`
/// names `b`, `b` names `a`, through any number of files) makes two files
/// one idea split in two, which nobody can read alone.
#[test]
fn no_import_circles_between_the_files_of_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = Vec::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap().to_path_buf();
        let is_folder_or_test = relative
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "tests.rs" || n == "lib.rs" || n == "main.rs");
        if !is_folder_or_test && relative.components().count() > 1 {
            modules.push((module_path(&relative), path));
        }
    }
    let files: BTreeSet<Vec<String>> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut reexports = Reexports::new();
    for path in rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        if relative.file_name().is_some_and(|n| n == "mod.rs") {
            let source = std::fs::read_to_string(&path).unwrap();
            reexports.extend(reexports_of(&module_path(relative), &source, &files));
        }
    }
    let mut edges = Vec::new();
    for (module, path) in &modules {
        let source = std::fs::read_to_string(path).unwrap();
        for named in siblings_named(module, without_tests(&source), &files, &reexports) {
            edges.push((module.clone(), named));
        }
    }
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "import circles between the files of a folder ({}):\n  {}",
        found.len(),
        found
            .iter()
            .map(|c| c.join(" ↔ "))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

#[test]
fn the_circle_finder_sees_a_circle_through_a_folder() {
    let m = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
    let files: BTreeSet<Vec<String>> = ["engine/a", "engine/b", "engine/c", "ui/a"]
        .iter()
        .map(|s| m(s))
        .collect();
    let a = "use super::b::B;\nuse crate::ui::a::X;\n";
    let b = "use crate::engine::{c::C, protocol};\n";
    let c = "fn f() { super::a::run(); super::super::ui::x(); }\n";
    assert_eq!(
        siblings_named(&m("engine/a"), a, &files, &Reexports::new()),
        BTreeSet::from([m("engine/b")])
    );
    assert_eq!(
        siblings_named(&m("engine/b"), b, &files, &Reexports::new()),
        BTreeSet::from([m("engine/c")])
    );
    assert_eq!(
        siblings_named(&m("engine/c"), c, &files, &Reexports::new()),
        BTreeSet::from([m("engine/a")])
    );
    let mut edges = vec![
        (m("engine/a"), m("engine/b")),
        (m("engine/b"), m("engine/c")),
        (m("engine/c"), m("engine/a")),
        (m("ui/x"), m("ui/y")),
    ];
    assert_eq!(
        circles(&edges),
        vec![vec!["engine/a.rs", "engine/b.rs", "engine/c.rs"]]
    );
    edges.remove(2);
    assert!(circles(&edges).is_empty());

    // Through mod.rs's re-exports: `super::C` and a glob land on c.rs.
    let reexports = reexports_of(&m("engine"), "mod c;\npub use c::{C, D};\n", &files);
    assert_eq!(reexports.get(&m("engine/C")), Some(&m("engine/c")));
    let via = "/// [`super::C::run`]\nfn f() {}\n";
    assert_eq!(
        siblings_named(&m("engine/a"), via, &files, &reexports),
        BTreeSet::from([m("engine/c")])
    );
    assert_eq!(
        siblings_named(&m("engine/a"), "use super::*;\n", &files, &reexports),
        BTreeSet::from([m("engine/c")])
    );
}

#[test]
fn the_scanner_sees_every_form_of_path() {
    let engine_session = vec!["engine".to_string(), "session".to_string()];
    let source = "use crate::{config::Config, data::{A, B}, \n  model};\n\
                  fn f() { crate::ui::draw(); $crate::cli::x(); }\n\
                  use super::clock; use super::super::report::Plot;\n";
    let named = rooms_named(&engine_session, source);
    let expected: BTreeSet<String> = ["config", "data", "model", "ui", "report"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(named, expected);
    assert_eq!(module_path(Path::new("engine/mod.rs")), vec!["engine"]);
    assert_eq!(module_path(Path::new("files.rs")), vec!["files"]);
    // A top-level file's `super::` is the crate root.
    let files = vec!["files".to_string()];
    assert!(rooms_named(&files, "use super::engine::X;").contains("engine"));
}

/// The lab sees training only through the protocol's plain messages:
/// no file of `src/ui/` names a candle crate, or any part of the engine but
/// `engine::protocol`.
#[test]
fn the_ui_speaks_only_the_protocol() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui");
    let mut offences = Vec::new();
    for path in rust_files(&ui) {
        let source = std::fs::read_to_string(&path).unwrap();
        let code = without_tests(&source);
        // The crates' paths, not the word (comments may say where candle is).
        if code.contains("candle_core") || code.contains("candle_nn") {
            offences.push(format!("{}: names a candle crate", path.display()));
        }
        for (at, _) in code.match_indices("crate::engine::") {
            let rest = &code[at + "crate::engine::".len()..];
            if !rest.starts_with("protocol") {
                offences.push(format!(
                    "{}: crate::engine::{}",
                    path.display(),
                    identifier_at(rest)
                ));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}
