//! The compliance evidence bundle (SPEC §8): a ZIP an auditor checks offline. Full populations
//! of the period as CSV (RFC 4180), the period's audit events with their hashes, a signed
//! checkpoint of the chain, a narrative and a control crosswalk, `SHA256SUMS` over every
//! file, and a DSSE envelope (in-toto Statement v1) signed with the server's Ed25519 key over
//! every file but itself and the sums; `verify.py` checks all of it with Python's standard
//! library alone.
//!
//! The ZIP is written as it is read from the store, a page at a time, into a channel the
//! response streams from: memory stays bounded whatever the period holds, and a client that
//! goes away stops the work. One bundle at a time per workspace.

use std::io::Write;
use std::sync::{Arc, Mutex};

use agentnexus_store::{AuditEvent, EvaluationFilter, EventKind, Verification};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

use crate::analytics::{CostsInput, period};
use crate::error::{Error, Result};
use crate::{App, Reader};

/// The verifier shipped in every bundle.
const VERIFY_PY: &str = include_str!("evidence/verify.py");
/// The control crosswalk, the same in every bundle.
const CONTROL_MAPPING: &str = include_str!("evidence/control_mapping.csv");
/// Evaluations and audit events read per page.
const PAGE: u32 = 500;
/// The in-toto predicate type of the attestation.
const PREDICATE_TYPE: &str = "https://agentnexus.dev/evidence-bundle/v1";

/// The bundle's bytes as they are made; an error ends it (the ZIP is then incomplete, which
/// any reader notices: its central directory is missing).
pub type Chunks = mpsc::Receiver<std::io::Result<Vec<u8>>>;

impl App {
    /// Starts a bundle of the period (`from`/`to` as the analytics take them: RFC 3339,
    /// default the last 30 days, at most 400 days). Refusals (a bad period, a second bundle
    /// while one is made, no signing key) come before the first byte.
    pub async fn evidence(
        self: &Arc<Self>,
        reader: &Reader,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Chunks> {
        let (from, to) = period(from, to, self.now())?;
        // Whole milliseconds, the precision of evaluation ids: the evaluations listed and the
        // audit events exported then cover exactly the same creations.
        let (from, to) = (whole_ms(from), whole_ms(to));
        self.notary()?;
        let key = format!("evidence:{}", reader.tenant().workspace_id());
        self.limits.claim(
            key.clone(),
            "an evidence bundle of this workspace is already being made",
        )?;
        let claim = Claim {
            app: self.clone(),
            key,
        };
        // The chain verified and signed first: their results are in the bundle, and a
        // failure here is still an answer with a status.
        let prepared = async {
            let verification = self.verify_audit(reader).await?;
            let checkpoint = self.checkpoint(reader).await?;
            Ok::<_, Error>((verification, checkpoint))
        }
        .await;
        let (verification, checkpoint) = prepared?;
        let (tx, rx) = mpsc::channel(4);
        let reader = reader.clone();
        tokio::spawn(async move {
            let app = claim.app.clone();
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let mut bundle = Bundle {
                zip: Some(ZipWriter::new_stream(Sink(buffer.clone()))),
                buffer,
                tx: tx.clone(),
                files: Vec::new(),
                hashing: None,
            };
            let period = Period { from, to };
            let made = bundle
                .make(&app, &reader, &period, verification, checkpoint)
                .await;
            if let Err(e) = made {
                if !matches!(e, Error::Gone(_)) {
                    tracing::warn!(error = %e, "making an evidence bundle failed");
                }
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
            drop(claim);
        });
        Ok(rx)
    }
}

/// The workspace's claim on making a bundle, given up when the bundle is done.
struct Claim {
    app: Arc<App>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.app.limits.release(&self.key);
    }
}

struct Period {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

/// Where the ZIP writer writes: a buffer drained into the channel after each page.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Bundle {
    /// None once finished.
    zip: Option<ZipWriter<StreamWriter<Sink>>>,
    buffer: Arc<Mutex<Vec<u8>>>,
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    /// Every file written so far and its SHA-256.
    files: Vec<(String, String)>,
    /// The file being written and the hash of what it has so far.
    hashing: Option<(String, Sha256)>,
}

/// What the narrative says of the period's audit events.
#[derive(Default)]
struct Tally {
    events: i64,
    first_seq: Option<i64>,
    last_seq: Option<i64>,
    approvals: i64,
    receipts: i64,
    suspensions: i64,
    resumptions: i64,
    kill_switch_engaged: i64,
    kill_switch_released: i64,
    policy_changes: i64,
}

fn whole_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_default()
}

/// One CSV record, RFC 4180: fields quoted when they must be, CRLF at the end. A field a
/// spreadsheet would run as a formula (starting `=`, `+`, `-`, `@`, a tab or a carriage
/// return: an agent's reason or a member's name can be anything) is prefixed with `'`.
fn record<I, S>(fields: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u8]>,
{
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let fields = fields.into_iter().map(|f| {
        let f = f.as_ref();
        match f.first() {
            Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => [b"'", f].concat(),
            _ => f.to_vec(),
        }
    });
    w.write_record(fields).expect("writing to memory");
    w.into_inner().expect("writing to memory")
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("writing the evidence bundle: {e}"))
}

impl Bundle {
    fn zip(&mut self) -> Result<&mut ZipWriter<StreamWriter<Sink>>> {
        self.zip
            .as_mut()
            .ok_or_else(|| io("the bundle is finished"))
    }

    fn start(&mut self, name: &str) -> Result<()> {
        self.end()?;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .large_file(true);
        self.zip()?.start_file(name, options).map_err(io)?;
        self.hashing = Some((name.to_owned(), Sha256::new()));
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((_, hash)) = &mut self.hashing {
            hash.update(bytes);
        }
        self.zip()?.write_all(bytes).map_err(io)
    }

    fn end(&mut self) -> Result<()> {
        if let Some((name, hash)) = self.hashing.take() {
            self.files.push((
                name,
                agentnexus_engine::canonical::digest_hex(&hash.finalize().into()),
            ));
        }
        Ok(())
    }

    /// Sends what the writer has made so far; waits while the client is behind, and stops
    /// when it is gone.
    async fn flush(&mut self) -> Result<()> {
        let chunk = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        if !chunk.is_empty() && self.tx.send(Ok(chunk)).await.is_err() {
            return Err(Error::Gone("the client went away".into()));
        }
        Ok(())
    }

    async fn file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.start(name)?;
        self.write(bytes)?;
        self.end()?;
        self.flush().await
    }

    async fn make(
        &mut self,
        app: &App,
        reader: &Reader,
        period: &Period,
        verification: Verification,
        checkpoint: crate::notary::Checkpoint,
    ) -> Result<()> {
        let tenant = reader.tenant();
        let workspace = checkpoint.workspace.clone();
        let generated_at = time(app.now());
        self.file(
            "README.md",
            readme(&workspace, period, &generated_at).as_bytes(),
        )
        .await?;
        self.file(
            "control_mapping.csv",
            CONTROL_MAPPING.replace('\n', "\r\n").as_bytes(),
        )
        .await?;
        let evaluations = self.evaluations(app, reader, period).await?;

        // The period's audit events: from the first at or after `from` to the last before
        // `to`, no further than the checkpoint signed.
        let lo = app.store.audit_seq_at(tenant, period.from).await?;
        let hi = (app.store.audit_seq_at(tenant, period.to).await? - 1).min(checkpoint.seq);
        let mut tally = Tally::default();
        self.start("audit_events.jsonl")?;
        self.each_event(app, reader, (lo, hi), None, |bundle, e| {
            tally.count(e);
            let line = json!({
                "actor": e.actor, "data": e.data, "evaluation_id": e.evaluation_id,
                "hash": e.hash, "occurred_at": e.occurred_at, "prev_hash": e.prev_hash,
                "seq": e.seq, "type": e.kind, "workspace_id": e.workspace_id,
            });
            let mut text = agentnexus_engine::canonical::to_vec(&line);
            text.push(b'\n');
            bundle.write(&text)
        })
        .await?;

        self.start("approvals.csv")?;
        self.write(&record([
            "decided_at",
            "evaluation_id",
            "stage",
            "approver",
            "decision",
            "comment",
            "audit_seq",
        ]))?;
        let decided = Some(EventKind::ApprovalDecided);
        self.each_event(app, reader, (lo, hi), decided, |bundle, e| {
            let text = |k: &str| match &e.data[k] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            bundle.write(&record([
                e.occurred_at.clone(),
                e.evaluation_id.clone().unwrap_or_default(),
                text("stage"),
                text("approver"),
                text("decision"),
                text("comment"),
                e.seq.to_string(),
            ]))
        })
        .await?;

        self.start("receipts.csv")?;
        self.write(&record([
            "reported_at",
            "evaluation_id",
            "outcome",
            "proposal_hash",
            "conforms",
            "problems",
            "reported_by",
            "audit_seq",
        ]))?;
        let recorded = Some(EventKind::ReceiptRecorded);
        self.each_event(app, reader, (lo, hi), recorded, |bundle, e| {
            let problems: Vec<&str> = e.data["problems"]
                .as_array()
                .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            bundle.write(&record([
                e.occurred_at.clone(),
                e.evaluation_id.clone().unwrap_or_default(),
                e.data["outcome"].as_str().unwrap_or_default().to_owned(),
                e.data["proposal_hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e.data["conforms"].as_bool().unwrap_or(false).to_string(),
                problems.join("; "),
                e.actor.clone(),
                e.seq.to_string(),
            ]))
        })
        .await?;

        let in_force = self.policies(app, reader, period).await?;
        self.people(app, reader).await?;
        self.costs(app, reader, period).await?;

        let signed = serde_json::to_vec_pretty(&checkpoint).map_err(io)?;
        self.file("checkpoint.json", &signed).await?;
        let notary = app.notary()?;
        self.file("public_key.pem", notary.public().to_pem().as_bytes())
            .await?;
        self.file("verify.py", VERIFY_PY.as_bytes()).await?;
        let report = app
            .governance(
                reader,
                Some(&time(period.from)),
                Some(&time(period.to)),
                Some("day"),
            )
            .await?;
        let narrative = narrative(&Narrative {
            workspace: &workspace,
            period,
            generated_at: &generated_at,
            evaluations,
            in_force: &in_force,
            report: &report,
            tally: &tally,
            verification: &verification,
            checkpoint: &checkpoint,
        });
        self.file("narrative.md", narrative.as_bytes()).await?;

        // The attestation covers every file so far; the sums cover it too.
        let subjects: Vec<_> = self
            .files
            .iter()
            .map(|(name, sha)| json!({"name": name, "digest": {"sha256": sha}}))
            .collect();
        let statement = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subjects,
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "workspace": workspace,
                "from": time(period.from),
                "to": time(period.to),
                "generated_at": generated_at,
                "chain": {"seq": checkpoint.seq, "head_hash": checkpoint.head_hash},
            },
        });
        let payload = agentnexus_engine::canonical::to_vec(&statement);
        let envelope = notary.envelope("application/vnd.in-toto+json", &payload);
        let envelope = serde_json::to_vec_pretty(&envelope).map_err(io)?;
        self.file("attestation.json", &envelope).await?;
        let mut sums: Vec<_> = self.files.clone();
        sums.sort();
        let sums: String = sums
            .iter()
            .map(|(name, sha)| format!("{sha}  {name}\n"))
            .collect();
        self.file("SHA256SUMS", sums.as_bytes()).await?;
        self.zip
            .take()
            .ok_or_else(|| io("finished twice"))?
            .finish()
            .map_err(io)?;
        self.flush().await
    }

    /// `f` on every audit event with a seq from `lo` to `hi` (only those of `kind`, if
    /// given: the others are not read), a page at a time.
    async fn each_event(
        &mut self,
        app: &App,
        reader: &Reader,
        (lo, hi): (i64, i64),
        kind: Option<EventKind>,
        mut f: impl FnMut(&mut Bundle, &AuditEvent) -> Result<()>,
    ) -> Result<()> {
        let mut after = lo - 1;
        while after < hi {
            let tenant = reader.tenant();
            let page = match kind {
                Some(kind) => {
                    let store = &app.store;
                    store.audit_page_of(tenant, kind, after, hi, PAGE).await?
                }
                None => app.store.audit_page(tenant, after, PAGE).await?,
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            for e in page.iter().take_while(|e| e.seq <= hi) {
                f(self, e)?;
            }
            self.flush().await?;
            after = last;
        }
        self.end()
    }

    /// `evaluations.csv`: every evaluation created in the period, newest first. Answers how
    /// many.
    async fn evaluations(&mut self, app: &App, reader: &Reader, period: &Period) -> Result<i64> {
        self.start("evaluations.csv")?;
        self.write(&record([
            "id",
            "created_at",
            "agent_id",
            "action",
            "resource",
            "amount_cents",
            "cost_cents",
            "decision",
            "status",
            "reason",
            "matched_rules",
            "policy_versions",
            "proposal_hash",
            "key_id",
            "updated_at",
        ]))?;
        let since = crate::evaluations::id_at("from", &time(period.from))?;
        let mut before = Some(crate::evaluations::id_at("to", &time(period.to))?);
        let mut n = 0;
        loop {
            let filter = EvaluationFilter {
                before: before.take(),
                since: Some(since.clone()),
                limit: PAGE,
                ..EvaluationFilter::default()
            };
            let page = app
                .store
                .evaluations(reader.tenant(), &filter)
                .await?
                .evaluations;
            for ev in &page {
                n += 1;
                self.write(&record([
                    ev.id.clone(),
                    time(ev.created_at),
                    ev.agent_id.clone(),
                    ev.action.clone(),
                    ev.resource.clone().unwrap_or_default(),
                    ev.amount_cents.to_string(),
                    ev.cost_cents.to_string(),
                    ev.decision.as_str().to_owned(),
                    ev.status.as_str().to_owned(),
                    ev.reason.clone(),
                    ev.matched_rules.to_string(),
                    ev.policy_versions.to_string(),
                    ev.proposal_hash.clone(),
                    ev.key_id.clone().unwrap_or_default(),
                    time(ev.updated_at),
                ]))?;
            }
            self.flush().await?;
            match page.last() {
                Some(last) if page.len() == PAGE as usize => before = Some(last.id.clone()),
                _ => break,
            }
        }
        self.end()?;
        Ok(n)
    }

    /// `policy_versions.csv` (every version of every policy, with when it was in force) and
    /// `policies/NAME/vN.yaml` for each version in force during the period. Answers those,
    /// as `NAME vN`.
    async fn policies(
        &mut self,
        app: &App,
        reader: &Reader,
        period: &Period,
    ) -> Result<Vec<String>> {
        let mut rows = vec![record([
            "policy",
            "version",
            "created_at",
            "author",
            "source",
            "enabled",
            "format",
            "document_sha256",
            "in_force_from",
            "in_force_until",
            "in_force_during_period",
        ])];
        let mut documents = Vec::new();
        for policy in app.policies(reader).await? {
            let mut versions = app.policy_versions(reader, &policy.name).await?;
            versions.sort_by_key(|v| v.version);
            for (i, v) in versions.iter().enumerate() {
                // In force from its creation until the next version's.
                let until = versions.get(i + 1).map(|next| next.created_at);
                let during = v.created_at < period.to && until.is_none_or(|u| u > period.from);
                rows.push(record([
                    v.name.clone(),
                    v.version.to_string(),
                    time(v.created_at),
                    v.author.clone(),
                    v.source.clone(),
                    v.enabled.to_string(),
                    v.format.clone(),
                    agentnexus_engine::canonical::sha256_hex(v.document.as_bytes()),
                    time(v.created_at),
                    opt_time(until),
                    during.to_string(),
                ]));
                if during {
                    documents.push((v.name.clone(), v.version, v.document.clone()));
                }
            }
        }
        self.file("policy_versions.csv", &rows.concat()).await?;
        let mut in_force = Vec::new();
        for (name, version, document) in documents {
            self.file(
                &format!("policies/{name}/v{version}.yaml"),
                document.as_bytes(),
            )
            .await?;
            in_force.push(format!("{name} v{version}"));
        }
        Ok(in_force)
    }

    /// `members.csv`, `api_keys.csv` (no secrets) and `agents.csv`, as they stand.
    async fn people(&mut self, app: &App, reader: &Reader) -> Result<()> {
        let mut rows = vec![record(["id", "email", "name", "roles", "created_at"])];
        for m in app.members(reader).await? {
            rows.push(record([
                m.id,
                m.email,
                m.name.unwrap_or_default(),
                m.roles.join(";"),
                time(m.created_at),
            ]));
        }
        self.file("members.csv", &rows.concat()).await?;

        let mut rows = vec![record([
            "id",
            "name",
            "scope",
            "prefix",
            "created_at",
            "last_used_at",
            "revoked_at",
        ])];
        for k in app.keys(reader).await? {
            rows.push(record([
                k.id,
                k.name,
                k.scope.as_str().to_owned(),
                k.prefix,
                time(k.created_at),
                opt_time(k.last_used_at),
                opt_time(k.revoked_at),
            ]));
        }
        self.file("api_keys.csv", &rows.concat()).await?;

        let mut rows = vec![record([
            "agent_id",
            "status",
            "first_seen",
            "last_seen",
            "evaluations",
            "spend_today_cents",
            "spend_month_cents",
            "owner",
            "purpose",
            "model",
            "tools",
            "risk_tier",
            "stopped_because",
        ])];
        for a in app.agents(reader).await? {
            let r = a.record;
            rows.push(record([
                r.agent_id,
                if a.halted.is_some() {
                    "suspended"
                } else {
                    "active"
                }
                .to_owned(),
                opt_time(r.first_seen),
                opt_time(r.last_seen),
                r.evaluations.to_string(),
                r.spend.today_cents.to_string(),
                r.spend.month_cents.to_string(),
                r.profile.owner.unwrap_or_default(),
                r.profile.purpose.unwrap_or_default(),
                r.profile.model.unwrap_or_default(),
                r.profile.tools.join(";"),
                r.profile.risk_tier.unwrap_or_default(),
                a.halted.map(|h| h.halt.reason).unwrap_or_default(),
            ]));
        }
        self.file("agents.csv", &rows.concat()).await
    }

    /// `costs.csv`: the period's `cost_cents` by agent, by action and by UTC day.
    async fn costs(&mut self, app: &App, reader: &Reader, period: &Period) -> Result<()> {
        let mut rows = vec![record(["group_by", "key", "cost_cents", "evaluations"])];
        for group_by in ["agent_id", "action", "day"] {
            let costs = app
                .costs(
                    reader,
                    CostsInput {
                        from: Some(time(period.from)),
                        to: Some(time(period.to)),
                        group_by: Some(group_by.into()),
                        tz: None,
                    },
                )
                .await?;
            for line in costs.groups {
                rows.push(record([
                    group_by.to_owned(),
                    line.key,
                    line.cost_cents.to_string(),
                    line.evaluations.to_string(),
                ]));
            }
        }
        self.file("costs.csv", &rows.concat()).await
    }
}

impl Tally {
    fn count(&mut self, e: &AuditEvent) {
        self.events += 1;
        self.first_seq.get_or_insert(e.seq);
        self.last_seq = Some(e.seq);
        match e.kind.as_str() {
            "approval.decided" => self.approvals += 1,
            "receipt.recorded" => self.receipts += 1,
            "agent.suspended" => self.suspensions += 1,
            "agent.resumed" => self.resumptions += 1,
            "kill_switch.engaged" => self.kill_switch_engaged += 1,
            "kill_switch.released" => self.kill_switch_released += 1,
            "policy.changed" | "policy.disabled" | "policy.rolled_back" => self.policy_changes += 1,
            _ => {}
        }
    }
}

fn readme(workspace: &str, period: &Period, generated_at: &str) -> String {
    format!(
        "# AgentNexus compliance evidence: workspace `{workspace}`\n\n\
         Period: {from} (included) to {to} (excluded), UTC. Generated {generated_at}.\n\n\
         Full populations, not samples. Every CSV file is RFC 4180 (UTF-8, CRLF, a header row).\n\n\
         | File | What it is |\n|---|---|\n\
         | `narrative.md` | What is governed and how in the period: policies in force, decisions, approval coverage and latency, expired approvals, kill-switch use, receipts, the audit chain's verification |\n\
         | `control_mapping.csv` | How AgentNexus meets EU AI Act art. 12, 14, 19 and 26, ISO/IEC 42001 Annex A, SOC 2 CC6/CC7/CC8 and NIST AI RMF controls, and which files evidence each |\n\
         | `evaluations.csv` | Every action proposed in the period and how it was decided, newest first, with its status now |\n\
         | `approvals.csv` | Every human decision recorded in the period |\n\
         | `receipts.csv` | Every execution receipt reported in the period: what ran, and whether it conforms to what was decided |\n\
         | `policy_versions.csv` | Every version of every policy, who made it, and when it was in force |\n\
         | `policies/NAME/vN.yaml` | The documents of the versions in force during the period |\n\
         | `members.csv`, `api_keys.csv`, `agents.csv` | Who and what can act, as it stands at generation (keys without secrets) |\n\
         | `costs.csv` | The period's `cost_cents` by agent, by action and by UTC day |\n\
         | `audit_events.jsonl` | The period's audit events, one JSON object per line, with `prev_hash` and `hash` |\n\
         | `checkpoint.json` | The chain's length and head hash, signed with the server's Ed25519 key at generation |\n\
         | `public_key.pem` | The public half of that key |\n\
         | `attestation.json` | A DSSE envelope: an in-toto Statement v1 naming every file but itself and `SHA256SUMS` with its SHA-256, signed with the same key |\n\
         | `SHA256SUMS` | The SHA-256 of every other file (`sha256sum -c SHA256SUMS`) |\n\
         | `verify.py` | Checks all of the above with Python 3's standard library |\n\n\
         ## Verify\n\n\
         Get the server's public key from someone who can ask the server (`GET \
         /api/v1/audit/signing-key`, field `public_key_pem`), save it as `key.pem`, then:\n\n\
         ```sh\npython3 verify.py --public-key key.pem\n```\n\n\
         It checks every file against `SHA256SUMS` and the attestation, the attestation's and \
         the checkpoint's signatures, and recomputes every audit event's hash and its link to \
         the one before; it exits 0 only if every check passes. Without `--public-key` it uses \
         `public_key.pem` from the bundle, which shows the bundle is intact but not who made it.\n\n\
         To check the live chain against this bundle's checkpoint later: `agentnexus audit verify \
         --checkpoint checkpoint.json` on the server's database.\n",
        from = time(period.from),
        to = time(period.to),
    )
}

struct Narrative<'a> {
    workspace: &'a str,
    period: &'a Period,
    generated_at: &'a str,
    evaluations: i64,
    in_force: &'a [String],
    report: &'a crate::analytics::GovernanceReport,
    tally: &'a Tally,
    verification: &'a Verification,
    checkpoint: &'a crate::notary::Checkpoint,
}

fn narrative(n: &Narrative) -> String {
    let r = n.report;
    let mut out = format!(
        "# Governance narrative: workspace `{}`\n\n{} to {} (UTC), generated {}.\n\n",
        n.workspace,
        time(n.period.from),
        time(n.period.to),
        n.generated_at
    );
    out += "## What is governed\n\n";
    if n.in_force.is_empty() {
        out += "No policy was in force: every proposal was denied by default.\n\n";
    } else {
        out +=
            "Policies in force during the period (each version's document is in `policies/`):\n\n";
        for p in n.in_force {
            out += &format!("- {p}\n");
        }
        out += &format!(
            "\n{} policy changes were audited in the period.\n\n",
            n.tally.policy_changes
        );
    }
    let d = &r.decisions;
    let s = &r.statuses;
    out += &format!(
        "## Decisions\n\n{} evaluations: {} allowed by policy, {} denied, {} sent to people \
         for approval.\n\nOutcomes now: {} allowed, {} denied, {} approved, {} rejected, {} \
         expired, {} still pending.\n\n",
        n.evaluations,
        d.allow,
        d.deny,
        d.require_approval,
        s.allowed,
        s.denied,
        s.approved,
        s.rejected,
        s.expired,
        s.pending
    );
    let seconds = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.0} s"));
    out += &format!(
        "## Human oversight\n\n{} human decisions were recorded. Approval rate (approved / \
         approved + rejected + expired): {}. Time from a stage's start to a decision: p50 {}, \
         p90 {}, max {}. {} approvals expired without a decision.\n\n",
        n.tally.approvals,
        r.approval_rate
            .map_or("n/a".to_owned(), |a| format!("{:.1}%", a * 100.0)),
        seconds(r.latency.p50),
        seconds(r.latency.p90),
        seconds(r.latency.max),
        s.expired
    );
    if !r.top_rejection_reasons.is_empty() {
        out += "Most frequent reasons for denials and rejections:\n\n";
        for (reason, count) in &r.top_rejection_reasons {
            out += &format!("- {count} × {reason}\n");
        }
        out += "\n";
    }
    out += &format!(
        "## Stopping agents\n\n{} agent suspensions and {} resumptions; the workspace kill \
         switch was engaged {} times and released {} times.\n\n",
        n.tally.suspensions,
        n.tally.resumptions,
        n.tally.kill_switch_engaged,
        n.tally.kill_switch_released
    );
    out += &format!(
        "## Execution receipts\n\n{} receipts reported in the period; of the period's \
         evaluations, {} conforming, {} not conforming (see `receipts.csv`), {} allowed or \
         approved without a receipt.\n\n",
        n.tally.receipts, r.receipts_conforming, r.receipts_nonconforming, r.receipts_missing
    );
    out += "## Integrity of the record\n\n";
    out += &match n.verification {
        Verification::Ok {
            events, head_hash, ..
        } => format!(
            "The audit chain was verified at generation: ok, {events} events, head hash \
             `{head_hash}`.\n"
        ),
        Verification::Broken {
            broken_at_seq,
            reason,
            ..
        } => format!(
            "The audit chain was verified at generation and is BROKEN at seq {broken_at_seq}: \
             {reason}.\n"
        ),
    };
    out += &format!(
        "\nThe checkpoint (`checkpoint.json`) signs seq {} with head hash `{}` under key `{}`. \
         `audit_events.jsonl` holds the period's {} events{}.\n",
        n.checkpoint.seq,
        n.checkpoint.head_hash,
        n.checkpoint.key_id,
        n.tally.events,
        match (n.tally.first_seq, n.tally.last_seq) {
            (Some(a), Some(b)) => format!(", seq {a} to {b}"),
            _ => String::new(),
        }
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        let line = super::record(["=1+1", "plain", "a,b", "say \"hi\"", "-2", "@x", "x=1"]);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "'=1+1,plain,\"a,b\",\"say \"\"hi\"\"\",'-2,'@x,x=1\r\n"
        );
    }
}
