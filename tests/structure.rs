//! Checks of the crate's shape (docs/architecture.md): the modules of `src/` import each other
//! without cycles, every import points down the layers, no function outside the tests is longer
//! than 100 lines, and the module map of docs/architecture.md names every module.
//!
//! A module is a file (`src/model/dis2.rs` is `model::dis2`, `src/model/mod.rs` is `model`). An
//! import is any `crate::a::b` or `super::a` path in a file's non-test code, resolved to the
//! longest module it names. Test code (`tests.rs` files and whatever follows `#[cfg(test)]`) is
//! left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest non-test function allowed, in lines (signature to closing brace).
const MAX_FUNCTION_LINES: usize = 100;

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `src/model/dis2.rs` -> `["model", "dis2"]`; `mod.rs`, `lib.rs` and `main.rs` name their folder
/// (the crate root is `[]`).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src_dir()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file's text without its test code (everything from the first `#[cfg(test)]` on).
fn non_test_text(file: &Path) -> Option<String> {
    if file.file_name().is_some_and(|n| n == "tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(file).unwrap();
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    Some(text[..cut].to_string())
}

/// Lines without their `//` comments (paths in docs are not imports).
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| match l.find("//") {
        Some(i) => &l[..i],
        None => l,
    })
}

/// The identifiers of a path starting at `s` (`a::b::{c, d}` gives `[a, b]`).
fn path_segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

/// The modules a file's non-test code refers to through `crate::` and `super::` paths.
fn imports(module: &[String], text: &str, known: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for line in code_lines(text) {
        for (anchor, base) in [("crate::", Vec::new()), ("super::", parent_of(module))] {
            let mut from = 0;
            while let Some(i) = line[from..].find(anchor) {
                let at = from + i;
                from = at + anchor.len();
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let mut path = base.clone();
                path.extend(path_segments(&line[from..]));
                // The longest prefix that is a module file.
                while !path.is_empty() && !known.contains(&path) {
                    path.pop();
                }
                if path.as_slice() != module {
                    out.insert(path);
                }
            }
        }
    }
    out
}

/// What `super` names from `module`: its parent (for a `mod.rs` file, whose module is its
/// folder, the folder's parent).
fn parent_of(module: &[String]) -> Vec<String> {
    let mut p = module.to_vec();
    p.pop();
    p
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        next: usize,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// The module graph of `src/` (each module's imports of other modules).
fn module_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = rust_files(&src_dir());
    let known: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_path(file);
        let Some(text) = non_test_text(file) else {
            continue;
        };
        // The crate root only declares modules; `main.rs` calls them.
        if module.is_empty() {
            continue;
        }
        let deps = imports(&module, &text, &known)
            .into_iter()
            .filter(|d| !d.is_empty())
            // A module's own parent (its `mod.rs`) only declares it.
            .filter(|d| !module.starts_with(d))
            .collect();
        graph.insert(module, deps);
    }
    graph
}

#[test]
fn modules_import_each_other_without_cycles() {
    let graph = module_graph();
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let members: BTreeSet<&Vec<String>> = c.iter().collect();
            let edges: Vec<String> = c
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|d| members.contains(d))
                        .map(move |d| format!("{} -> {}", name(m), name(d)))
                })
                .collect();
            format!("  cycle through {} modules: {}", c.len(), edges.join(", "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "the modules of src/ import each other in circles:\n{}",
        described.join("\n")
    );
}

/// The layers of docs/architecture.md, lowest first: a module may import modules of its own group
/// (the first segment of its path) or of a lower layer. The longest matching prefix places a
/// module (the training settings `train::{config, optim, schedule}` sit below the experiment file
/// that reads them, and so below the trainer).
const LAYERS: &[&[&str]] = &[
    &[
        "fsutil", "native", "alloc", "device", "progress", "metrics", "stats", "preempt",
    ],
    &["precision"],
    &["model", "dist"],
    &["data"],
    &["train::config", "train::optim", "train::schedule"],
    &["config"],
    &["checkpoint", "tiling", "report"],
    &["figures", "prepare", "blocks"],
    &["train", "predict"],
    &["eval"],
    &["sweep"],
    &["info", "import_torch", "export_torch", "merge_students"],
    &["cli"],
];

/// The layer of `module` and the entry of [`LAYERS`] that placed it, or `None` if none does.
fn layer_of(module: &[String]) -> Option<(usize, &'static str)> {
    let path = module.join("::");
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (i, *n)))
        .filter(|(_, n)| path == *n || path.starts_with(&format!("{n}::")))
        .max_by_key(|(_, n)| n.len())
}

#[test]
fn imports_point_down_the_layers() {
    let graph = module_graph();
    let mut found = Vec::new();
    for (module, deps) in &graph {
        let Some((layer, group)) = layer_of(module) else {
            found.push(format!(
                "  {} has no layer: add it to LAYERS here and to docs/architecture.md",
                name(module)
            ));
            continue;
        };
        for dep in deps {
            let Some((dep_layer, dep_group)) = layer_of(dep) else {
                continue;
            };
            let same_group = group.split("::").next() == dep_group.split("::").next();
            if dep_layer > layer || (dep_layer == layer && !same_group) {
                found.push(format!(
                    "  {} (layer {layer}) imports {} (layer {dep_layer})",
                    name(module),
                    name(dep)
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports that do not point down the layers of docs/architecture.md:\n{}",
        found.join("\n")
    );
}

/// `(name, first line, length)` of every function in `text` (test code left out) longer than
/// `max` lines. A function ends at the first line that closes its brace at its own indentation.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let sig = trimmed
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("async ")
            .trim_start_matches("unsafe ")
            .trim_start_matches("extern \"C\" ");
        let Some(rest) = sig.strip_prefix("fn ") else {
            continue;
        };
        let fn_name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let close = " ".repeat(indent) + "}";
        // A declaration without a body (`fn f();` in a trait) ends on its own line.
        if lines[i].trim_end().ends_with(';') {
            continue;
        }
        let Some(end) = lines[i..].iter().position(|l| l.trim_end() == close) else {
            continue;
        };
        let len = end + 1;
        if len > max {
            out.push((fn_name, i + 1, len));
        }
    }
    out
}

#[test]
fn no_function_outside_the_tests_is_over_100_lines() {
    let mut found = Vec::new();
    for file in rust_files(&src_dir()) {
        let Some(text) = non_test_text(&file) else {
            continue;
        };
        for (f, line, len) in long_functions(&text, MAX_FUNCTION_LINES) {
            let rel = file.strip_prefix(src_dir().parent().unwrap()).unwrap();
            found.push(format!("  {}:{line} fn {f}: {len} lines", rel.display()));
        }
    }
    assert!(
        found.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them into named stages):\n{}",
        found.join("\n")
    );
}

/// The modules the "Modules" table of docs/architecture.md names: the first cell of each row,
/// `` `data::raster` ``.
fn module_map(doc: &str) -> Vec<String> {
    let Some(start) = doc.find("\n## Modules\n") else {
        return Vec::new();
    };
    let section = &doc[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    section[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// What a module map gets wrong against the modules of `src/`: those it leaves out, those it
/// names that do not exist, and those it names twice.
fn module_map_errors(modules: &BTreeSet<String>, map: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for name in map {
        if !seen.insert(name) {
            errors.push(format!("  {name} is listed twice"));
        } else if !modules.contains(name) {
            errors.push(format!("  {name} is listed but is no module of src/"));
        }
    }
    for name in modules.iter().filter(|m| !seen.contains(m)) {
        errors.push(format!("  {name} is missing"));
    }
    errors
}

#[test]
fn the_module_map_of_docs_architecture_names_every_module() {
    let path = src_dir().parent().unwrap().join("docs/architecture.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    // Test-only files are not modules of the library's map; the crate root (`[]`) is described
    // in the text.
    let modules: BTreeSet<String> = rust_files(&src_dir())
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| module_path(f))
        .filter(|m| !m.is_empty())
        .map(|m| name(&m))
        .collect();
    let errors = module_map_errors(&modules, &module_map(&doc));
    assert!(
        errors.is_empty(),
        "the \"Modules\" table of {} (one row per module, its first cell `a::b`) does not match \
         src/: add a row for each module missing, remove those that are gone:\n{}",
        path.display(),
        errors.join("\n")
    );
}

#[test]
fn the_checks_see_a_cycle_and_a_long_function() {
    // The checkers themselves, on made-up input, so that a broken checker cannot pass silently.
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let c = vec!["c".to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(a.clone(), BTreeSet::from([b.clone()]));
    graph.insert(b.clone(), BTreeSet::from([c.clone()]));
    graph.insert(c.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(cycles(&graph).len(), 1);
    graph.insert(c.clone(), BTreeSet::new());
    assert!(cycles(&graph).is_empty());

    let body = "    let x = 1;\n".repeat(120);
    let text = format!("pub fn long() {{\n{body}}}\n\nfn short() {{\n    1\n}}\n");
    let found = long_functions(&text, 100);
    assert_eq!(found, vec![("long".to_string(), 1, 122)]);

    let known = BTreeSet::from([
        vec!["model".to_string()],
        vec!["model".to_string(), "dis2".to_string()],
        vec!["data".to_string(), "raster".to_string()],
        vec!["data".to_string()],
    ]);
    let deps = imports(
        &["model".to_string(), "losses".to_string()],
        "use super::dis2::TrainOutputs;\nuse crate::data::raster::{read, Window};\n// crate::eval in a comment\n",
        &known,
    );
    assert_eq!(
        deps,
        BTreeSet::from([
            vec!["model".to_string(), "dis2".to_string()],
            vec!["data".to_string(), "raster".to_string()],
        ])
    );

    let path = |p: &str| p.split("::").map(str::to_string).collect::<Vec<_>>();
    assert_eq!(layer_of(&path("train::config")), Some((4, "train::config")));
    assert_eq!(layer_of(&path("train::trainer")), Some((8, "train")));
    assert_eq!(layer_of(&path("model::dis2")), Some((2, "model")));
    assert_eq!(layer_of(&path("nowhere")), None);

    let doc = "# A\n\n## Modules\n\n| module | what |\n| --- | --- |\n| `a` | x |\n| `a::b` | y |\n| `gone` | z |\n\n## Next\n\n| `c` | not the map |\n";
    let map = module_map(doc);
    assert_eq!(map, ["a", "a::b", "gone"]);
    let modules = BTreeSet::from(["a".to_string(), "a::b".to_string(), "a::c".to_string()]);
    assert_eq!(
        module_map_errors(&modules, &map),
        [
            "  gone is listed but is no module of src/",
            "  a::c is missing"
        ]
    );
    assert!(module_map("no map here").is_empty());
}
