//! The AgentNexus decision engine: policy documents, CEL compilation, decisions and the
//! canonical hashes that make them verifiable. Pure: no I/O, no randomness, and no clock but
//! the monotonic deadline backing a decision's cost budget (`meter`).
#![forbid(unsafe_code)]

pub mod approval;
pub mod canonical;
mod decide;
mod document;
mod limits;
mod meter;
mod proposal;
pub mod testing;
mod value;

pub use decide::{
    ApprovalDecision, CompiledPolicy, CompiledRule, Decision, MatchedRule, PolicySet, RuleError,
    compile_document, compile_policy,
};
pub use document::{
    Approval, Channel, Effect, Format, Invalid, OnTimeout, PolicyDocument, Position, Problem, Rule,
    Stage, Tier, Timeout, locate_rule, valid_policy_name,
};
pub use limits::{
    MAX_DOCUMENT_BYTES, MAX_EXPRESSION_BYTES, MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_NODES,
    MAX_TIMEOUT_SECS,
};
pub use meter::{BUDGET_SPENT, BYTES_PER_UNIT, DECISION_BUDGET, DECISION_DEADLINE};
pub use proposal::{FieldError, MAX_CENTS, Proposal, ProposalFields, Spend, whole_number};
