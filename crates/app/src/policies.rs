//! Policies (SPEC §3): documents checked whole before they are stored (a stage that reaches
//! nobody is refused too), versions, disabling, rollback, validation and simulation. A change
//! is visible to this server's next evaluation at once, and to the others within
//! `AGENTNEXUS_REFRESH_SECS`.

use std::sync::Arc;

use agentnexus_engine::{
    CompiledPolicy, Decision, Format, Invalid, PolicySet, Problem, Spend, compile_policy,
};
use agentnexus_store::{PolicyChange, PolicySummary, PolicyVersion};

use crate::error::{Error, Result};
use crate::evaluations::{EvaluateInput, Proposed};
use crate::{Admin, App, Reader};

/// A policy document as written, in its format.
#[derive(Debug, Clone)]
pub struct PolicyText {
    pub text: String,
    pub format: Format,
}

impl PolicyText {
    /// A document whose format is not said: JSON when it starts with `{` (YAML would read it
    /// too), YAML otherwise.
    pub fn sniff(text: String) -> PolicyText {
        let format = if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        };
        PolicyText { text, format }
    }
}

/// Whether a document would be accepted, and why not.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Its name and rule count, when valid.
    pub valid: Option<(String, usize)>,
    pub problems: Vec<Problem>,
}

/// A simulation's input: a proposal as for evaluate, draft documents to decide with instead
/// of the stored ones, and a spend to assume instead of the agent's own.
#[derive(Debug, Clone, Default)]
pub struct SimulateInput {
    pub proposal: EvaluateInput,
    pub policies: Option<Vec<PolicyText>>,
    pub spend: Option<Spend>,
}

/// What a simulation decided, recording nothing.
pub struct Simulation {
    pub decision: Decision,
    pub proposal_hash: String,
}

/// The description a stored version's document gives, if any.
pub fn description(v: &PolicyVersion) -> Option<String> {
    agentnexus_engine::PolicyDocument::parse(&v.document, v.document_format())
        .ok()
        .and_then(|d| d.description)
}

impl App {
    pub async fn policies(&self, reader: &Reader) -> Result<Vec<PolicySummary>> {
        Ok(self.store.policies(reader.tenant()).await?)
    }

    /// The active version of a policy.
    pub async fn policy(&self, reader: &Reader, name: &str) -> Result<PolicyVersion> {
        self.store
            .policy(reader.tenant(), name)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Compiles a document and checks it against the workspace: a stage whose approvers are
    /// only roles nobody holds would wait for no one, and is refused naming its rule.
    pub async fn check_policy(&self, admin: &Admin, doc: &PolicyText) -> Result<CompiledPolicy> {
        self.check_policy_in(admin.tenant(), doc).await
    }

    /// [`App::check_policy`] for a workspace, whoever asks (a sync from Git asks for itself).
    pub(crate) async fn check_policy_in(
        &self,
        tenant: &agentnexus_store::Tenant,
        doc: &PolicyText,
    ) -> Result<CompiledPolicy> {
        let compiled = compile_policy(&doc.text, doc.format)
            .map_err(|e| Error::invalid(format!("the policy is invalid: {e}"), e))?;
        let empty = self.store.empty_stages(tenant, &compiled.document).await?;
        if empty.is_empty() {
            return Ok(compiled);
        }
        let problems: Vec<Problem> = empty
            .iter()
            .map(|e| Problem {
                rule: Some(e.rule.clone()),
                field: Some(format!("approval.stages[{}]", e.index)),
                position: agentnexus_engine::locate_rule(&doc.text, &e.rule),
                message: format!(
                    "stage `{}` reaches nobody: no member holds any of its roles; add members \
                     with the role or name an e-mail",
                    e.name
                ),
            })
            .collect();
        let invalid = Invalid(problems);
        Err(Error::invalid(
            format!("the policy is invalid: {invalid}"),
            invalid,
        ))
    }

    /// Creates or replaces policy `name`. Sending the active document again changes nothing
    /// and answers its version.
    pub async fn put_policy(
        &self,
        admin: &Admin,
        name: &str,
        doc: PolicyText,
    ) -> Result<PolicyVersion> {
        let compiled = self.check_policy(admin, &doc).await?;
        if compiled.name() != name {
            return Err(Error::field(
                "name",
                format!(
                    "the document is named `{}` but the path says `{name}`",
                    compiled.name()
                ),
            ));
        }
        let (version, _changed) = self
            .store
            .put_policy(admin.tenant(), change(admin, &compiled, &doc, self.now()))
            .await?;
        self.policies_changed(admin, version).await
    }

    /// Stores several documents as new versions in one transaction: all or nothing. Answers
    /// each version and whether it changed.
    pub async fn apply_policies(
        &self,
        admin: &Admin,
        docs: &[PolicyText],
    ) -> Result<Vec<(PolicyVersion, bool)>> {
        let mut compiled = Vec::with_capacity(docs.len());
        for doc in docs {
            compiled.push(self.check_policy(admin, doc).await?);
        }
        let now = self.now();
        let changes = compiled
            .iter()
            .zip(docs)
            .map(|(policy, doc)| change(admin, policy, doc, now))
            .collect();
        let applied = self.store.put_policies(admin.tenant(), changes).await?;
        self.policies_changed(admin, applied).await
    }

    /// Disables a policy (a new version; history stays).
    pub async fn disable_policy(&self, admin: &Admin, name: &str) -> Result<PolicyVersion> {
        let (tenant, actor, source) = (admin.tenant(), admin.actor(), admin.source());
        let disabled = self
            .store
            .disable_policy(tenant, name, actor, source, self.now());
        self.policies_changed(admin, disabled.await?).await
    }

    /// Enables a disabled policy: its active document stored again as an enabled version.
    pub async fn enable_policy(&self, admin: &Admin, name: &str) -> Result<PolicyVersion> {
        let active = self.policy(&admin.reader(), name).await?;
        let doc = PolicyText {
            format: active.document_format(),
            text: active.document,
        };
        self.put_policy(admin, name, doc).await
    }

    /// Every version of a policy, newest first.
    pub async fn policy_versions(&self, reader: &Reader, name: &str) -> Result<Vec<PolicyVersion>> {
        let versions = self.store.policy_versions(reader.tenant(), name).await?;
        if versions.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(versions)
    }

    pub async fn policy_version(
        &self,
        reader: &Reader,
        name: &str,
        version: i64,
    ) -> Result<PolicyVersion> {
        self.store
            .policy_version(reader.tenant(), name, version)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Makes an older version active again, as a new version.
    pub async fn rollback_policy(
        &self,
        admin: &Admin,
        name: &str,
        version: i64,
    ) -> Result<PolicyVersion> {
        let (tenant, actor, source) = (admin.tenant(), admin.actor(), admin.source());
        let active = self
            .store
            .rollback_policy(tenant, name, version, actor, source, self.now());
        self.policies_changed(admin, active.await?).await
    }

    /// The unified diff from version `a` of a policy's document to version `b`.
    pub async fn policy_diff(&self, reader: &Reader, name: &str, a: i64, b: i64) -> Result<String> {
        let old = self.policy_version(reader, name, a).await?;
        let new = self.policy_version(reader, name, b).await?;
        Ok(similar::TextDiff::from_lines(&old.document, &new.document)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{name} v{a}"), &format!("{name} v{b}"))
            .to_string())
    }

    /// Checks a document without storing it.
    pub fn validate_policy(&self, _reader: &Reader, doc: &PolicyText) -> Validation {
        match compile_policy(&doc.text, doc.format) {
            Ok(p) => Validation {
                valid: Some((p.name().to_owned(), p.rules().len())),
                problems: Vec::new(),
            },
            Err(e) => Validation {
                valid: None,
                problems: e.0,
            },
        }
    }

    /// Decides a proposal against given or stored policies, recording nothing.
    pub async fn simulate(&self, reader: &Reader, input: SimulateInput) -> Result<Simulation> {
        let proposal = Proposed::parse(input.proposal)?.proposal;
        let stored;
        let given;
        let set: &PolicySet = match input.policies {
            Some(docs) => {
                let mut compiled = Vec::with_capacity(docs.len());
                for (i, doc) in docs.iter().enumerate() {
                    let p = compile_policy(&doc.text, doc.format)
                        .map_err(|e| Error::invalid(format!("policies[{i}] is invalid: {e}"), e))?;
                    compiled.push(Arc::new(p));
                }
                given = PolicySet::new(compiled);
                &given
            }
            None => {
                stored = self.policy_set(reader.tenant()).await?;
                &stored.set
            }
        };
        let spend = match input.spend {
            Some(s) => s,
            None if set.uses_spend() => {
                self.store
                    .spend(reader.tenant(), &proposal.agent_id, self.now())
                    .await?
            }
            None => Spend::default(),
        };
        Ok(Simulation {
            decision: set.decide(&proposal, spend),
            proposal_hash: proposal.hash(),
        })
    }

    /// The set a draft would be decided in: the workspace's other enabled policies, and the
    /// draft itself if it is enabled (replay and a sync from Git decide with it).
    pub(crate) async fn set_with(
        &self,
        tenant: &agentnexus_store::Tenant,
        draft: CompiledPolicy,
    ) -> Result<Arc<PolicySet>> {
        let mut policies = self
            .store
            .active_policies(tenant)
            .await?
            .iter()
            .filter(|v| v.enabled && v.name != draft.name())
            .map(|v| crate::app::compile_stored(v).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        if draft.document.enabled {
            policies.push(Arc::new(draft));
        }
        Ok(Arc::new(PolicySet::new(policies)))
    }

    /// Makes a stored change visible to this server's next request, and answers what it
    /// stored. The change is stored either way, so a failed reload is logged and left to the
    /// refresh loop, not reported.
    async fn policies_changed<T>(&self, admin: &Admin, stored: T) -> Result<T> {
        if let Err(e) = self.reload_policies(admin.tenant()).await {
            tracing::error!(error = %e, "reloading policies after a change failed");
        }
        Ok(stored)
    }
}

fn change<'a>(
    admin: &Admin,
    policy: &'a CompiledPolicy,
    doc: &'a PolicyText,
    now: chrono::DateTime<chrono::Utc>,
) -> PolicyChange<'a> {
    PolicyChange {
        name: policy.name(),
        document: &doc.text,
        format: doc.format.as_str(),
        enabled: policy.document.enabled,
        actor: admin.actor(),
        source: admin.source(),
        now,
    }
}
