//! The inputs use cases take, parsed once at the door: an e-mail address, an agent, an
//! outbound URL, a role, and ids that cannot be mixed up. Tiers and channels are the engine's
//! ([`Tier`], [`Channel`]).

use std::fmt;

pub use agentnexus_engine::{Channel, Tier};

use crate::error::{Error, Result};

/// Ids of one kind of thing; a string that names nothing is simply not found.
macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id!(
    /// `ev_…`
    EvaluationId
);
id!(
    /// `key_…`
    KeyId
);
id!(
    /// `mem_…`
    MemberId
);

/// What an e-mail address may not contain: control characters and every kind of space (the
/// class the API's JSON Schema pattern for e-mails spells out, so both agree).
fn not_in_email(c: char) -> bool {
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            '\u{a0}' | '\u{1680}' | '\u{2000}'
                ..='\u{200a}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202f}'
                    | '\u{205f}'
                    | '\u{3000}'
                    | '\u{feff}'
        )
}

/// An e-mail address as people are named: `name@domain.tld`, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

impl Email {
    /// One `@`, no spaces or control characters, a dot inside the domain, at most 254
    /// characters as sent (surrounding whitespace included).
    pub fn parse(sent: &str) -> Result<Email> {
        let email = sent.trim();
        let valid = sent.chars().count() <= 254
            && !email.contains(not_in_email)
            && matches!(email.split_once('@'), Some((local, domain))
                if !local.is_empty() && domain.contains('.') && !domain.contains('@')
                    && !domain.starts_with('.') && !domain.ends_with('.'));
        if valid {
            Ok(Email(email.to_ascii_lowercase()))
        } else {
            Err(Error::field("email", "must be an e-mail address"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An agent, as evaluations name it: 1-256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentId(String);

impl AgentId {
    pub fn parse(field: &str, sent: String) -> Result<AgentId> {
        if sent.is_empty() || sent.chars().count() > 256 {
            return Err(Error::field(field, "must be 1 to 256 characters"));
        }
        if sent.chars().any(char::is_control) {
            return Err(Error::field(field, "must not contain control characters"));
        }
        Ok(AgentId(sent))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A role members hold and stages name (`role:finance`): 1-64 of a-z 0-9 - _.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Role(String);

impl Role {
    pub fn parse(role: String) -> Result<Role> {
        let ok = (1..=64).contains(&role.len())
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
        if ok {
            Ok(Role(role))
        } else {
            Err(Error::field(
                "roles",
                format!("`{role}` is not a role name: use 1-64 of a-z 0-9 - _"),
            ))
        }
    }

    /// Role names, without duplicates.
    pub fn parse_all(roles: Vec<String>) -> Result<Vec<Role>> {
        let mut out: Vec<Role> = Vec::with_capacity(roles.len());
        for role in roles {
            let role = Role::parse(role)?;
            if !out.contains(&role) {
                out.push(role);
            }
        }
        Ok(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The outbound URLs the API takes (`webhook_url`, Slack and Teams webhooks), exactly as the
/// OpenAPI document's pattern for them says: http(s), a host name, an IPv4 address or an IPv6
/// address in brackets, an optional port, a path and a query of URL characters, no user
/// information and no fragment; at most 2048 characters. Host names are lower-cased labels of
/// letters, digits and single hyphens whose last one starts with a letter, which is what keeps
/// every matching string a URL the `url` crate parses (an `xn--` label could be invalid
/// punycode; a last label of digits is read as an IPv4 address).
pub const WEBHOOK_URL_PATTERN: &str = concat!(
    "^[Hh][Tt][Tt][Pp][Ss]?://(",
    "([A-Za-z0-9]+(-[A-Za-z0-9]+)*\\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*",
    "|(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
    "|\\[(",
    "([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,7}:",
    "|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}",
    "|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}",
    "|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}",
    "|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}",
    "|:((:[0-9A-Fa-f]{1,4}){1,7}|:)",
    "|::([Ff]{4}(:0{1,4})?:)?(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
    ")\\])",
    "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
    "(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*",
    "(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$",
);

/// An outbound URL the API takes (see [`WEBHOOK_URL_PATTERN`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(field: &str, url: String) -> Result<WebhookUrl> {
        static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(WEBHOOK_URL_PATTERN).expect("the webhook URL pattern compiles")
        });
        let ok = url.chars().count() <= 2048
            && PATTERN.is_match(&url)
            && url::Url::parse(&url).is_ok_and(|u| u.host().is_some());
        if ok {
            Ok(WebhookUrl(url))
        } else {
            Err(Error::field(
                field,
                "must be an http(s) URL with a host, at most 2048 characters",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The currency a workspace's amounts are in: an ISO 4217 code (`USD`, `EUR`, `JPY`, …).
/// Amounts are kept in the currency's minor unit (`amount_cents`): cents for most, yen for
/// JPY, fils for KWD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Default for Currency {
    fn default() -> Self {
        Currency("USD".into())
    }
}

/// ISO 4217 currencies whose minor unit is not a hundredth.
const NO_MINOR_UNIT: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
const THOUSANDTHS: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

impl Currency {
    /// Three letters (any case); answered upper-case.
    pub fn parse(field: &str, code: &str) -> Result<Currency> {
        let code = code.trim();
        if code.len() == 3 && code.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Currency(code.to_ascii_uppercase()))
        } else {
            Err(Error::field(
                field,
                "must be an ISO 4217 currency code of three letters, e.g. USD or EUR",
            ))
        }
    }

    /// A code as the store keeps it (checked when it was set).
    pub fn stored(code: String) -> Currency {
        Currency(code)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An amount in minor units as every message and page shows it: `$750.00` in US dollars,
    /// `€750.00`, `£750.00`, `¥75000`, else the code after the number: `750.00 CHF`.
    pub fn format(&self, minor: i64) -> String {
        let sign = if minor < 0 { "-" } else { "" };
        let n = minor.unsigned_abs();
        let digits = if NO_MINOR_UNIT.contains(&self.as_str()) {
            0
        } else if THOUSANDTHS.contains(&self.as_str()) {
            3
        } else {
            2
        };
        let number = match digits {
            0 => n.to_string(),
            3 => format!("{}.{:03}", n / 1000, n % 1000),
            _ => format!("{}.{:02}", n / 100, n % 100),
        };
        match self.as_str() {
            "USD" => format!("{sign}${number}"),
            "EUR" => format!("{sign}€{number}"),
            "GBP" => format!("{sign}£{number}"),
            "JPY" => format!("{sign}¥{number}"),
            code => format!("{sign}{number} {code}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_in_the_workspace_currency() {
        let c = |code: &str| Currency::parse("currency", code).unwrap();
        assert_eq!(Currency::default().format(75_000), "$750.00");
        assert_eq!(c("usd").format(5), "$0.05");
        assert_eq!(c("USD").format(-1_50), "-$1.50");
        assert_eq!(c("eur").format(75_000), "€750.00");
        assert_eq!(c("GBP").format(1), "£0.01");
        assert_eq!(c("JPY").format(75_000), "¥75000");
        assert_eq!(c("KWD").format(1_500), "1.500 KWD");
        assert_eq!(c("CHF").format(75_000), "750.00 CHF");
        for bad in ["", "US", "USDX", "U$D", "€"] {
            assert!(Currency::parse("currency", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_shaped() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in [
            "alice",
            "@example.com",
            "alice@example",
            "alice@.example.com",
            "alice@example.com.",
            "al ice@example.com",
            "alice@exa@mple.com",
            "alice\u{feff}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn roles_are_names_without_duplicates() {
        let roles = Role::parse_all(vec!["finance".into(), "finance".into(), "a-b_1".into()]);
        let names: Vec<String> = roles.unwrap().into_iter().map(Role::into_string).collect();
        assert_eq!(names, ["finance", "a-b_1"]);
        for bad in ["", "Finance", "a b", &"x".repeat(65)] {
            assert!(Role::parse(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn webhook_urls_follow_the_pattern() {
        for good in [
            "https://hooks.example.com/x?y=1",
            "http://127.0.0.1:8080/hook",
            "http://[::1]/h",
        ] {
            assert!(WebhookUrl::parse("u", good.into()).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.com",
            "https://user@example.com/",
            "https://example.com/#frag",
            "https://1.2.3/",
            "https://example.com/ space",
        ] {
            assert!(WebhookUrl::parse("u", bad.into()).is_err(), "{bad}");
        }
    }
}
