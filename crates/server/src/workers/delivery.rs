//! The delivery worker: claims due jobs from the store's queue, performs them (webhook
//! POSTs today), records every attempt, and schedules retries with exponential backoff and
//! jitter that honours `Retry-After`, until the retry horizon, when the job is dead.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentnexus_store::{Attempt, Finished, Job, JobKind, Next};
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::crypto::Purpose;
use crate::state::AppState;

/// How a refused name is described; an attempt failing with it is not retried.
const PRIVATE_ONLY: &str = "resolves only to private, loopback or link-local addresses";

/// Most of a response body kept with an attempt.
const BODY_KEPT: usize = 1024;

/// When to try again after a failed attempt.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    /// Delay after the first failure; it doubles with each further one.
    pub base: Duration,
    /// Longest delay between two attempts.
    pub max: Duration,
    /// After this long since the job was queued, it is given up (dead).
    pub horizon: Duration,
}

impl RetrySchedule {
    /// The next step after `attempts` failed attempts: a time ±25 % around the backoff (never
    /// before what `Retry-After` asked), or dead past the horizon.
    pub fn next(
        &self,
        attempts: i64,
        retry_after: Option<Duration>,
        created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Next {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let backoff = self.base.saturating_mul(2u32.saturating_pow(doublings));
        let jittered = backoff
            .mul_f64(rand::rng().random_range(0.75..1.25))
            .min(self.max);
        let delay = retry_after.map_or(jittered, |r| r.max(jittered));
        let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let horizon = chrono::Duration::from_std(self.horizon).unwrap_or(chrono::Duration::MAX);
        if at > created_at + horizon {
            Next::Dead
        } else {
            Next::RetryAt(at)
        }
    }
}

/// Addresses a webhook may not reach unless private delivery is allowed: loopback, private,
/// link-local, shared, documentation, multicast and reserved ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [o0, o1, o2, _] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_multicast()
                || o0 == 0
                || o0 >= 240
                || (o0 == 100 && (o1 & 0xc0) == 64)
                || (o0 == 198 && (o1 & 0xfe) == 18)
                || (o0 == 192 && o1 == 0 && o2 == 0))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let s = a.segments();
                let embedded = |hi: u16, lo: u16| {
                    IpAddr::V4(std::net::Ipv4Addr::new(
                        (hi >> 8) as u8,
                        hi as u8,
                        (lo >> 8) as u8,
                        lo as u8,
                    ))
                };
                // NAT64 and 6to4 carry an IPv4 address that decides where the packet goes.
                if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                    return is_public(embedded(s[6], s[7]));
                }
                if s[0] == 0x2002 {
                    return is_public(embedded(s[1], s[2]));
                }
                // IPv4-compatible (`::a.b.c.d`, deprecated but still routed to the IPv4
                // address by some stacks) and IPv4-translated (`::ffff:0:a.b.c.d`) addresses,
                // local-use NAT64 (64:ff9b:1::/48) and the IETF protocol block (2001::/23,
                // Teredo among it, which hides an IPv4 address): never a webhook receiver.
                if s[0..6] == [0, 0, 0, 0, 0, 0]
                    || (s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0)
                    || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                    || (s[0] == 0x2001 && s[1] < 0x200)
                {
                    return false;
                }
                !(a.is_loopback()
                    || a.is_unspecified()
                    || a.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80
                    || (s[0] & 0xffc0) == 0xfec0
                    || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])
                    || (s[0] == 0x2001 && s[1] == 0x0db8))
            }
        },
    }
}

/// Resolves names and keeps only public addresses, so a webhook cannot be pointed at the
/// server's own network by a name that resolves there. Checking after resolution (not the
/// URL's text) is what stops DNS tricks.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} {PRIVATE_ONLY}", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for outbound deliveries: 5 s to connect, 15 s in all, no redirects.
pub fn http_client(allow_private: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve names itself, past the check below.
        .no_proxy()
        .user_agent(concat!("AgentNexus-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build().expect("the HTTP client builds")
}

/// What an attempt came to, before it is recorded.
pub(crate) struct Outcome {
    attempt: Attempt,
    /// The receiver's `Retry-After`, if it sent one.
    retry_after: Option<Duration>,
    /// Whether trying again could help.
    retryable: bool,
    delivered: bool,
}

impl Outcome {
    /// An attempt that got no answer (or was not made).
    pub(crate) fn failed(job: &Job, started: Instant, error: String, retryable: bool) -> Outcome {
        Outcome {
            attempt: Attempt {
                attempt: job.attempts,
                attempted_at: String::new(),
                status_code: None,
                latency_ms: started.elapsed().as_millis() as i64,
                error: Some(error),
                response_body: None,
            },
            retry_after: None,
            retryable,
            delivered: false,
        }
    }

    /// An attempt the receiver answered: delivered unless `error` says why not.
    pub(crate) fn answered(
        job: &Job,
        started: Instant,
        answer: &Answer,
        error: Option<String>,
        retryable: bool,
    ) -> Outcome {
        let kept = &answer.body[..answer.body.len().min(BODY_KEPT)];
        Outcome {
            attempt: Attempt {
                attempt: job.attempts,
                attempted_at: String::new(),
                status_code: Some(answer.status.as_u16()),
                latency_ms: started.elapsed().as_millis() as i64,
                error: error.clone(),
                response_body: (!kept.is_empty())
                    .then(|| String::from_utf8_lossy(kept).into_owned()),
            },
            retry_after: answer.retry_after,
            retryable,
            delivered: error.is_none(),
        }
    }
}

/// What a receiver answered.
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    /// Its `Retry-After`, in seconds.
    pub retry_after: Option<Duration>,
    /// At most the first `limit` bytes of the body.
    pub body: Vec<u8>,
}

/// Sends a request and reads its answer, keeping at most `limit` bytes of the body. A
/// transport failure comes back as what to record, and whether retrying could help.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    limit: usize,
) -> Result<Answer, (String, bool)> {
    let mut response = request.send().await.map_err(|e| {
        let why = describe(&e);
        let retryable = !why.contains(PRIVATE_ONLY);
        (why, retryable)
    })?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// Runs until `stop`: claims what is due, up to `concurrency` at a time, and waits for a
/// delivery to end, a new job in this process, the next due time or the next poll. Finished
/// attempts are recorded together, one transaction for all that ended meanwhile.
pub async fn run(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let worker = format!("wrk_{}", ulid::Ulid::new().to_string().to_lowercase());
    let config = state.config.delivery();
    let mut inflight: JoinSet<Finished> = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let capacity = config.concurrency.saturating_sub(inflight.len());
        if capacity > 0 {
            match state
                .store
                .claim_jobs(
                    &worker,
                    state.now(),
                    config.lease,
                    capacity as u32,
                    config.per_workspace,
                )
                .await
            {
                Ok(jobs) => {
                    let claimed = !jobs.is_empty();
                    for job in jobs {
                        inflight.spawn(perform(state.clone(), job));
                    }
                    if claimed {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming jobs failed"),
            }
        }
        // With every slot busy, only a finished delivery (or stop) is worth waking for.
        let wait = if inflight.len() >= config.concurrency {
            config.poll
        } else {
            match state.store.next_job_at().await {
                Ok(Some(at)) => (at - state.now()).to_std().unwrap_or_default(),
                _ => config.poll,
            }
            .clamp(Duration::from_millis(5), config.poll)
        };
        let finished = tokio::select! {
            Some(done) = inflight.join_next(), if !inflight.is_empty() => Some(done),
            _ = state.store.jobs_ready().notified() => None,
            _ = tokio::time::sleep(wait) => None,
            _ = stop.wait_for(|s| *s) => break,
        };
        if let Some(done) = finished {
            record(&state, &worker, done, &mut inflight).await;
        }
    }
    // Every delivery under way ends within its 15 s timeout; let them, and record them.
    while let Some(done) = inflight.join_next().await {
        record(&state, &worker, done, &mut inflight).await;
    }
}

/// Records one finished delivery and every other that has finished by now.
async fn record(
    state: &AppState,
    worker: &str,
    first: Result<Finished, tokio::task::JoinError>,
    inflight: &mut JoinSet<Finished>,
) {
    let mut finished = Vec::new();
    let mut next = Some(first);
    while let Some(result) = next {
        match result {
            Ok(f) => finished.push(f),
            // A panicked delivery is not recorded; its lease runs out and it is tried again.
            Err(e) => tracing::error!(error = %e, "a delivery task failed"),
        }
        next = inflight.try_join_next();
    }
    if finished.is_empty() {
        return;
    }
    if let Err(e) = state.store.finish_jobs(worker, &finished).await {
        // The leases run out and the jobs are attempted again: late, never lost.
        tracing::error!(error = %e, count = finished.len(), "recording delivery attempts failed");
    }
}

/// Performs one job; what it came to is recorded by the worker.
async fn perform(state: Arc<AppState>, job: Job) -> Finished {
    // The whole attempt (secrets included) ends well inside the lease, so no other worker
    // can take the job while this one still works on it.
    let bound = (state.config.delivery().lease - chrono::Duration::seconds(5))
        .to_std()
        .unwrap_or(Duration::from_secs(15));
    let attempt = async {
        match job.kind {
            JobKind::Webhook => webhook(&state, &job).await,
            JobKind::Email => email(&state, &job).await,
            JobKind::Slack => super::chat::slack(&state, &job).await,
            JobKind::Teams => super::chat::teams(&state, &job).await,
        }
    };
    let (outcome, summary) = match tokio::time::timeout(bound, attempt).await {
        Ok(done) => done,
        Err(_) => (
            Outcome {
                attempt: Attempt {
                    attempt: job.attempts,
                    attempted_at: String::new(),
                    status_code: None,
                    latency_ms: bound.as_millis() as i64,
                    error: Some("the attempt ran out of time".into()),
                    response_body: None,
                },
                retry_after: None,
                retryable: true,
                delivered: false,
            },
            json!({
                "event": job.payload["body"]["event"],
                "url": without_query(job.payload["url"].as_str().unwrap_or_default()),
            }),
        ),
    };
    let now = state.now();
    let next = if outcome.delivered {
        Next::Done
    } else if !outcome.retryable {
        Next::Dead
    } else {
        state
            .config
            .delivery()
            .retry
            .next(job.attempts, outcome.retry_after, job.created_at, now)
    };
    metrics::histogram!("agentnexus_webhook_latency_seconds")
        .record(outcome.attempt.latency_ms as f64 / 1000.0);
    let label = match next {
        Next::Done => "delivered",
        Next::RetryAt(_) => "retrying",
        Next::Dead => "dead",
    };
    metrics::counter!("agentnexus_deliveries_total", "kind" => job.kind.as_str(), "outcome" => label)
        .increment(1);
    Finished {
        job,
        attempt: outcome.attempt,
        next,
        summary,
        at: now,
    }
}

/// POSTs one webhook event, signed with every active secret of its workspace.
async fn webhook(state: &AppState, job: &Job) -> (Outcome, Value) {
    let url = job.payload["url"].as_str().unwrap_or_default().to_owned();
    let body = serde_json::to_vec(&job.payload["body"]).unwrap_or_default();
    let summary = json!({"event": job.payload["body"]["event"], "url": without_query(&url)});
    let started = Instant::now();
    let failed = |error: String, retryable: bool| Outcome::failed(job, started, error, retryable);
    if let Err(why) = check_destination(&url, state.config.webhook_allow_private) {
        return (failed(why, false), summary);
    }
    let secrets = match state.signing_secrets(&job.tenant).await {
        Ok(s) => s,
        Err(e) => {
            // Most likely servers sharing a database with different AGENTNEXUS_SECRET_KEYs.
            tracing::error!(error = %e, job = %job.id, "cannot sign a webhook");
            return (failed(format!("no signing secret: {e}"), true), summary);
        }
    };
    let timestamp = state.now().timestamp();
    let request = state
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("webhook-id", &job.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            crate::webhooks::signature_header(&secrets, &job.id, timestamp, &body),
        )
        .body(body);
    match exchange(request, BODY_KEPT).await {
        Ok(answer) => {
            let error = (!answer.status.is_success())
                .then(|| format!("the receiver answered {}", answer.status));
            (
                Outcome::answered(job, started, &answer, error, true),
                summary,
            )
        }
        Err((why, retryable)) => (failed(why, retryable), summary),
    }
}

/// Sends one e-mail over SMTP, opening the sealed link or code it carries.
async fn email(state: &AppState, job: &Job) -> (Outcome, Value) {
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let p = &job.payload;
    let text_of = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
    let (to, subject) = (text_of("to"), text_of("subject"));
    let summary = json!({"to": to, "subject": subject});
    let started = Instant::now();
    let outcome = |status_code: Option<u16>, error: Option<String>, retryable: bool| Outcome {
        attempt: Attempt {
            attempt: job.attempts,
            attempted_at: String::new(),
            status_code,
            latency_ms: started.elapsed().as_millis() as i64,
            error: error.clone(),
            response_body: None,
        },
        retry_after: None,
        retryable,
        delivered: error.is_none(),
    };
    let Some(url) = state.config.smtp_url.as_deref() else {
        return (
            outcome(
                None,
                Some("no SMTP server configured (AGENTNEXUS_SMTP_URL)".into()),
                true,
            ),
            summary,
        );
    };
    let mut text = text_of("text");
    let workspace_id = job.tenant.workspace_id();
    for (field, placeholder, purpose) in [
        ("token", "{link}", Purpose::LinkToken { workspace_id }),
        ("code", "{code}", Purpose::OneTimeCode { workspace_id }),
    ] {
        if let Some(sealed) = p[field].as_str() {
            match state.cipher.open(sealed, purpose) {
                // Once, where the message put it: a `{link}` in a proposal's text stays text.
                Ok(secret) if field == "token" => {
                    text = text.replacen(
                        placeholder,
                        &format!("{}/approvals/{secret}", state.public_url()),
                        1,
                    );
                }
                Ok(secret) => text = text.replacen(placeholder, &secret, 1),
                Err(e) => {
                    return (
                        outcome(
                            None,
                            Some(format!("cannot open the e-mail's secret: {e}")),
                            true,
                        ),
                        summary,
                    );
                }
            }
        }
    }
    let message = (|| {
        Message::builder()
            .from(
                state
                    .config
                    .smtp_from
                    .parse()
                    .map_err(|e| format!("AGENTNEXUS_SMTP_FROM: {e}"))?,
            )
            .to(to.parse().map_err(|e| format!("recipient {to}: {e}"))?)
            .subject(subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| e.to_string())
    })();
    let message = match message {
        Ok(m) => m,
        Err(why) => return (outcome(None, Some(why), false), summary),
    };
    let mailer = match AsyncSmtpTransport::<Tokio1Executor>::from_url(url) {
        Ok(b) => b.timeout(Some(Duration::from_secs(15))).build(),
        Err(e) => {
            return (
                outcome(None, Some(format!("AGENTNEXUS_SMTP_URL: {e}")), true),
                summary,
            );
        }
    };
    match mailer.send(message).await {
        Ok(response) => {
            let code = response.code().to_string().parse().ok();
            (outcome(code, None, true), summary)
        }
        Err(e) => {
            let permanent = e.is_permanent();
            (
                outcome(None, Some(format!("SMTP: {e}")), !permanent),
                summary,
            )
        }
    }
}

/// Refuses what no retry can fix: a URL that is not http(s), or a literal address in a
/// private range (names are checked after resolution, by the client's resolver).
pub(crate) fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid webhook_url: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("webhook_url must be http or https".into());
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
        Some(url::Host::Domain(_)) => None,
        None => return Err("webhook_url has no host".into()),
    };
    match literal {
        Some(ip) if !allow_private && !is_public(ip) => Err(format!(
            "{ip} is a private, loopback or link-local address; refused \
             (AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
        )),
        _ => Ok(()),
    }
}

/// A URL as the audit trail keeps it: without its query, which may carry a token.
pub(crate) fn without_query(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_owned(),
    }
}

/// A transport error in a sentence, without the URL's query (which may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "192.0.0.8",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fec0::1",
            "100::1",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "::ffff:0:127.0.0.1",
            "64:ff9b:1::a00:1",
            "2001::5efe:7f00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_private_destinations_are_refused() {
        assert!(check_destination("http://127.0.0.1:9/hook", false).is_err());
        assert!(check_destination("http://[::1]/hook", false).is_err());
        assert!(check_destination("http://[::127.0.0.1]:9/hook", false).is_err());
        assert!(check_destination("http://[::ffff:7f00:1]/hook", false).is_err());
        assert!(check_destination("http://169.254.169.254/latest", false).is_err());
        assert!(check_destination("http://127.0.0.1:9/hook", true).is_ok());
        assert!(check_destination("https://hooks.example.com/x", false).is_ok());
        assert!(check_destination("ftp://hooks.example.com/x", true).is_err());
    }

    #[test]
    fn backoff_grows_honours_retry_after_and_gives_up() {
        let s = RetrySchedule {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            horizon: Duration::from_secs(86_400),
        };
        let now = Utc::now();
        let delay = |n, ra| match s.next(n, ra, now, now) {
            Next::RetryAt(at) => (at - now).num_milliseconds(),
            other => panic!("{other:?}"),
        };
        assert!((7_500..=12_500).contains(&delay(1, None)));
        assert!((30_000..=50_000).contains(&delay(3, None)));
        assert!(delay(30, None) <= 4_500_000, "capped");
        assert!(delay(1, Some(Duration::from_secs(120))) >= 120_000);
        assert_eq!(
            s.next(5, None, now - chrono::Duration::hours(24), now),
            Next::Dead
        );
    }
}
