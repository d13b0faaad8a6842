//! The limits that keep one workspace's policy from hurting another (SPEC §3.1), checked when a
//! document is saved and again when it is compiled for use. `docs/security.md` lists them all.
//!
//! CEL's parser, its macro expansion and its interpreter recurse once per level of an
//! expression's syntax tree, and the parser's own depth limit counts only brackets: a chain
//! such as `1+1+…+1` is a tree as deep as it is long. So an expression is measured here
//! (without recursion) before anything else walks it, and parsing itself runs on a thread with
//! a stack far larger than the size limit lets any 4 KiB text need.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

/// Most bytes a policy document may hold.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Most bytes of one `when` expression.
pub const MAX_EXPRESSION_BYTES: usize = 4 * 1024;

/// Deepest an expression's syntax tree may be, macros expanded. `&&` and `||` chains are kept
/// balanced by the parser, so even long conjunctions of plain conditions stay far below it;
/// what it refuses is arithmetic or selection chains hundreds of terms long.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// Most nodes in an expression's syntax tree, macros expanded.
pub const MAX_EXPRESSION_NODES: usize = 2_000;

/// Longest a stage's `timeout` may be: 365 days.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 86_400;

/// The stack CEL parsing gets: a 4 KiB expression needs a small fraction of it even in an
/// unoptimised build, so no text within the size limit can overflow it.
const PARSE_STACK: usize = 64 * 1024 * 1024;

/// Runs `f` on a thread of its own with a large stack, for work whose recursion depends on
/// input that has not been measured yet (parsing). The thread's stack is reserved address
/// space, not memory: only the pages it touches are ever allocated.
pub(crate) fn on_large_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(s, f)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had (the process is at its limit): refuse rather than risk the
            // caller's stack.
            Err(e) => panic!("cannot start a thread to parse an expression: {e}"),
        }
    })
}

/// How big an expression's syntax tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub depth: usize,
    pub nodes: usize,
}

/// Measures a syntax tree without recursion, so a tree of any depth is measured safely.
pub fn shape(expr: &IdedExpr) -> Shape {
    let mut stack: Vec<(&IdedExpr, usize)> = vec![(expr, 1)];
    let mut out = Shape { depth: 0, nodes: 0 };
    while let Some((e, depth)) = stack.pop() {
        out.nodes += 1;
        out.depth = out.depth.max(depth);
        for child in children(e) {
            stack.push((child, depth + 1));
        }
    }
    out
}

/// The direct children of a node.
pub(crate) fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(call) => call.target.iter().map(|t| &**t).chain(&call.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => map.entries.iter().flat_map(entry_children).collect(),
        Expr::Struct(st) => st.entries.iter().flat_map(entry_children).collect(),
        Expr::Select(select) => vec![&*select.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entry_children(entry: &cel::common::ast::IdedEntryExpr) -> Vec<&IdedExpr> {
    match &entry.expr {
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
        EntryExpr::StructField(f) => vec![&f.value],
    }
}

/// Drops a syntax tree without recursion: dropping a deep `Box` chain recurses once per
/// level, which is what the limits exist to prevent.
pub(crate) fn drop_flat(expr: IdedExpr) {
    let mut stack = vec![expr];
    while let Some(mut e) = stack.pop() {
        match std::mem::take(&mut e.expr) {
            Expr::Call(call) => {
                stack.extend(call.target.map(|t| *t));
                stack.extend(call.args);
            }
            Expr::Comprehension(c) => {
                let c = *c;
                stack.extend([
                    c.iter_range,
                    c.accu_init,
                    c.loop_cond,
                    c.loop_step,
                    c.result,
                ]);
            }
            Expr::List(list) => stack.extend(list.elements),
            Expr::Map(map) => stack.extend(map.entries.into_iter().flat_map(entry_into)),
            Expr::Struct(st) => stack.extend(st.entries.into_iter().flat_map(entry_into)),
            Expr::Select(select) => stack.push(*select.operand),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

fn entry_into(entry: cel::common::ast::IdedEntryExpr) -> Vec<IdedExpr> {
    match entry.expr {
        EntryExpr::MapEntry(m) => vec![m.key, m.value],
        EntryExpr::StructField(f) => vec![f.value],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> IdedExpr {
        on_large_stack(|| cel::Env::stdlib().parser().parse(text).unwrap())
    }

    #[test]
    fn chains_are_as_deep_as_they_are_long_but_conjunctions_are_balanced() {
        let chain = parse(&vec!["1"; 100].join(" + "));
        assert_eq!(shape(&chain).nodes, 199);
        assert!(shape(&chain).depth >= 100);
        drop_flat(chain);
        let conjunction = parse(&vec!["action == 'x'"; 100].join(" && "));
        assert!(shape(&conjunction).depth < 12, "{:?}", shape(&conjunction));
    }

    #[test]
    fn a_very_deep_tree_is_measured_and_dropped_without_recursion() {
        // Deeper than any thread's stack could walk recursively in a debug build.
        let mut e = IdedExpr::default();
        for _ in 0..200_000 {
            e = IdedExpr {
                id: 0,
                expr: Expr::Select(cel::common::ast::SelectExpr {
                    operand: Box::new(e),
                    field: "f".into(),
                    test: false,
                }),
            };
        }
        assert_eq!(shape(&e).depth, 200_001);
        drop_flat(e);
    }
}
