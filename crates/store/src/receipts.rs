//! Execution receipts (SPEC §8): one per evaluation, kept beside it and audited.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row;

use crate::{
    Actor, EventKind, NewAuditEvent, Receipt, Result, Store, StoreError, Tenant, from_micros,
    micros,
};

impl Store {
    /// The evaluation's receipt, if one was reported.
    pub async fn receipt(&self, tenant: &Tenant, evaluation_id: &str) -> Result<Option<Receipt>> {
        let row = sqlx::query(
            "SELECT outcome, proposal_hash, detail, conforms, problems, actor, at FROM receipts \
             WHERE evaluation_id = $1 AND workspace_id = $2",
        )
        .bind(evaluation_id)
        .bind(tenant.workspace_id())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let json = |column: &str| -> Result<serde_json::Value> {
            let text: String = row.try_get(column)?;
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
        };
        Ok(Some(Receipt {
            outcome: row.try_get("outcome")?,
            proposal_hash: row.try_get("proposal_hash")?,
            detail: json("detail")?,
            conforms: row.try_get::<i64, _>("conforms")? != 0,
            problems: serde_json::from_value(json("problems")?)
                .map_err(|e| StoreError::Corrupt(format!("problems: {e}")))?,
            actor: row.try_get("actor")?,
            at: from_micros(row.try_get("at")?),
        }))
    }

    /// Records the receipt of an evaluation of this workspace, with its audit event; a second
    /// one for the same evaluation is [`StoreError::Conflict`].
    pub async fn record_receipt(
        &self,
        tenant: &Tenant,
        evaluation_id: &str,
        receipt: &Receipt,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.audited(tenant, async |tx, chain| {
            let inserted = sqlx::query(
                "INSERT INTO receipts (evaluation_id, workspace_id, outcome, proposal_hash, \
                 detail, conforms, problems, actor, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(evaluation_id)
            .bind(tenant.workspace_id())
            .bind(&receipt.outcome)
            .bind(&receipt.proposal_hash)
            .bind(receipt.detail.to_string())
            .bind(i64::from(receipt.conforms))
            .bind(serde_json::to_string(&receipt.problems).expect("strings serialize"))
            .bind(&receipt.actor)
            .bind(micros(now))
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                return Err(if StoreError::is_unique_violation(&e) {
                    StoreError::Conflict(
                        "the evaluation has a receipt already: one receipt per evaluation".into(),
                    )
                } else {
                    e.into()
                });
            }
            chain.append(&NewAuditEvent {
                kind: EventKind::ReceiptRecorded,
                actor: actor.clone(),
                evaluation_id: Some(evaluation_id.to_owned()),
                data: json!({
                    "outcome": receipt.outcome,
                    "proposal_hash": receipt.proposal_hash,
                    "conforms": receipt.conforms,
                    "problems": receipt.problems,
                }),
                occurred_at: now,
            });
            Ok(())
        })
        .await
    }
}
