//! The agent inventory and the kill switch (SPEC §8): every `agent_id` evaluate has seen, what
//! people say about each, and stopping one agent or all of them at once. A halt is in force on
//! the server that took it as soon as it answers (its policy cache is reloaded with it) and on
//! every other within `AGENTNEXUS_REFRESH_SECS`; evaluate then denies whatever the policies
//! say, and the halted agents' pending evaluations are ended `rejected`, by the server that
//! took the halt and, for any another server let through before it knew, by every server's
//! refresh loop.

use agentnexus_store::{AgentProfile, AgentRecord, Halt, HaltScope, Halts};

use crate::error::{Error, Result};
use crate::types::AgentId;
use crate::{Admin, App, Reader};

/// Most agents one inventory answer lists (the most recently seen).
pub const MAX_AGENTS: u32 = 1000;

/// Risk tiers an agent may be given.
pub const RISK_TIERS: [&str; 4] = ["low", "medium", "high", "critical"];

/// What people say about an agent, as sent; what is absent is cleared.
#[derive(Debug, Clone, Default)]
pub struct AgentInput {
    pub owner: Option<String>,
    pub purpose: Option<String>,
    pub model: Option<String>,
    pub tools: Option<Vec<String>>,
    pub risk_tier: Option<String>,
}

/// An agent of the inventory and whether it may act.
#[derive(Debug, Clone)]
pub struct Agent {
    pub record: AgentRecord,
    /// What stops it: its own suspension, else the workspace's kill switch; none while active.
    pub halted: Option<Stopped>,
}

/// Why an agent may not act.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub halt: Halt,
    /// True when it is the workspace's kill switch rather than the agent's own suspension.
    pub kill_switch: bool,
}

/// The workspace's kill switch as it stands.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    pub engaged: Option<Halt>,
}

fn text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>> {
    let Some(v) = value else { return Ok(None) };
    // Counted as sent, as the OpenAPI document's maxLength counts.
    if v.chars().count() > max {
        return Err(Error::field(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Error::field(field, "must not contain control characters"));
    }
    let v = v.trim();
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

/// A halt's reason: 1-500 characters on one line.
fn reason(value: Option<String>, required: bool) -> Result<Option<String>> {
    // Given, it says something: "" is not a reason (leave it out instead).
    if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
        return Err(Error::field(
            "reason",
            "must be 1 to 500 characters (or left out)",
        ));
    }
    let r = text("reason", value, 500)?;
    if r.as_deref().is_some_and(|r| r.contains('\n')) {
        return Err(Error::field("reason", "must be one line"));
    }
    if required && r.is_none() {
        return Err(Error::field(
            "reason",
            "is required: say why, for the audit trail and the agent's denials",
        ));
    }
    Ok(r)
}

impl AgentInput {
    fn check(self) -> Result<AgentProfile> {
        let tools = self.tools.unwrap_or_default();
        if tools.len() > 100 {
            return Err(Error::field("tools", "must be at most 100 names"));
        }
        let tools = tools
            .into_iter()
            .map(|t| {
                text("tools", Some(t), 200)?
                    .filter(|t| !t.contains('\n'))
                    .ok_or_else(|| Error::field("tools", "each must be 1 to 200 characters"))
            })
            .collect::<Result<Vec<_>>>()?;
        // Exactly one of the four, or null: not "" and not " high ".
        if let Some(t) = &self.risk_tier
            && !RISK_TIERS.contains(&t.as_str())
        {
            return Err(Error::field(
                "risk_tier",
                "must be low, medium, high or critical (null for none)",
            ));
        }
        let risk_tier = self.risk_tier;
        Ok(AgentProfile {
            owner: text("owner", self.owner, 200)?,
            purpose: text("purpose", self.purpose, 2000)?,
            model: text("model", self.model, 200)?,
            tools,
            risk_tier,
        })
    }
}

impl Agent {
    fn of(record: AgentRecord, halts: &Halts) -> Agent {
        let halted = match (&record.suspended, &halts.workspace) {
            (Some(own), _) => Some(Stopped {
                halt: own.clone(),
                kill_switch: false,
            }),
            (None, Some(all)) => Some(Stopped {
                halt: all.clone(),
                kill_switch: true,
            }),
            (None, None) => None,
        };
        Agent { record, halted }
    }
}

impl App {
    /// The workspace's agents, most recently seen first (at most [`MAX_AGENTS`]).
    pub async fn agents(&self, reader: &Reader) -> Result<Vec<Agent>> {
        let tenant = reader.tenant();
        let halts = self.store.halts(tenant).await?;
        let records = self
            .store
            .agents(tenant, None, MAX_AGENTS, self.now())
            .await?;
        Ok(records.into_iter().map(|r| Agent::of(r, &halts)).collect())
    }

    /// One agent of the inventory.
    pub async fn agent(&self, reader: &Reader, id: &AgentId) -> Result<Agent> {
        let tenant = reader.tenant();
        let halts = self.store.halts(tenant).await?;
        let record = self
            .store
            .agents(tenant, Some(id.as_str()), 1, self.now())
            .await?
            .pop()
            .ok_or(Error::NotFound)?;
        Ok(Agent::of(record, &halts))
    }

    /// Sets an agent's descriptive fields (all of them); one not seen yet joins the inventory.
    pub async fn describe_agent(
        &self,
        admin: &Admin,
        id: &AgentId,
        input: AgentInput,
    ) -> Result<Agent> {
        let profile = input.check()?;
        self.store
            .describe_agent(
                admin.tenant(),
                id.as_str(),
                &profile,
                admin.actor(),
                self.now(),
            )
            .await?;
        self.agent(&admin.reader(), id).await
    }

    /// Suspends an agent (one not seen yet too: it is denied from its first proposal) and ends
    /// its pending evaluations; answers it and how many evaluations were ended.
    pub async fn suspend_agent(
        &self,
        admin: &Admin,
        id: &AgentId,
        why: Option<String>,
    ) -> Result<(Agent, usize)> {
        let why = reason(why, true)?.expect("required");
        let scope = HaltScope::Agent(id.as_str());
        let ended = self.halt(admin, scope, &why).await?;
        Ok((self.agent(&admin.reader(), id).await?, ended))
    }

    /// Lets a suspended agent act again (the workspace's kill switch, if engaged, still
    /// stops it).
    pub async fn resume_agent(
        &self,
        admin: &Admin,
        id: &AgentId,
        why: Option<String>,
    ) -> Result<Agent> {
        let why = reason(why, false)?;
        let agent = self.agent(&admin.reader(), id).await?;
        let scope = HaltScope::Agent(id.as_str());
        if self
            .store
            .lift(
                admin.tenant(),
                scope,
                why.as_deref(),
                admin.actor(),
                self.now(),
            )
            .await?
        {
            self.reload_policies(admin.tenant()).await?;
            return self.agent(&admin.reader(), id).await;
        }
        Ok(agent)
    }

    /// The workspace's kill switch as it stands.
    pub async fn kill_switch(&self, reader: &Reader) -> Result<KillSwitch> {
        let halts = self.store.halts(reader.tenant()).await?;
        Ok(KillSwitch {
            engaged: halts.workspace,
        })
    }

    /// Engages the kill switch (every agent of the workspace denied, their pending
    /// evaluations ended) or releases it; answers it and how many evaluations were ended.
    pub async fn set_kill_switch(
        &self,
        admin: &Admin,
        engaged: bool,
        why: Option<String>,
    ) -> Result<(KillSwitch, usize)> {
        let ended = if engaged {
            let why = reason(why, true)?.expect("required");
            self.halt(admin, HaltScope::Workspace, &why).await?
        } else {
            let why = reason(why, false)?;
            let tenant = admin.tenant();
            let scope = HaltScope::Workspace;
            if self
                .store
                .lift(tenant, scope, why.as_deref(), admin.actor(), self.now())
                .await?
            {
                self.reload_policies(tenant).await?;
            }
            0
        };
        Ok((self.kill_switch(&admin.reader()).await?, ended))
    }

    /// Records a halt, puts it in force here at once, and ends what it stops.
    async fn halt(&self, admin: &Admin, scope: HaltScope<'_>, why: &str) -> Result<usize> {
        let tenant = admin.tenant();
        self.store
            .halt(tenant, scope, why, admin.actor(), self.now())
            .await?;
        self.reload_policies(tenant).await?;
        Ok(self
            .store
            .end_halted(tenant, admin.actor(), self.now())
            .await?)
    }

    /// The refresh loop's part: ends pending evaluations of halted agents that a server let
    /// through before it knew of the halt.
    pub(crate) async fn end_halted_everywhere(&self) {
        let tenants = match self.store.halted_workspaces().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading halted workspaces failed");
                return;
            }
        };
        for tenant in tenants {
            match self
                .store
                .end_halted(&tenant, agentnexus_store::Actor::System, self.now())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(ended = n, "pending evaluations of halted agents ended"),
                Err(e) => tracing::warn!(error = %e, "ending halted agents' evaluations failed"),
            }
        }
    }
}
