//! No import cycles between the bridge's modules (`src/`, the `pttbridge` library crate).
//!
//! A cycle (room ⇄ switchboard, config ⇄ the sides' configs, http ⇄ a side) ties modules that
//! should be understood, tested and changed apart. This test parses every module of the crate
//! with `syn`, collects the paths each one names (`use` trees, paths in code, and `crate::` /
//! `super::` paths inside macro calls), resolves them to the module that defines the item
//! (following `pub use` re-exports), and fails on any strongly connected set of modules.
//!
//! Containment is not a dependency: a module naming its ancestor (`use super::*` in a child,
//! a parent's `pub use child::Item`) or its own descendants is left out, since a module and the
//! modules inside it are one unit from the outside.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path from the crate root, e.g. `["sides", "meeting", "room"]`.
type ModPath = Vec<String>;

/// One module file: where it is, the modules declared in it and what it names.
#[derive(Default)]
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
    /// Paths named in the module (as written, relative to the module), with their line.
    refs: Vec<(Vec<String>, usize)>,
    /// `pub use` re-exports: the name they give → the path they point at.
    reexports: HashMap<String, Vec<String>>,
}

#[test]
fn no_module_cycles_in_the_bridge_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    load(&root.join("lib.rs"), Vec::new(), &mut modules);
    assert!(
        modules.len() > 20,
        "only {} modules found: the crate layout changed, fix the test",
        modules.len()
    );

    // Edges between modules that are not ancestors or descendants of each other.
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, (PathBuf, usize)>> = BTreeMap::new();
    for (from, m) in &modules {
        for (path, line) in &m.refs {
            let Some(to) = resolve(from, path, &modules, 0) else {
                continue;
            };
            if to.starts_with(from) || from.starts_with(&to) {
                continue;
            }
            edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_insert((m.file.clone(), *line));
        }
    }

    let cycles = strongly_connected(&modules.keys().cloned().collect::<Vec<_>>(), &edges);
    let mut report = String::new();
    for scc in &cycles {
        report.push_str(&format!(
            "\ncycle between {}:\n",
            scc.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
        for from in scc {
            for (to, (file, line)) in edges.get(from).into_iter().flatten() {
                if scc.contains(to) {
                    let file = file.strip_prefix(&root).unwrap_or(file);
                    report.push_str(&format!(
                        "  {} → {}  (src/{}:{line})\n",
                        name(from),
                        name(to),
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "modules of src/ import each other in a cycle; move what both need into a leaf module \
         or pass it in through a trait:{report}"
    );
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Parses `file` as module `path` and, recursively, the module files it declares.
fn load(file: &Path, path: ModPath, modules: &mut BTreeMap<ModPath, Module>) {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut m = Module {
        file: file.to_path_buf(),
        ..Module::default()
    };
    let mut inline = Vec::new();
    collect_items(&ast.items, &mut m, &mut inline);
    // The directory holding this module's children: `a/` for `a.rs` and `a/mod.rs`.
    let is_dir_owner = matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("lib.rs" | "mod.rs" | "main.rs")
    );
    let dir = if is_dir_owner {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    let children: Vec<String> = m.children.iter().cloned().collect();
    modules.insert(path.clone(), m);
    for child in children {
        let mut child_path = path.clone();
        child_path.push(child.clone());
        let flat = dir.join(format!("{child}.rs"));
        let nested = dir.join(&child).join("mod.rs");
        let child_file = if flat.exists() { flat } else { nested };
        load(&child_file, child_path, modules);
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().trim() == "test")
    })
}

/// Collects module declarations, re-exports and named paths from `items`. Inline modules
/// (other than tests) count as part of this module.
fn collect_items(items: &[syn::Item], m: &mut Module, inline: &mut Vec<String>) {
    for item in items {
        match item {
            syn::Item::Mod(md) if is_cfg_test(&md.attrs) => {}
            syn::Item::Mod(md) => match &md.content {
                None => {
                    m.children.insert(md.ident.to_string());
                }
                Some((_, inner)) => {
                    inline.push(md.ident.to_string());
                    collect_items(inner, m, inline);
                    inline.pop();
                }
            },
            syn::Item::Use(u) if is_cfg_test(&u.attrs) => {}
            syn::Item::Use(u) => {
                let public = matches!(u.vis, syn::Visibility::Public(_));
                let line = u.use_token.span.start().line;
                let mut prefix = Vec::new();
                expand_use(&u.tree, &mut prefix, &mut |path, alias| {
                    if public && let Some(alias) = alias {
                        m.reexports.insert(alias, path.clone());
                    }
                    m.refs.push((path, line));
                });
            }
            other if item_is_test(other) => {}
            other => {
                let mut v = PathCollector { refs: &mut m.refs };
                v.visit_item(other);
            }
        }
    }
}

fn item_is_test(item: &syn::Item) -> bool {
    match item {
        syn::Item::Fn(f) => is_cfg_test(&f.attrs),
        syn::Item::Impl(i) => is_cfg_test(&i.attrs),
        _ => false,
    }
}

/// Calls `f` with every full path of a use tree and the name it is imported as (`None` for
/// globs and `self`-less groups).
fn expand_use(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    f: &mut dyn FnMut(Vec<String>, Option<String>),
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            expand_use(&p.tree, prefix, f);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut full = prefix.clone();
            let ident = n.ident.to_string();
            if ident == "self" {
                let alias = full.last().cloned();
                f(full, alias);
            } else {
                full.push(ident.clone());
                f(full, Some(ident));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            if r.ident != "self" {
                full.push(r.ident.to_string());
            }
            f(full, Some(r.rename.to_string()));
        }
        syn::UseTree::Glob(_) => f(prefix.clone(), None),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                expand_use(t, prefix, f);
            }
        }
    }
}

/// Paths in code that start at the crate or a relative module (`crate::`, `super::`, `self::`),
/// including inside macro calls (`json!`, `tokio::select!`), which syn leaves as tokens.
struct PathCollector<'a> {
    refs: &'a mut Vec<(Vec<String>, usize)>,
}

impl<'ast> Visit<'ast> for PathCollector<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segs.len() > 1 && matches!(segs[0].as_str(), "crate" | "super" | "self") {
            let line = p.segments[0].ident.span().start().line;
            self.refs.push((segs, line));
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        scan_tokens(mac.tokens.clone(), self.refs);
        syn::visit::visit_macro(self, mac);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if !is_cfg_test(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }
}

/// Finds `crate :: a :: b` / `super :: …` sequences in a token stream.
fn scan_tokens(tokens: TokenStream, refs: &mut Vec<(Vec<String>, usize)>) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < trees.len() {
        match &trees[i] {
            TokenTree::Group(g) => scan_tokens(g.stream(), refs),
            TokenTree::Ident(id) if matches!(id.to_string().as_str(), "crate" | "super") => {
                let line = id.span().start().line;
                let mut segs = vec![id.to_string()];
                let mut j = i + 1;
                // `::` is two `:` puncts, then an identifier; repeat.
                loop {
                    let colons = matches!((&trees.get(j), &trees.get(j + 1)),
                        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
                    match (colons, trees.get(j + 2)) {
                        (true, Some(TokenTree::Ident(next))) => {
                            segs.push(next.to_string());
                            j += 3;
                        }
                        _ => break,
                    }
                }
                if segs.len() > 1 {
                    refs.push((segs, line));
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// The module `path` (named in module `from`) points into: the deepest module it walks
/// through, following `pub use` re-exports of its last item. `None` for other crates.
fn resolve(
    from: &ModPath,
    path: &[String],
    modules: &BTreeMap<ModPath, Module>,
    depth: usize,
) -> Option<ModPath> {
    if depth > 8 || path.is_empty() {
        return None;
    }
    let mut cur: ModPath = match path[0].as_str() {
        "crate" => Vec::new(),
        "super" | "self" => from.clone(),
        // A child module of `from` named without `self::` (after `mod x;` in this file).
        first if modules.contains_key(&[from.as_slice(), &[first.to_owned()]].concat()) => {
            from.clone()
        }
        _ => return None,
    };
    let mut rest = match path[0].as_str() {
        "crate" | "self" => &path[1..],
        "super" => {
            cur.pop();
            &path[1..]
        }
        _ => path,
    };
    while let Some(seg) = rest.first() {
        if seg == "super" {
            cur.pop();
            rest = &rest[1..];
            continue;
        }
        let mut next = cur.clone();
        next.push(seg.clone());
        if modules.contains_key(&next) {
            cur = next;
            rest = &rest[1..];
            continue;
        }
        // An item of `cur`: if `cur` re-exports it, the dependency is on where it comes from.
        if let Some(target) = modules.get(&cur).and_then(|m| m.reexports.get(seg))
            && target.as_slice() != path
        {
            return resolve(&cur, target, modules, depth + 1).or(Some(cur));
        }
        break;
    }
    Some(cur)
}

/// Tarjan's algorithm: the strongly connected components with more than one module.
fn strongly_connected(
    nodes: &[ModPath],
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, (PathBuf, usize)>>,
) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeMap<ModPath, (PathBuf, usize)>>,
        index: HashMap<ModPath, usize>,
        low: HashMap<ModPath, usize>,
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
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default();
        for w in &targets {
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
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == *v;
                scc.push(w);
                if done {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in nodes {
        if !s.index.contains_key(n) {
            visit(&mut s, n);
        }
    }
    s.out
}

#[test]
fn the_checker_finds_a_planted_cycle() {
    // Two sibling modules naming each other, and a third naming one of them only.
    let mut modules = BTreeMap::new();
    let m = |refs: &[&[&str]]| Module {
        refs: refs
            .iter()
            .map(|r| (r.iter().map(|s| s.to_string()).collect(), 1))
            .collect(),
        ..Module::default()
    };
    let mut root = m(&[]);
    root.children = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    modules.insert(vec![], root);
    modules.insert(vec!["a".into()], m(&[&["super", "b", "Thing"]]));
    modules.insert(vec!["b".into()], m(&[&["crate", "a", "Other"]]));
    modules.insert(vec!["c".into()], m(&[&["crate", "a"]]));
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, (PathBuf, usize)>> = BTreeMap::new();
    for (from, md) in &modules {
        for (path, line) in &md.refs {
            let to = resolve(from, path, &modules, 0).unwrap();
            if !(to.starts_with(from) || from.starts_with(&to)) {
                edges
                    .entry(from.clone())
                    .or_default()
                    .insert(to, (PathBuf::new(), *line));
            }
        }
    }
    let sccs = strongly_connected(&modules.keys().cloned().collect::<Vec<_>>(), &edges);
    assert_eq!(
        sccs,
        vec![vec![vec!["a".to_string()], vec!["b".to_string()]]]
    );
}
