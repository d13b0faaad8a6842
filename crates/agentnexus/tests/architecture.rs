//! The layering docs/architecture.md draws, held by the code: which crate may depend on which,
//! and no import cycle between the modules of any crate.
//!
//! A module depends on another when a path in it (`use crate::jobs::enqueue`,
//! `crate::render::money(…)`, `super::Outcome`) names that module or an item in it, items
//! re-exported by a parent (`pub use messages::Message` at a crate's root) counting for the
//! module that defines them. A parent declaring or re-exporting its children is not a
//! dependency; `#[cfg(test)]` code is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Every crate of ours, with the crates of ours it may depend on.
const LAYERS: &[(&str, &[&str])] = &[
    ("engine", &[]),
    ("store", &["agentnexus-engine"]),
    ("app", &["agentnexus-engine", "agentnexus-store"]),
    (
        "server",
        &["agentnexus-app", "agentnexus-engine", "agentnexus-store"],
    ),
    (
        "agentnexus",
        &[
            "agentnexus-app",
            "agentnexus-client",
            "agentnexus-engine",
            "agentnexus-server",
            "agentnexus-store",
        ],
    ),
    ("testkit", &[]),
    // The REST API's client: HTTP only, nothing of ours.
    ("client", &[]),
];

/// What the use cases may not know: the HTTP edge.
const NOT_IN_APP: &[&str] = &["axum", "tower-http", "utoipa", "http-body-util"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `[dependencies]` of a manifest (not dev- or build-dependencies), by name.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && let Some((name, _)) = line.split_once(['=', '.']) {
            deps.insert(name.trim().to_owned());
        }
    }
    deps
}

#[test]
fn crates_depend_only_on_the_layers_below() {
    for (name, allowed) in LAYERS {
        let manifest = std::fs::read_to_string(crates_dir().join(name).join("Cargo.toml")).unwrap();
        let deps = dependencies(&manifest);
        let ours: BTreeSet<&str> = deps
            .iter()
            .map(String::as_str)
            .filter(|d| d.starts_with("agentnexus-"))
            .collect();
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        assert!(
            ours.is_subset(&allowed),
            "crates/{name} depends on {:?}; it may depend on {allowed:?}",
            ours.difference(&allowed).collect::<Vec<_>>()
        );
        if *name == "app" {
            for http in NOT_IN_APP {
                assert!(!deps.contains(*http), "the use cases depend on {http}");
            }
        }
    }
}

/// One crate's modules: what each defines and re-exports, and the paths it uses.
#[derive(Default)]
struct Module {
    /// Names of the items it defines (modules included).
    items: BTreeSet<String>,
    /// `pub use` re-exports: the name they give to a path, or `*` for a glob.
    reexports: Vec<(String, Vec<String>)>,
    /// Absolute paths (from the crate root) its code names.
    paths: Vec<Vec<String>>,
}

fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The paths a `use` tree names, each with the name it binds.
fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            path.push(n.ident.to_string());
            out.push((n.ident.to_string(), path));
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            path.push(r.ident.to_string());
            out.push((r.rename.to_string(), path));
        }
        syn::UseTree::Glob(_) => out.push(("*".into(), prefix.clone())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_paths(t, prefix, out);
            }
        }
    }
}

/// A path as written in module `at`, made absolute. One that starts with a name is taken to
/// start in `at` (a child module, as `pub use jobs::Job` at a crate's root); when it names
/// something else (another crate, an item in scope), it leads nowhere but `at` itself.
fn absolute(at: &[String], path: &[String]) -> Option<Vec<String>> {
    let first = path.first()?;
    let (mut out, skip): (Vec<String>, usize) = match first.as_str() {
        "crate" => (Vec::new(), 1),
        "self" => (at.to_vec(), 1),
        "super" => (at[..at.len().checked_sub(1)?].to_vec(), 1),
        _ => (at.to_vec(), 0),
    };
    let mut rest = &path[skip..];
    while rest.first().map(String::as_str) == Some("super") {
        out.pop()?;
        rest = &rest[1..];
    }
    out.extend(rest.iter().cloned());
    Some(out)
}

struct Collector<'a> {
    at: &'a [String],
    module: &'a mut Module,
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let (attrs, name) = match item {
            syn::Item::Const(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Enum(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Fn(i) => (&i.attrs, Some(i.sig.ident.to_string())),
            syn::Item::Macro(i) => (&i.attrs, i.ident.as_ref().map(|i| i.to_string())),
            syn::Item::Mod(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Static(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Struct(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Trait(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Type(i) => (&i.attrs, Some(i.ident.to_string())),
            syn::Item::Impl(i) => (&i.attrs, None),
            syn::Item::Use(i) => (&i.attrs, None),
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test(attrs) {
            return;
        }
        if let Some(name) = name {
            self.module.items.insert(name);
        }
        if let syn::Item::Use(u) = item {
            let mut found = Vec::new();
            use_paths(&u.tree, &mut Vec::new(), &mut found);
            let public = !matches!(u.vis, syn::Visibility::Inherited);
            for (name, path) in found {
                let Some(path) = absolute(self.at, &path) else {
                    continue;
                };
                if public {
                    self.module.reexports.push((name, path.clone()));
                }
                self.module.paths.push(path);
            }
            return;
        }
        syn::visit::visit_item(self, item);
    }

    /// Paths inside a macro's arguments (`json!({"at": crate::audit::timestamp_text(t)})`).
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        fn walk(tokens: proc_macro2::TokenStream, collector: &mut Collector<'_>) {
            let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
            let mut i = 0;
            while i < tokens.len() {
                match &tokens[i] {
                    proc_macro2::TokenTree::Group(g) => walk(g.stream(), collector),
                    proc_macro2::TokenTree::Ident(id)
                        if ["crate", "super", "self"].contains(&id.to_string().as_str()) =>
                    {
                        let mut segments = vec![id.to_string()];
                        let mut j = i + 1;
                        // `::` is two `:` punctuation tokens, then an identifier.
                        while let (
                            Some(proc_macro2::TokenTree::Punct(a)),
                            Some(proc_macro2::TokenTree::Punct(b)),
                            Some(proc_macro2::TokenTree::Ident(next)),
                        ) = (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2))
                        {
                            if a.as_char() != ':' || b.as_char() != ':' {
                                break;
                            }
                            segments.push(next.to_string());
                            j += 3;
                        }
                        if let Some(path) = absolute(collector.at, &segments) {
                            collector.module.paths.push(path);
                        }
                        i = j;
                        continue;
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        walk(mac.tokens.clone(), self);
        syn::visit::visit_macro(self, mac);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if let Some(path) = absolute(self.at, &segments) {
            self.module.paths.push(path);
        }
        syn::visit::visit_path(self, path);
    }
}

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

fn modules(krate: &str) -> BTreeMap<Vec<String>, Module> {
    let src = crates_dir().join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let at = module_path(&src, &file);
        let ast = syn::parse_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut module = Module::default();
        Collector {
            at: &at,
            module: &mut module,
        }
        .visit_file(&ast);
        out.insert(at, module);
    }
    out
}

/// The module a path leads to: the longest module prefix, then through re-exports for the
/// name after it (explicit ones first, then globs).
fn target(
    modules: &BTreeMap<Vec<String>, Module>,
    path: &[String],
    depth: usize,
) -> Option<Vec<String>> {
    let (len, _) = (0..=path.len())
        .rev()
        .map(|n| (n, &path[..n]))
        .find(|(_, p)| modules.contains_key(*p))?;
    let at = path[..len].to_vec();
    let Some(name) = path.get(len) else {
        return Some(at);
    };
    let module = &modules[&at];
    if depth > 8 || module.items.contains(name) {
        return Some(at);
    }
    let rest = &path[len + 1..];
    for (alias, to) in &module.reexports {
        if alias == name {
            let mut full = to.clone();
            full.extend(rest.iter().cloned());
            return target(modules, &full, depth + 1).or(Some(at));
        }
    }
    for (alias, to) in &module.reexports {
        if alias == "*" {
            let mut full = to.clone();
            full.push(name.clone());
            full.extend(rest.iter().cloned());
            if let Some(t) = target(modules, &full, depth + 1)
                && modules[&t].items.contains(name)
            {
                return Some(t);
            }
        }
    }
    Some(at)
}

/// Each module's dependencies: other modules, none of them its own descendants.
fn graph(modules: &BTreeMap<Vec<String>, Module>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    modules
        .iter()
        .map(|(at, m)| {
            let deps = m
                .paths
                .iter()
                .filter_map(|p| target(modules, p, 0))
                .filter(|t| !t.starts_with(at))
                .collect();
            (at.clone(), deps)
        })
        .collect()
}

/// A cycle, if the graph has one.
fn cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        done: &mut BTreeSet<Vec<String>>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut found = stack[i..].to_vec();
            found.push(node.clone());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, done, stack) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut found = Vec::new();
    for (krate, _) in LAYERS {
        let modules = modules(krate);
        let mut graph = graph(&modules);
        // Every cycle, one at a time: each found is reported, then broken to look further.
        while let Some(c) = cycle(&graph) {
            let names: Vec<String> = c.iter().map(|m| name(m)).collect();
            found.push(format!("crates/{krate}: {}", names.join(" -> ")));
            graph.get_mut(&c[0]).unwrap().remove(&c[1]);
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    // A re-exported item counts for the module that defines it.
    let mut modules: BTreeMap<Vec<String>, Module> = BTreeMap::new();
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    let mut root = Module::default();
    root.reexports
        .push(("Message".into(), path("messages::Message")));
    root.items
        .extend(["jobs".to_owned(), "messages".to_owned()]);
    modules.insert(Vec::new(), root);
    let mut jobs = Module::default();
    jobs.items.insert("JobKind".into());
    jobs.paths.push(path("Message"));
    modules.insert(path("jobs"), jobs);
    let mut messages = Module::default();
    messages.items.insert("Message".into());
    modules.insert(path("messages"), messages);
    assert!(cycle(&graph(&modules)).is_none());
    modules
        .get_mut(&path("messages"))
        .unwrap()
        .paths
        .push(path("jobs::JobKind"));
    let found = cycle(&graph(&modules)).expect("jobs -> messages -> jobs");
    assert_eq!(found.len(), 3, "{found:?}");
}
