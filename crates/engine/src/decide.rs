//! Compiled policies and the decision of SPEC §3.2.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};
use cel::{Context, Env, Value};
use serde::Serialize;

use crate::document::{
    Approval, Effect, Format, Invalid, PolicyDocument, Position, Problem, Tier, locate_expression,
};
use crate::limits::{
    MAX_EXPRESSION_BYTES, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES, drop_flat, on_large_stack,
    shape,
};
use crate::meter::{self, Budget};
use crate::proposal::{Proposal, Spend};

/// The standard CEL environment with the cost meter's functions, built once: every expression
/// is compiled and run with it.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    meter::register(&mut env);
    Arc::new(env)
});

/// The longest a run-time error message is kept: the interpreter's messages can quote whole
/// values, which come from the request.
const MAX_ERROR_CHARS: usize = 300;

/// The variables a `when` expression may use (SPEC §3.1).
const VARIABLES: [&str; 8] = [
    "agent_id",
    "action",
    "resource",
    "amount_cents",
    "cost_cents",
    "params",
    "context",
    "spend",
];

#[derive(Debug)]
pub struct CompiledRule {
    pub id: String,
    pub effect: Effect,
    pub tier: Option<Tier>,
    pub reason: Option<String>,
    pub approval: Option<Approval>,
    /// The `when` expression, checked against the limits and instrumented for the cost
    /// budget (`meter`).
    expression: Option<IdedExpr>,
    /// Which of [`VARIABLES`] the expression reads, one bit each: a decision puts only those
    /// its candidate rules read into the CEL context (converting `params` or `context` into CEL
    /// values, and every variable's insertion and drop, were most of a decision's cost).
    reads: u8,
}

/// A policy whose expressions all compiled; only these are ever stored or evaluated.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub document: PolicyDocument,
    pub version: i64,
    rules: Vec<CompiledRule>,
    uses_spend: bool,
}

impl CompiledPolicy {
    pub fn name(&self) -> &str {
        &self.document.name
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }
}

/// Parses and compiles a document; every problem found is reported at once.
pub fn compile_policy(text: &str, format: Format) -> Result<CompiledPolicy, Invalid> {
    // Parsing (YAML and CEL) recurses as deep as its input goes: on a stack of its own.
    on_large_stack(|| {
        let document = PolicyDocument::parse(text, format)?;
        compile_parsed(document, Some(text))
    })
}

/// Compiles an already parsed document. With the source `text`, positions of expression
/// errors are given in the document; without it, inside the expression.
pub fn compile_document(
    document: PolicyDocument,
    text: Option<&str>,
) -> Result<CompiledPolicy, Invalid> {
    on_large_stack(|| compile_parsed(document, text))
}

/// Why an expression was refused, with the line and column inside it where known.
type ExpressionProblems = Vec<(Option<(usize, usize)>, String)>;

/// Parses one `when` expression within the limits: too long, too deep or too large is a
/// problem at the rule, never a deep tree handed on.
fn parse_expression(when: &str) -> Result<IdedExpr, ExpressionProblems> {
    if when.len() > MAX_EXPRESSION_BYTES {
        return Err(vec![(
            None,
            format!(
                "the expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are allowed",
                when.len()
            ),
        )]);
    }
    let expr = ENV.parser().parse(when).map_err(|errors| {
        errors
            .errors
            .into_iter()
            .map(|e| {
                let at = (e.pos.0.max(1) as usize, e.pos.1.max(0) as usize + 1);
                (Some(at), format!("does not compile: {}", e.msg))
            })
            .collect::<Vec<_>>()
    })?;
    let s = shape(&expr);
    if s.depth > MAX_EXPRESSION_DEPTH || s.nodes > MAX_EXPRESSION_NODES {
        drop_flat(expr);
        return Err(vec![(
            None,
            format!(
                "the expression is too complex: {} levels deep and {} terms (at most \
                 {MAX_EXPRESSION_DEPTH} levels and {MAX_EXPRESSION_NODES} terms); split it \
                 into several rules or use `in [...]` for long lists of alternatives",
                s.depth, s.nodes
            ),
        )]);
    }
    Ok(expr)
}

fn compile_parsed(document: PolicyDocument, text: Option<&str>) -> Result<CompiledPolicy, Invalid> {
    let mut problems = Vec::new();
    let mut rules = Vec::with_capacity(document.rules.len());
    let mut uses_spend = false;
    for rule in &document.rules {
        let mut reads = 0u8;
        let expression = match rule.when.as_deref() {
            None => None,
            Some(when) => match parse_expression(when) {
                Ok(mut expr) => {
                    let refs = expr.references();
                    uses_spend |= refs.has_variable("spend");
                    let mut bound = Vec::new();
                    comprehension_variables(&expr, &mut bound);
                    for var in refs.variables() {
                        if let Some(i) = VARIABLES.iter().position(|v| *v == var) {
                            reads |= 1 << i;
                        }
                        if !VARIABLES.contains(&var) && !bound.iter().any(|b| b == var) {
                            problems.push(Problem {
                                rule: Some(rule.id.clone()),
                                field: Some("when".into()),
                                position: text.and_then(|t| locate_expression(t, &rule.id, when)),
                                message: format!(
                                    "unknown variable `{var}`; known: {}",
                                    VARIABLES.join(", ")
                                ),
                            });
                        }
                    }
                    meter::instrument(&mut expr);
                    Some(expr)
                }
                Err(errors) => {
                    let at = text.and_then(|t| locate_expression(t, &rule.id, when));
                    for (pos, message) in errors {
                        let position = match (pos, at) {
                            (Some((1, col)), Some(at)) => Some(Position {
                                line: at.line,
                                column: at.column + col - 1,
                            }),
                            (Some((line, col)), Some(at)) => Some(Position {
                                line: at.line + line - 1,
                                column: col,
                            }),
                            (Some((line, column)), None) => Some(Position { line, column }),
                            (None, at) => at,
                        };
                        problems.push(Problem {
                            rule: Some(rule.id.clone()),
                            field: Some("when".into()),
                            position,
                            message,
                        });
                    }
                    None
                }
            },
        };
        rules.push(CompiledRule {
            id: rule.id.clone(),
            effect: rule.effect,
            tier: rule.tier,
            reason: rule.reason.clone(),
            approval: rule.approval.clone(),
            expression,
            reads,
        });
    }
    if !problems.is_empty() {
        return Err(Invalid(problems));
    }
    Ok(CompiledPolicy {
        document,
        version: 0,
        rules,
        uses_spend,
    })
}

/// Names bound inside an expression by macros such as `exists(i, …)` or `map(x, …)`: they
/// are not free variables, so they are not checked against [`VARIABLES`].
fn comprehension_variables(expr: &IdedExpr, out: &mut Vec<String>) {
    match &expr.expr {
        Expr::Comprehension(c) => {
            out.push(c.iter_var.clone());
            out.extend(c.iter_var2.clone());
            out.push(c.accu_var.clone());
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                comprehension_variables(e, out);
            }
        }
        Expr::Call(call) => {
            call.target
                .iter()
                .for_each(|t| comprehension_variables(t, out));
            call.args
                .iter()
                .for_each(|a| comprehension_variables(a, out));
        }
        Expr::List(list) => list
            .elements
            .iter()
            .for_each(|e| comprehension_variables(e, out)),
        Expr::Map(map) => {
            for entry in &map.entries {
                match &entry.expr {
                    cel::common::ast::EntryExpr::MapEntry(m) => {
                        comprehension_variables(&m.key, out);
                        comprehension_variables(&m.value, out);
                    }
                    cel::common::ast::EntryExpr::StructField(f) => {
                        comprehension_variables(&f.value, out)
                    }
                }
            }
        }
        Expr::Select(select) => comprehension_variables(&select.operand, out),
        Expr::Struct(st) => {
            for entry in &st.entries {
                if let cel::common::ast::EntryExpr::StructField(f) = &entry.expr {
                    comprehension_variables(&f.value, out);
                }
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RuleRef {
    policy: u32,
    rule: u32,
}

/// The enabled policies of a workspace, ready to decide. Rules are indexed by the action
/// literals their `when` pins down (`action == "x" && …`, `action in ["x", "y"]`), so a
/// decision only runs the expressions that can match its action.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<Arc<CompiledPolicy>>,
    by_action: HashMap<String, Vec<RuleRef>>,
    any_action: Vec<RuleRef>,
    uses_spend: bool,
}

impl PolicySet {
    /// Builds the set from compiled policies; disabled ones are left out.
    pub fn new(policies: impl IntoIterator<Item = Arc<CompiledPolicy>>) -> PolicySet {
        let mut policies: Vec<_> = policies
            .into_iter()
            .filter(|p| p.document.enabled)
            .collect();
        policies.sort_by(|a, b| a.name().cmp(b.name()));
        let mut set = PolicySet {
            uses_spend: policies.iter().any(|p| p.uses_spend),
            ..PolicySet::default()
        };
        for (pi, policy) in policies.iter().enumerate() {
            for (ri, rule) in policy.rules.iter().enumerate() {
                let r = RuleRef {
                    policy: pi as u32,
                    rule: ri as u32,
                };
                match rule.expression.as_ref().and_then(pinned_actions) {
                    Some(actions) => {
                        for a in actions {
                            set.by_action.entry(a).or_default().push(r);
                        }
                    }
                    None => set.any_action.push(r),
                }
            }
        }
        set.policies = policies;
        set
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether any expression reads `spend`, so callers only look spend up when it matters.
    pub fn uses_spend(&self) -> bool {
        self.uses_spend
    }

    pub fn policies(&self) -> &[Arc<CompiledPolicy>] {
        &self.policies
    }

    /// Decides a proposal: SPEC §3.2.
    pub fn decide(&self, proposal: &Proposal, spend: Spend) -> Decision {
        let mut candidates: Vec<RuleRef> = self.any_action.clone();
        if let Some(pinned) = self.by_action.get(proposal.action.as_str()) {
            candidates.extend_from_slice(pinned);
            candidates.sort_unstable();
            candidates.dedup();
        }
        let ctx = if candidates
            .iter()
            .any(|r| self.rule(*r).expression.is_some())
        {
            let reads = candidates.iter().fold(0, |m, r| m | self.rule(*r).reads);
            Some(cel_context(proposal, spend, reads))
        } else {
            None
        };

        let mut matched = Vec::new();
        let mut errors = Vec::new();
        let mut winner: Option<(RuleRef, Effect, Tier)> = None;
        let _budget = ctx.as_ref().map(|_| Budget::start());
        for r in candidates {
            let policy = &self.policies[r.policy as usize];
            let rule = &policy.rules[r.rule as usize];
            let outcome = match (&rule.expression, &ctx) {
                (Some(e), Some(ctx)) => match Value::resolve(e, ctx) {
                    Ok(Value::Bool(b)) => Ok(b),
                    Ok(other) => Err(format!(
                        "`when` must be a bool, it evaluated to {:?}",
                        other.type_of()
                    )),
                    Err(e) => Err(truncate(e.to_string())),
                },
                _ => Ok(true),
            };
            let is_match = match outcome {
                Ok(b) => b,
                Err(message) => {
                    // Fail closed: an erroring deny or approval rule still holds the agent back;
                    // an erroring allow rule never lets it through.
                    errors.push(RuleError {
                        policy: policy.name().to_owned(),
                        rule: rule.id.clone(),
                        message,
                    });
                    rule.effect != Effect::Allow
                }
            };
            if !is_match {
                continue;
            }
            matched.push(MatchedRule {
                policy: policy.name().to_owned(),
                rule: rule.id.clone(),
                effect: rule.effect,
            });
            let tier = rule.tier.unwrap_or(Tier::Medium);
            // Candidates come in (policy name, rule order), so on a tie the earlier one stays.
            let better = match winner {
                None => true,
                Some((_, effect, best_tier)) => {
                    rule.effect > effect
                        || (rule.effect == effect
                            && effect == Effect::RequireApproval
                            && tier > best_tier)
                }
            };
            if better {
                winner = Some((r, rule.effect, tier));
            }
        }

        let policy_versions = self
            .policies
            .iter()
            .map(|p| (p.name().to_owned(), p.version))
            .collect();
        let Some((r, effect, tier)) = winner else {
            return Decision {
                effect: Effect::Deny,
                reason: "no matching rule".into(),
                matched_rules: matched,
                errors,
                approval: None,
                policy_versions,
            };
        };
        let policy = &self.policies[r.policy as usize];
        let rule = &policy.rules[r.rule as usize];
        Decision {
            effect,
            reason: rule.reason.clone().unwrap_or_else(|| {
                format!(
                    "{} by rule {}/{}",
                    effect.past_tense(),
                    policy.name(),
                    rule.id
                )
            }),
            matched_rules: matched,
            errors,
            approval: match (effect, &rule.approval) {
                (Effect::RequireApproval, Some(a)) => Some(ApprovalDecision {
                    tier,
                    policy: policy.name().to_owned(),
                    rule: rule.id.clone(),
                    approval: a.clone(),
                }),
                _ => None,
            },
            policy_versions,
        }
    }

    fn rule(&self, r: RuleRef) -> &CompiledRule {
        &self.policies[r.policy as usize].rules[r.rule as usize]
    }
}

impl Effect {
    fn past_tense(self) -> &'static str {
        match self {
            Effect::Allow => "allowed",
            Effect::RequireApproval => "approval required",
            Effect::Deny => "denied",
        }
    }
}

/// An error message cut to [`MAX_ERROR_CHARS`] characters.
fn truncate(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_ERROR_CHARS) {
        message.truncate(at);
        message.push('…');
    }
    message
}

/// The actions a `when` expression can only match, when it says so in a way we can read:
/// a top-level conjunction with `action == "x"` or `action in ["x", …]`.
fn pinned_actions(expr: &IdedExpr) -> Option<Vec<String>> {
    let Expr::Call(call) = &expr.expr else {
        return None;
    };
    let is_action = |e: &cel::IdedExpr| matches!(&e.expr, Expr::Ident(n) if n == "action");
    let literal = |e: &cel::IdedExpr| match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_owned()),
        _ => None,
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        (operators::LOGICAL_AND, [a, b]) => pinned_actions(a).or_else(|| pinned_actions(b)),
        (operators::EQUALS, [a, b]) if is_action(a) => literal(b).map(|s| vec![s]),
        (operators::EQUALS, [a, b]) if is_action(b) => literal(a).map(|s| vec![s]),
        (operators::IN, [a, b]) if is_action(a) => match &b.expr {
            Expr::List(list) => list.elements.iter().map(literal).collect(),
            _ => None,
        },
        _ => None,
    }
}

/// One context per decision, shared by every expression: building it is the expensive part.
/// The CEL context with the variables in `reads` (bits of [`VARIABLES`]).
fn cel_context(proposal: &Proposal, spend: Spend, reads: u8) -> Context<'_, '_> {
    use crate::value::{int, int_map, string, to_val};
    let mut ctx = Context::with_env(ENV.clone());
    for (i, name) in VARIABLES.iter().enumerate() {
        if reads & (1 << i) == 0 {
            continue;
        }
        let value = match *name {
            "agent_id" => string(&proposal.agent_id),
            "action" => string(&proposal.action),
            "resource" => match &proposal.resource {
                Some(r) => string(r),
                None => Box::new(cel::common::types::CelNull),
            },
            "amount_cents" => int(proposal.amount_cents),
            "cost_cents" => int(proposal.cost_cents),
            "params" => to_val(&proposal.params),
            "context" => to_val(&proposal.context),
            // spend
            _ => int_map(&[
                ("today_cents", spend.today_cents),
                ("month_cents", spend.month_cents),
            ]),
        };
        ctx.add_variable_as_val(*name, value);
    }
    ctx
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedRule {
    pub policy: String,
    pub rule: String,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleError {
    pub policy: String,
    pub rule: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalDecision {
    pub tier: Tier,
    pub policy: String,
    pub rule: String,
    pub approval: Approval,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub effect: Effect,
    pub reason: String,
    pub matched_rules: Vec<MatchedRule>,
    pub errors: Vec<RuleError>,
    pub approval: Option<ApprovalDecision>,
    pub policy_versions: BTreeMap<String, i64>,
}

impl CompiledPolicy {
    /// The same policy marked with its stored version number.
    pub fn with_version(mut self, version: i64) -> CompiledPolicy {
        self.version = version;
        self
    }
}
