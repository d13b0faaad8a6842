//! The cost budget of a decision (SPEC §3.1): no expression, however written, may hold a
//! request thread for more than a few milliseconds.
//!
//! The `cel` crate has no cost accounting of its own (cel-go has one; the Rust interpreter
//! has no hook into its loops), so compiled expressions are instrumented instead: the syntax
//! tree gets calls to functions of ours, registered in the CEL environment under names no
//! source can spell (`@anx_…`), at the two places cost can grow without bound:
//!
//! - every comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) pays, on each
//!   iteration, one unit per node of its body ([`TICK`]);
//! - operands whose cost grows with their size (`==`/`!=` between two computed values, `+`,
//!   `in` over a computed list, `contains`, `matches`) pay one unit per element and per
//!   [`BYTES_PER_UNIT`] bytes before the operation runs ([`SIZE`]); `matches` runs through
//!   our own function ([`MATCHES`]), which compiles patterns with a size limit and keeps the
//!   compiled ones.
//!
//! The units are deterministic: the same proposal under the same policies always costs the
//! same, so `policy test`, simulation and the server agree. A wall-clock deadline backs them
//! up for bodies whose every iteration is expensive; it is read every [`CLOCK_EVERY`] charges.
//!
//! Operations whose cost is bounded by a literal (`action == "x"`, `x in ["a", "b"]`,
//! `resource.startsWith("c/")`) are left as they are, so the common policy pays nothing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, operators};
use cel::common::types::{CelBool, CelInt, CelString, DYN_TYPE, STRING_TYPE};
use cel::common::value::{BuiltinRef, CowVal, Val};
use cel::{Env, ExecutionError};

/// Units a decision may spend: a few milliseconds of CEL (docs/performance.md measures it).
/// A policy iterating over a few hundred items uses a few thousand.
pub const DECISION_BUDGET: u64 = 100_000;

/// Wall-clock time a decision's expressions may take, whatever their units say.
pub const DECISION_DEADLINE: Duration = Duration::from_millis(20);

/// A string or bytes value costs one unit per this many bytes.
pub const BYTES_PER_UNIT: usize = 16;

/// The most bytes of compiled program a `matches` pattern may become.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Compiled patterns kept per thread.
const REGEX_CACHE: usize = 64;

/// How many charges pass between two readings of the clock.
const CLOCK_EVERY: u32 = 16;

/// `@anx_tick(value, weight)`: a loop iteration; answers `value`.
pub(crate) const TICK: &str = "@anx_tick";
/// `@anx_size(value)`: an operand about to be used whole; answers it.
pub(crate) const SIZE: &str = "@anx_size";
/// `@anx_matches(text, pattern)`: `text.matches(pattern)`, metered.
pub(crate) const MATCHES: &str = "@anx_matches";

/// What is left of the running decision's budget, on this thread. The deadline is set by the
/// first charge, not when the decision starts: a decision whose expressions charge nothing (the
/// common case) never reads the clock, and what runs before the first charge is bounded by the
/// expression limits.
struct Meter {
    units: Cell<u64>,
    deadline: Cell<Option<Instant>>,
    since_clock: Cell<u32>,
}

thread_local! {
    static METER: Meter = const {
        Meter {
            units: Cell::new(DECISION_BUDGET),
            deadline: Cell::new(None),
            since_clock: Cell::new(0),
        }
    };
    static REGEXES: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

/// A decision's budget, in force on this thread until dropped.
pub(crate) struct Budget(());

impl Budget {
    pub(crate) fn start() -> Budget {
        METER.with(|m| {
            m.units.set(DECISION_BUDGET);
            m.deadline.set(None);
            m.since_clock.set(0);
        });
        Budget(())
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        METER.with(|m| m.units.set(DECISION_BUDGET));
    }
}

/// The message an expression fails with when the budget runs out.
pub const BUDGET_SPENT: &str = "the decision's cost budget is spent";

fn spent(why: &str) -> ExecutionError {
    METER.with(|m| m.units.set(0));
    ExecutionError::function_error("cost", format!("{BUDGET_SPENT} ({why})"))
}

/// Pays `units`, or fails once the budget or the deadline is past.
fn charge(units: u64) -> Result<(), ExecutionError> {
    METER.with(|m| {
        let left = m.units.get();
        if units > left {
            return Err(spent("too much work"));
        }
        m.units.set(left - units);
        let n = m.since_clock.get();
        if n == 0 {
            let now = Instant::now();
            match m.deadline.get() {
                None => m.deadline.set(Some(now + DECISION_DEADLINE)),
                Some(d) if now > d => return Err(spent("too much time")),
                Some(_) => {}
            }
        }
        m.since_clock.set((n + 1) % CLOCK_EVERY);
        Ok(())
    })
}

fn remaining() -> u64 {
    METER.with(|m| m.units.get())
}

/// The units a value costs to use whole: one per element or entry, one per
/// [`BYTES_PER_UNIT`] bytes of text. Counting stops once past `cap`.
fn size_of(v: &dyn Val, cap: u64) -> u64 {
    let mut units = 0u64;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        units += 1;
        match v.as_builtin() {
            BuiltinRef::String(s) => units += (s.inner().len() / BYTES_PER_UNIT) as u64,
            BuiltinRef::Bytes(b) => units += (b.inner().len() / BYTES_PER_UNIT) as u64,
            BuiltinRef::List(l) => stack.extend(l.inner().iter().map(|e| &**e)),
            BuiltinRef::Map(m) => stack.extend(m.inner().values().map(|e| &**e)),
            _ => {}
        }
        if units > cap {
            break;
        }
    }
    units
}

fn tick<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let weight = args
        .get(1)
        .and_then(|w| w.downcast_ref::<CelInt>())
        .map_or(1, |w| u64::try_from(*w.inner()).unwrap_or(1));
    charge(weight)?;
    Ok(args.swap_remove(0))
}

fn size<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let value = args.swap_remove(0);
    charge(size_of(value.as_ref(), remaining()))?;
    Ok(value)
}

fn matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = |i: usize| {
        args.get(i)
            .and_then(|a| a.downcast_ref::<CelString>())
            .map(|s| s.inner())
            .ok_or_else(|| ExecutionError::function_error("matches", "takes two strings"))
    };
    let (subject, pattern) = (text(0)?, text(1)?);
    // Compiling is linear in the pattern, matching in pattern and subject together.
    charge(((subject.len() + pattern.len()) / BYTES_PER_UNIT) as u64 + 1)?;
    let hit = REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(pattern) {
            return Ok(re.is_match(subject));
        }
        charge((pattern.len() * 4) as u64)?;
        let re = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| ExecutionError::function_error("matches", regex_error(&e)))?;
        let hit = re.is_match(subject);
        if cache.len() >= REGEX_CACHE {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re);
        Ok(hit)
    })?;
    Ok(CowVal::owned(CelBool::from(hit)))
}

fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => "the pattern is too large".to_owned(),
        other => {
            let text = other.to_string();
            // The crate's message quotes the whole pattern; keep the gist.
            text.lines()
                .last()
                .unwrap_or("not a valid pattern")
                .to_owned()
        }
    }
}

/// Registers the metering functions in `env`.
pub(crate) fn register(env: &mut Env) {
    env.add_overload(TICK, "anx_tick", vec![DYN_TYPE, DYN_TYPE], tick)
        .expect("a new function");
    env.add_overload(SIZE, "anx_size", vec![DYN_TYPE], size)
        .expect("a new function");
    env.add_overload(
        MATCHES,
        "anx_matches",
        vec![STRING_TYPE, STRING_TYPE],
        matches,
    )
    .expect("a new function");
}

/// Instruments an expression as the module comment describes. Recursion here is bounded by
/// the depth limit, which the caller has checked.
pub(crate) fn instrument(expr: &mut IdedExpr) {
    for child in children_mut(expr) {
        instrument(child);
    }
    match &mut expr.expr {
        Expr::Comprehension(c) => {
            let weight =
                crate::limits::shape(&c.loop_cond).nodes + crate::limits::shape(&c.loop_step).nodes;
            let ticked = |e: &mut IdedExpr| {
                let inner = std::mem::take(e);
                *e = call(TICK, vec![inner, int(weight as i64)]);
            };
            // Keep the shapes the interpreter recognises (`@result && x`, `@result + [x]`,
            // `c ? @result + [x] : @result`), which it runs without copying the result on every
            // iteration: the tick goes inside them.
            if matches!(c.loop_cond.expr, Expr::Literal(_)) {
                match &mut c.loop_step.expr {
                    Expr::Call(step) if step.func_name == operators::ADD => {
                        match step.args.get_mut(1).map(|a| &mut a.expr) {
                            Some(Expr::List(list)) if list.elements.len() == 1 => {
                                ticked(&mut list.elements[0])
                            }
                            _ => ticked(&mut c.loop_step),
                        }
                    }
                    Expr::Call(step)
                        if step.func_name == operators::CONDITIONAL && step.args.len() == 3 =>
                    {
                        ticked(&mut step.args[0])
                    }
                    _ => ticked(&mut c.loop_step),
                }
            } else {
                ticked(&mut c.loop_cond);
            }
        }
        Expr::Call(call) => {
            let sized = |e: &mut IdedExpr| {
                if !constant(e) {
                    let inner = std::mem::take(e);
                    *e = self::call(SIZE, vec![inner]);
                }
            };
            match (
                call.func_name.as_str(),
                call.target.is_some(),
                call.args.len(),
            ) {
                (operators::EQUALS | operators::NOT_EQUALS, false, 2)
                    if !call.args.iter().any(constant) =>
                {
                    call.args.iter_mut().for_each(sized)
                }
                (operators::ADD, false, 2) => call.args.iter_mut().for_each(sized),
                (operators::IN, false, 2) => sized(&mut call.args[1]),
                ("contains", true, 1) => {
                    if let Some(t) = call.target.as_deref_mut() {
                        sized(t)
                    }
                }
                ("matches", true, 1) => {
                    let target = call.target.take().map(|t| *t).unwrap_or_default();
                    let pattern = call.args.pop().unwrap_or_default();
                    *call = CallExpr {
                        func_name: MATCHES.into(),
                        target: None,
                        args: vec![target, pattern],
                    };
                }
                ("matches", false, 2) => call.func_name = MATCHES.into(),
                _ => {}
            }
        }
        _ => {}
    }
}

/// A literal, or a list or map of literals: its size is bounded by the expression's own.
fn constant(e: &IdedExpr) -> bool {
    use cel::common::ast::EntryExpr;
    match &e.expr {
        Expr::Literal(_) => true,
        Expr::List(list) => list.elements.iter().all(constant),
        Expr::Map(map) => map.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(m) => constant(&m.key) && constant(&m.value),
            EntryExpr::StructField(_) => false,
        }),
        _ => false,
    }
}

fn entry_mut(entry: &mut cel::common::ast::IdedEntryExpr) -> Vec<&mut IdedExpr> {
    use cel::common::ast::EntryExpr;
    match &mut entry.expr {
        EntryExpr::MapEntry(m) => vec![&mut m.key, &mut m.value],
        EntryExpr::StructField(f) => vec![&mut f.value],
    }
}

fn children_mut(e: &mut IdedExpr) -> Vec<&mut IdedExpr> {
    match &mut e.expr {
        Expr::Call(call) => call
            .target
            .iter_mut()
            .map(|t| &mut **t)
            .chain(call.args.iter_mut())
            .collect(),
        Expr::Comprehension(c) => vec![
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ],
        Expr::List(list) => list.elements.iter_mut().collect(),
        Expr::Map(map) => map.entries.iter_mut().flat_map(entry_mut).collect(),
        Expr::Struct(st) => st.entries.iter_mut().flat_map(entry_mut).collect(),
        Expr::Select(select) => vec![&mut *select.operand],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn call(name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    IdedExpr {
        id: 0,
        expr: Expr::Call(CallExpr {
            func_name: name.to_owned(),
            target: None,
            args,
        }),
    }
}

fn int(i: i64) -> IdedExpr {
    IdedExpr {
        id: 0,
        expr: Expr::Literal(LiteralValue::Int(CelInt::from(i))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_backs_up_the_units() {
        let _budget = Budget::start();
        charge(1).unwrap();
        std::thread::sleep(DECISION_DEADLINE + Duration::from_millis(5));
        // Units are left, but the clock is read again within CLOCK_EVERY charges.
        let spent = (0..CLOCK_EVERY).find_map(|_| charge(1).err());
        let message = spent.expect("the deadline ends the decision").to_string();
        assert!(message.contains("too much time"), "{message}");
        assert!(charge(1).is_err(), "and everything after it");
    }

    #[test]
    fn a_new_decision_starts_with_a_full_budget() {
        {
            let _budget = Budget::start();
            assert!(charge(DECISION_BUDGET + 1).is_err());
        }
        let _budget = Budget::start();
        charge(DECISION_BUDGET).unwrap();
        assert!(charge(1).is_err());
    }
}
