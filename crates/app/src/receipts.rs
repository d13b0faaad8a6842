//! Execution receipts (SPEC §8): after acting on an evaluation, the executing system reports
//! what it did, with the proposal hash of what it ran. A receipt conforms when nothing was
//! executed without being decided (`allowed` or `approved`) and the hash is the evaluation's:
//! a nonconforming receipt is the most important thing an auditor can find.

use agentnexus_store::{Receipt, Status};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::types::EvaluationId;
use crate::{App, Caller};

/// The largest `detail` accepted, as compact JSON.
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;

/// What the executing system reports.
pub struct ReceiptInput {
    /// `executed`, `failed` or `skipped`.
    pub outcome: String,
    pub proposal_hash: Option<String>,
    /// An object (default `{}`).
    pub detail: Option<Value>,
}

const OUTCOMES: [&str; 3] = ["executed", "failed", "skipped"];

impl App {
    /// Records the evaluation's receipt (one per evaluation: a second is a conflict) and
    /// answers the evaluation carrying it. Conformance is judged against the evaluation as it
    /// is when the receipt arrives.
    pub async fn report_receipt(
        &self,
        caller: &Caller,
        id: &EvaluationId,
        input: ReceiptInput,
    ) -> Result<agentnexus_store::Evaluation> {
        if !OUTCOMES.contains(&input.outcome.as_str()) {
            return Err(Error::field(
                "outcome",
                "must be executed, failed or skipped",
            ));
        }
        if let Some(hash) = &input.proposal_hash
            && !(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Error::field(
                "proposal_hash",
                "must be the 64 hex characters of a SHA-256",
            ));
        }
        let detail = input
            .detail
            .unwrap_or_else(|| Value::Object(Default::default()));
        if !detail.is_object() {
            return Err(Error::field("detail", "must be an object"));
        }
        if detail.to_string().len() > MAX_DETAIL_BYTES {
            return Err(Error::field("detail", "must be at most 16 KiB of JSON"));
        }
        let ev = self.read_evaluation(caller, id).await?;
        let mut problems = Vec::new();
        let decided = matches!(ev.status, Status::Allowed | Status::Approved);
        if input.outcome == "executed" && !decided {
            problems.push(format!(
                "executed while the evaluation is {}",
                ev.status.as_str()
            ));
        }
        match &input.proposal_hash {
            Some(hash) if !hash.eq_ignore_ascii_case(&ev.proposal_hash) => problems.push(
                "the proposal hash differs from the evaluation's: what ran is not what was decided"
                    .into(),
            ),
            None if input.outcome == "executed" => {
                problems.push("executed without a proposal hash to compare".into())
            }
            _ => {}
        }
        let receipt = Receipt {
            outcome: input.outcome,
            proposal_hash: input.proposal_hash.map(|h| h.to_ascii_lowercase()),
            detail,
            conforms: problems.is_empty(),
            problems,
            actor: caller.actor().label(),
            at: self.now(),
        };
        self.store
            .record_receipt(
                caller.tenant(),
                id.as_str(),
                &receipt,
                caller.actor(),
                receipt.at,
            )
            .await?;
        self.read_evaluation(caller, id).await
    }
}
