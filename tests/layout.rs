//! The layout's rules, checked on the source itself: no file in `src/` over 600 lines (the
//! client binary's `main.rs` under 250), no reply text written outside `wire/`, and no import
//! cycle between the files of a crate, inside a folder or across folders.
//!
//! Imports are read from the source: every `use` tree and every path written out in code
//! (`crate::..`, `super::..`, `self::..`, a child module's name, an alias a `use` gave a module),
//! resolved to the file that defines the item, through `pub use` re-exports (globs too). A file
//! naming a module only as a namespace depends on nothing by that; declaring a child (`mod x;`)
//! is not an import. An edge A → B means A uses an item defined in B; a cycle is a strongly
//! connected set of two or more files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// One crate's files: module path (segments below the crate root) to file and text.
struct Crate {
    modules: BTreeMap<Vec<String>, Module>,
}

struct Module {
    /// The file's code, comments removed; the part from a trailing `#[cfg(test)] mod tests {` on
    /// is kept apart, since `super` there means the file's own module.
    code: String,
    tests: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file beneath `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if !dir.is_dir() {
        return files;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Removes line comments (doc comments included); string contents are left, but a `//` inside a
/// string (an odd number of quotes before it) is not taken for a comment.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut cut = line.len();
        let mut from = 0;
        while let Some(at) = line[from..].find("//") {
            let at = from + at;
            if line[..at].matches('"').count() % 2 == 0 {
                cut = at;
                break;
            }
            from = at + 2;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

/// The crate rooted at `root_file` (lib.rs, or a binary's main file), its modules from the files
/// in `dir` beneath it.
fn load(root_file: &Path, dir: &Path) -> Crate {
    let mut modules = BTreeMap::new();
    let mut add = |segments: Vec<String>, file: &Path| {
        let text = strip_comments(&fs::read_to_string(file).unwrap());
        let (code, tests) = match text.find("#[cfg(test)]\nmod tests {") {
            Some(at) => (text[..at].to_string(), text[at..].to_string()),
            None => (text, String::new()),
        };
        modules.insert(segments, Module { code, tests });
    };
    add(vec![], root_file);
    for file in rust_files(dir) {
        if file == root_file {
            continue;
        }
        let rel = file.strip_prefix(dir).unwrap();
        let mut segments: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let last = segments.pop().unwrap();
        if last != "mod.rs" {
            segments.push(last.trim_end_matches(".rs").to_string());
        }
        add(segments, &file);
    }
    Crate { modules }
}

/// A `use` tree, flattened: each path with the name it brings in (`None` for a glob).
fn flatten_use(tree: &str) -> Vec<(Vec<String>, Option<String>)> {
    fn walk(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, Option<String>)>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = split_path(&tree[..open]);
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut base = prefix.to_vec();
            base.extend(head);
            for part in split_top(inner) {
                walk(&base, part, out);
            }
            return;
        }
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p, Some(a.trim().to_string())),
            None => (tree, None),
        };
        let mut full = prefix.to_vec();
        full.extend(split_path(path));
        if full.last().is_some_and(|s| s == "*") {
            full.pop();
            out.push((full, None));
            return;
        }
        if full.last().is_some_and(|s| s == "self") {
            full.pop();
        }
        let Some(last) = full.last().cloned() else { return };
        out.push((full, Some(alias.unwrap_or(last))));
    }
    let mut out = Vec::new();
    walk(&[], tree, &mut out);
    out
}

fn split_path(path: &str) -> Vec<String> {
    path.split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Splits at the commas not inside braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The `use` statements of some code: (is it a re-export, its tree).
fn uses(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let before = rest[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with("pub(crate)") || before.ends_with("pub(super)");
        let after = &rest[at + 3..];
        let Some(end) = after.find(';') else { break };
        out.push((public, after[..end].split_whitespace().collect::<Vec<_>>().join(" ")));
        rest = &after[end..];
    }
    out
}

/// The offset of `word` standing alone (not part of a longer name), followed by a space.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let at = from + at;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') && after == Some(' ') {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// Paths written out in code: maximal runs of `name::name::..`.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let bytes = code.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_name(bytes[i]) && (i == 0 || !(is_name(bytes[i - 1]) || bytes[i - 1] == b':')) {
            let start = i;
            let mut segments = Vec::new();
            let mut seg_start = i;
            loop {
                while i < bytes.len() && is_name(bytes[i]) {
                    i += 1;
                }
                segments.push(code[seg_start..i].to_string());
                if code[i..].starts_with("::") && code[i + 2..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                    i += 2;
                    seg_start = i;
                } else {
                    break;
                }
            }
            if segments.len() > 1 && start < bytes.len() {
                out.push(segments);
            }
        } else {
            i += 1;
        }
    }
    out
}

const ITEM_KINDS: [&str; 8] = ["fn", "struct", "enum", "const", "static", "type", "trait", "mod"];

/// Whether `code` defines an item called `name`.
fn defines(code: &str, name: &str) -> bool {
    ITEM_KINDS.iter().any(|kind| {
        let pattern = format!("{kind} {name}");
        let mut from = 0;
        while let Some(at) = code[from..].find(&pattern) {
            let at = from + at;
            let ok_before = !code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
            let ok_after = !code[at + pattern.len()..].chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_');
            if ok_before && ok_after {
                return true;
            }
            from = at + pattern.len();
        }
        false
    })
}

impl Crate {
    /// Makes `path`, as written in module `at`, absolute; `None` if it leaves the crate (std, a
    /// dependency, the library from a binary) or starts at something that is not a module.
    fn absolute(&self, at: &[String], path: &[String], aliases: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => vec![],
            "self" => at.to_vec(),
            "super" => at[..at.len().checked_sub(1)?].to_vec(),
            name => {
                let mut child = at.to_vec();
                child.push(name.to_string());
                if self.modules.contains_key(&child) {
                    child
                } else if let Some(target) = aliases.get(name) {
                    target.clone()
                } else {
                    return None;
                }
            }
        };
        let mut rest = rest;
        while let Some(("super", more)) = rest.split_first().map(|(s, m)| (s.as_str(), m)) {
            base.pop();
            rest = more;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The module whose file defines the item at absolute `path` (through re-exports); `None` for
    /// a path that names a module only.
    fn defining(&self, path: &[String], depth: usize) -> Option<Vec<String>> {
        if depth > 16 {
            return None;
        }
        let mut module: Vec<String> = vec![];
        let mut i = 0;
        while i < path.len() {
            let mut next = module.clone();
            next.push(path[i].clone());
            if self.modules.contains_key(&next) {
                module = next;
                i += 1;
            } else {
                break;
            }
        }
        let item = path.get(i)?;
        let m = &self.modules[&module];
        if defines(&m.code, item) {
            return Some(module);
        }
        let no_aliases = HashMap::new();
        let mut globs = Vec::new();
        for (public, tree) in uses(&m.code) {
            if !public {
                continue;
            }
            for (target, name) in flatten_use(&tree) {
                let Some(target) = self.absolute(&module, &target, &no_aliases) else { continue };
                match name {
                    Some(name) if name == *item => {
                        let mut through = target;
                        through.extend(path[i + 1..].iter().cloned());
                        return self.defining(&through, depth + 1).or(Some(module));
                    }
                    Some(_) => {}
                    None => globs.push(target),
                }
            }
        }
        for glob in globs {
            let mut target = glob.clone();
            target.push(item.clone());
            if let Some(found) = self.defining(&target, depth + 1)
                && found != module
            {
                return Some(found);
            }
        }
        Some(module)
    }

    /// Every file each file imports from: module to the modules it uses items of.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        self.edges_why().into_iter().map(|(from, to)| (from, to.into_keys().collect())).collect()
    }

    /// [`Crate::edges`], each with the first path that made it.
    fn edges_why(&self) -> BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> {
        let mut edges = BTreeMap::new();
        for (at, m) in &self.modules {
            let mut to = BTreeMap::new();
            for (code, at) in [(&m.code, at.clone()), (&m.tests, [at.clone(), vec!["tests".into()]].concat())] {
                let mut aliases = HashMap::new();
                let mut paths = Vec::new();
                for (_, tree) in uses(code) {
                    for (path, name) in flatten_use(&tree) {
                        if let Some(abs) = self.absolute(&at, &path, &aliases) {
                            if let Some(name) = name
                                && self.modules.contains_key(&abs)
                            {
                                aliases.insert(name, abs.clone());
                            }
                            paths.push(abs);
                        }
                    }
                }
                for path in inline_paths(code) {
                    if path[0] == "use" {
                        continue;
                    }
                    if let Some(abs) = self.absolute(&at, &path, &aliases) {
                        paths.push(abs);
                    }
                }
                for path in paths {
                    if let Some(found) = self.defining(&path, 0)
                        && self.modules.contains_key(&found)
                    {
                        to.entry(found).or_insert_with(|| path.join("::"));
                    }
                }
            }
            to.remove(at);
            edges.insert(at.clone(), to);
        }
        edges
    }
}

/// Strongly connected sets of two or more modules (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: HashMap<&'a Vec<String>, usize>,
        low: HashMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w.clone());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut s = State {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// The crates built from `src/`: the library and each binary.
fn crates() -> Vec<(String, Crate)> {
    let src = src();
    let mut crates = vec![("ft".to_string(), load_lib(&src))];
    for entry in fs::read_dir(src.join("bin")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            crates.push((name, load(&path.join("main.rs"), &path)));
        } else {
            crates.push((name, load(&path, Path::new("/nonexistent"))));
        }
    }
    crates
}

fn load_lib(src: &Path) -> Crate {
    let mut krate = load(&src.join("lib.rs"), src);
    krate.modules.retain(|path, _| path.first().is_none_or(|first| first != "bin"));
    krate
}

fn name(krate: &str, module: &[String]) -> String {
    if module.is_empty() { krate.to_string() } else { format!("{krate}::{}", module.join("::")) }
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let mut found = Vec::new();
    for (krate_name, krate) in crates() {
        let why = krate.edges_why();
        let edges = krate.edges();
        let read = edges.values().map(BTreeSet::len).sum::<usize>();
        assert!(read > 20 || krate.modules.len() < 3, "{krate_name}: no imports read");
        for set in cycles(&edges) {
            let members: BTreeSet<_> = set.iter().collect();
            let mut lines = Vec::new();
            for from in &set {
                for (to, path) in &why[from] {
                    if members.contains(to) {
                        let (from, to) = (name(&krate_name, from), name(&krate_name, to));
                        lines.push(format!("  {from} -> {to} ({path})"));
                    }
                }
            }
            found.push(format!("{}:\n{}", krate_name, lines.join("\n")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_reads_imports_and_finds_a_cycle() {
    // The lib's own known arrows are read: the server's core uses the store and the wire.
    let krate = load_lib(&src());
    let edges = krate.edges();
    let server_get = vec!["server".to_string(), "get".to_string()];
    let reached: Vec<String> = edges[&server_get].iter().map(|m| m.join("::")).collect();
    assert!(reached.iter().any(|m| m.starts_with("store")), "{reached:?}");
    assert!(reached.iter().any(|m| m.starts_with("wire")), "{reached:?}");
    // And a cycle made up for the purpose is found.
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let c = vec!["c".to_string()];
    let made: BTreeMap<_, _> = [
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone()])),
        (c.clone(), BTreeSet::from([a.clone()])),
    ]
    .into();
    assert_eq!(cycles(&made), vec![vec![a, b]]);
    assert_eq!(flatten_use("crate::x::{self as y, z::{W, V as U}, *}").len(), 4);
}

#[test]
fn no_file_in_src_is_over_600_lines_and_ftclient_main_is_a_page() {
    let mut long = Vec::new();
    for file in rust_files(&src()) {
        let lines = fs::read_to_string(&file).unwrap().lines().count();
        let most = if file.ends_with("bin/ftclient/main.rs") { 249 } else { 600 };
        if lines > most {
            long.push(format!("{} has {lines} lines (at most {most})", file.display()));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn reply_text_is_written_in_wire_alone() {
    // An OK or ERR line, or a get header's fields, written anywhere but wire/.
    let needles = ["\"OK", "\"ERR", "b\"OK", "b\"ERR", "\"rights=", "\"xxh3=", "\"mode=", "\"mtime="];
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        if file.starts_with(src().join("wire")) {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        let code = match text.find("#[cfg(test)]") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        for (n, line) in strip_comments(code).lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "reply text outside wire/:\n{}", found.join("\n"));
}
