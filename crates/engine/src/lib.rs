//! The AgentNexus decision engine: policy documents, CEL compilation, decisions and the
//! canonical hashes that make them verifiable. Pure: no I/O, no clock, no randomness.
#![forbid(unsafe_code)]

pub mod canonical;
mod decide;
mod document;
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
pub use proposal::{FieldError, MAX_CENTS, Proposal, ProposalFields, Spend};
