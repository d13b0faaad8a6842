//! The policy document of SPEC §3.1: parsed strictly, validated whole, never half-accepted.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_DOCUMENT_BYTES, MAX_TIMEOUT_SECS};

/// What a matching rule asks for. Ordered from least to most restrictive, so the winning
/// effect of a decision is the maximum of the matching ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    RequireApproval,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::RequireApproval => "require_approval",
            Effect::Deny => "deny",
        }
    }
}

/// How critical an approval is; `critical` adds a one-time code for every approver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Low,
    Medium,
    High,
    Critical,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
            Tier::Critical => "critical",
        }
    }

    /// Whether each approver confirms their decision with a one-time code.
    pub fn needs_code(self) -> bool {
        self == Tier::Critical
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Slack,
    Teams,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Slack => "slack",
            Channel::Teams => "teams",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Reject,
    Escalate,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Reject => "reject",
            OnTimeout::Escalate => "escalate",
        }
    }
}

/// A duration written as `30s`, `30m`, `2h` or `1d`, kept as seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub u64);

impl Timeout {
    /// `30s`, `30m`, `2h` or `1d`: positive, and at most [`MAX_TIMEOUT_SECS`] (365 days).
    pub fn parse(text: &str) -> Result<Timeout, String> {
        let invalid = || {
            format!("invalid timeout `{text}`: use a positive number with s, m, h or d, e.g. 30m")
        };
        let trimmed = text.trim();
        let unit = trimmed.chars().last().ok_or_else(invalid)?;
        let digits = &trimmed[..trimmed.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        // Digits past u64 are "too long" as much as any other long timeout.
        let secs = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .unwrap_or(u64::MAX);
        match secs {
            0 => Err(invalid()),
            s if s > MAX_TIMEOUT_SECS => Err(format!("timeout `{text}` is too long: at most 365d")),
            s => Ok(Timeout(s)),
        }
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        match s {
            _ if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            _ if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Timeout::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn one() -> u32 {
    1
}

fn email_only() -> Vec<Channel> {
    vec![Channel::Email]
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// E-mail addresses and `role:NAME` entries.
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub required: u32,
    #[serde(default = "email_only")]
    pub channels: Vec<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    pub effect: Effect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// Where a problem is: 1-based line and column in the document as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One reason a document is refused, naming the rule and the position where it can.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.position {
            write!(f, "{}:{}: ", p.line, p.column)?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a document; a document with any is refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<Problem>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Invalid {
    pub fn one(message: impl Into<String>) -> Invalid {
        Invalid(vec![Problem {
            rule: None,
            field: None,
            position: None,
            message: message.into(),
        }])
    }
}

/// Names that are REST paths beside `/api/v1/policies/{name}`.
const RESERVED_NAMES: [&str; 2] = ["validate", "simulate"];

/// Is `name` a valid policy name: `[a-z0-9-_.]{1,64}`.
pub fn valid_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

impl PolicyDocument {
    /// Parses a document without checking its expressions; see `crate::compile_policy` for the
    /// full check.
    pub fn parse(text: &str, format: Format) -> Result<PolicyDocument, Invalid> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(Invalid::one(format!(
                "the document is {} bytes; at most {MAX_DOCUMENT_BYTES} (256 KiB) are allowed",
                text.len()
            )));
        }
        let parsed = match format {
            Format::Json => serde_json::from_str(text).map_err(|e| Problem {
                rule: None,
                field: None,
                position: Some(Position {
                    line: e.line(),
                    column: e.column(),
                }),
                message: e.to_string(),
            }),
            Format::Yaml => serde_norway::from_str(text).map_err(|e| Problem {
                rule: None,
                field: None,
                position: e.location().map(|l| Position {
                    line: l.line(),
                    column: l.column(),
                }),
                message: strip_location(&e.to_string()),
            }),
        };
        let doc: PolicyDocument = parsed.map_err(|p| Invalid(vec![p]))?;
        doc.check_structure(text)?;
        Ok(doc)
    }

    /// The checks serde cannot express: names, ids, approval blocks.
    fn check_structure(&self, text: &str) -> Result<(), Invalid> {
        let mut problems = Vec::new();
        let mut problem = |rule: Option<&str>, field: &str, message: String| {
            problems.push(Problem {
                rule: rule.map(str::to_owned),
                field: Some(field.to_owned()),
                position: rule.and_then(|r| locate_rule(text, r)),
                message,
            })
        };
        if RESERVED_NAMES.contains(&self.name.as_str()) {
            problem(
                None,
                "name",
                format!(
                    "`{}` is reserved (it is a path under /api/v1/policies/)",
                    self.name
                ),
            );
        } else if !valid_policy_name(&self.name) {
            problem(
                None,
                "name",
                format!(
                    "`{}` is not a valid policy name: use 1-64 of a-z 0-9 - _ .",
                    self.name
                ),
            );
        }
        if self.rules.is_empty() {
            problem(None, "rules", "a policy needs at least one rule".into());
        }
        let mut seen = std::collections::HashSet::new();
        for rule in &self.rules {
            let id = Some(rule.id.as_str());
            if rule.id.is_empty() || rule.id.len() > 128 {
                problem(id, "id", "a rule id is 1-128 characters".into());
            }
            if !seen.insert(rule.id.as_str()) {
                problem(id, "id", format!("duplicate rule id `{}`", rule.id));
            }
            match (rule.effect, &rule.approval) {
                (Effect::RequireApproval, None) => problem(
                    id,
                    "approval",
                    "a require_approval rule needs an approval block with stages".into(),
                ),
                (Effect::RequireApproval, Some(a)) if a.stages.is_empty() => problem(
                    id,
                    "approval.stages",
                    "a require_approval rule needs at least one stage".into(),
                ),
                (Effect::RequireApproval, Some(a)) => {
                    for (i, stage) in a.stages.iter().enumerate() {
                        let field = format!("approval.stages[{i}]");
                        if stage.name.trim().is_empty() {
                            problem(id, &field, "a stage needs a name".into());
                        }
                        if stage.approvers.is_empty() {
                            problem(id, &field, "a stage needs at least one approver".into());
                        }
                        for a in &stage.approvers {
                            if !valid_approver(a) {
                                problem(
                                    id,
                                    &field,
                                    format!("approver `{a}` is neither an e-mail nor role:NAME"),
                                );
                            }
                        }
                        if stage.required == 0 {
                            problem(id, &field, "required must be at least 1".into());
                        }
                        if stage.channels.is_empty() {
                            problem(id, &field, "a stage needs at least one channel".into());
                        }
                    }
                }
                (_, Some(_)) => problem(
                    id,
                    "approval",
                    "only require_approval rules take an approval block".into(),
                ),
                (_, None) => {}
            }
            if rule.tier.is_some() && rule.effect != Effect::RequireApproval {
                problem(id, "tier", "only require_approval rules take a tier".into());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Invalid(problems))
        }
    }
}

fn valid_approver(a: &str) -> bool {
    match a.strip_prefix("role:") {
        Some(role) => !role.is_empty() && !role.contains(char::is_whitespace),
        None => {
            let mut parts = a.split('@');
            matches!((parts.next(), parts.next(), parts.next()),
                (Some(local), Some(domain), None) if !local.is_empty() && domain.contains('.')
                    && !a.contains(char::is_whitespace))
        }
    }
}

/// serde_norway appends " at line L column C" to its messages; the position is reported apart.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The line where rule `id` is declared, found in the text as written (YAML or JSON).
pub fn locate_rule(text: &str, id: &str) -> Option<Position> {
    text.lines().enumerate().find_map(|(n, line)| {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        let rest = t
            .strip_prefix("id:")
            .or_else(|| t.strip_prefix("\"id\":"))?;
        let value = rest
            .trim()
            .trim_end_matches(',')
            .trim_matches(|c| c == '"' || c == '\'');
        (value == id).then(|| Position {
            line: n + 1,
            column: line.len() - line.trim_start().len() + 1,
        })
    })
}

/// Where expression `when` of a rule is written, so an offset inside it becomes a position
/// in the document. Found by searching the text after the rule's declaration.
pub(crate) fn locate_expression(text: &str, rule: &str, when: &str) -> Option<Position> {
    let start_line = locate_rule(text, rule).map_or(0, |p| p.line - 1);
    let first = when.lines().next()?;
    text.lines()
        .enumerate()
        .skip(start_line)
        .find_map(|(n, line)| {
            line.find(first).map(|col| Position {
                line: n + 1,
                column: col + 1,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_and_print() {
        assert_eq!(Timeout::parse("30m"), Ok(Timeout(1800)));
        assert_eq!(Timeout::parse("2h"), Ok(Timeout(7200)));
        assert_eq!(Timeout::parse("1d"), Ok(Timeout(86_400)));
        assert_eq!(Timeout::parse("45s"), Ok(Timeout(45)));
        assert_eq!(Timeout::parse("365d"), Ok(Timeout(MAX_TIMEOUT_SECS)));
        assert_eq!(Timeout(5400).to_string(), "90m");
        for bad in ["0m", "10x", "m", "-5m", "+5m", "1.5h", ""] {
            assert!(
                Timeout::parse(bad).unwrap_err().contains("invalid"),
                "{bad}"
            );
        }
        for long in ["366d", "8761h", "999999999d", "99999999999999999999999d"] {
            assert!(
                Timeout::parse(long).unwrap_err().contains("too long"),
                "{long}"
            );
        }
    }

    #[test]
    fn approver_forms() {
        assert!(valid_approver("alice@example.com"));
        assert!(valid_approver("role:finance"));
        assert!(!valid_approver("role:"));
        assert!(!valid_approver("alice"));
        assert!(!valid_approver("a b@example.com"));
    }

    #[test]
    fn policy_names() {
        assert!(valid_policy_name("payments.v2_x-y"));
        assert!(!valid_policy_name("Payments"));
        assert!(!valid_policy_name(""));
        assert!(!valid_policy_name(&"a".repeat(65)));
    }

    #[test]
    fn unknown_fields_and_effects_are_refused_with_a_position() {
        let err = PolicyDocument::parse(
            "name: p\nrules:\n  - id: r\n    effect: maybe\n",
            Format::Yaml,
        )
        .unwrap_err();
        let p = &err.0[0];
        assert_eq!(p.position.unwrap().line, 4, "{p}");
        assert!(p.message.contains("maybe"), "{p}");
    }

    #[test]
    fn reserved_names_are_refused() {
        let err = PolicyDocument::parse(
            "name: validate\nrules:\n  - {id: r, effect: allow}\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert!(err.0[0].message.contains("reserved"), "{err}");
    }

    #[test]
    fn approval_rules_need_stages() {
        let err = PolicyDocument::parse(
            "name: p\nrules:\n  - id: ok\n    effect: allow\n  - id: big\n    effect: require_approval\n    approval:\n      stages: []\n",
            Format::Yaml,
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].rule.as_deref(), Some("big"));
        assert_eq!(err.0[0].position, Some(Position { line: 5, column: 3 }));
    }
}
