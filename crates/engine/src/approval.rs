//! The approval state machine (SPEC §5): what one person's decision, a passed deadline or a
//! one-time code does to an evaluation waiting for people. Pure: the store reads the facts in
//! its transaction, asks here, and writes down the answer.

use chrono::{DateTime, Duration, Utc};

use crate::OnTimeout;

/// Most one-time codes one secure link may be sent.
pub const CODES_PER_LINK: i64 = 5;

/// Most wrong codes one secure link takes, across all its codes.
pub const WRONG_CODES_PER_LINK: i64 = 5;

/// The stage a decision or a deadline is about, as it stands before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageState {
    pub index: i64,
    /// Approvals it needs.
    pub required: i64,
    /// Approvals recorded on it so far, not counting the decision at hand.
    pub approvals: i64,
    pub on_timeout: OnTimeout,
    /// Whether a stage follows it.
    pub has_next: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approve,
    Reject,
}

impl Vote {
    pub fn as_str(self) -> &'static str {
        match self {
            Vote::Approve => "approve",
            Vote::Reject => "reject",
        }
    }
}

/// One person's decision, with what separation of duties needs to know about them.
#[derive(Debug, Clone, Copy)]
pub struct Ballot<'a> {
    /// Their e-mail address, normalised.
    pub approver: &'a str,
    pub vote: Vote,
    /// Whom the agent acts for (`context.on_behalf_of`), normalised.
    pub on_behalf_of: Option<&'a str>,
    /// Whether they approved another stage of the same evaluation.
    pub approved_another_stage: bool,
}

/// Why a decision is refused: separation of duties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The agent acts on the approver's own behalf.
    OnTheirBehalf,
    /// The approver approved an earlier stage already.
    SecondStage,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::OnTheirBehalf => "a person cannot decide on a proposal made on their behalf",
            Refusal::SecondStage => "the same person cannot approve two stages of one evaluation",
        }
    }
}

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageEnd {
    Passed,
    Rejected,
    Expired,
}

impl StageEnd {
    /// The stage's status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StageEnd::Passed => "passed",
            StageEnd::Rejected => "rejected",
            StageEnd::Expired => "expired",
        }
    }
}

/// How an evaluation waiting for people ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Rejected,
    Expired,
}

/// What a decision or a deadline does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The stage keeps waiting for more approvals.
    Waiting { approvals: i64 },
    /// The stage ended and the next one starts waiting.
    Advance {
        ended: StageEnd,
        approvals: i64,
        next: i64,
    },
    /// The stage ended and with it the evaluation.
    Conclude {
        ended: StageEnd,
        approvals: i64,
        outcome: Outcome,
        reason: String,
    },
}

/// A person's decision on a waiting stage: a rejection ends the evaluation; the approval
/// that meets the stage's quorum passes it, starting the next stage or approving the
/// evaluation. Refused, whatever the vote, from the person the agent acts for, and as an
/// approval from someone who approved another stage.
pub fn decide(stage: &StageState, ballot: &Ballot<'_>) -> Result<Transition, Refusal> {
    if ballot.on_behalf_of == Some(ballot.approver) {
        return Err(Refusal::OnTheirBehalf);
    }
    match ballot.vote {
        Vote::Reject => Ok(Transition::Conclude {
            ended: StageEnd::Rejected,
            approvals: stage.approvals,
            outcome: Outcome::Rejected,
            reason: format!("rejected by {}", ballot.approver),
        }),
        Vote::Approve if ballot.approved_another_stage => Err(Refusal::SecondStage),
        Vote::Approve => {
            let approvals = stage.approvals + 1;
            Ok(if approvals < stage.required {
                Transition::Waiting { approvals }
            } else if stage.has_next {
                Transition::Advance {
                    ended: StageEnd::Passed,
                    approvals,
                    next: stage.index + 1,
                }
            } else {
                Transition::Conclude {
                    ended: StageEnd::Passed,
                    approvals,
                    outcome: Outcome::Approved,
                    reason: "approved".into(),
                }
            })
        }
    }
}

/// A waiting stage past its deadline: with `on_timeout: escalate` and a stage after it, that
/// stage starts; otherwise the evaluation expires.
pub fn expire(stage: &StageState) -> Transition {
    if stage.has_next && stage.on_timeout == OnTimeout::Escalate {
        Transition::Advance {
            ended: StageEnd::Expired,
            approvals: stage.approvals,
            next: stage.index + 1,
        }
    } else {
        Transition::Conclude {
            ended: StageEnd::Expired,
            approvals: stage.approvals,
            outcome: Outcome::Expired,
            reason: "timeout".into(),
        }
    }
}

/// When a stage started at `started` with a timeout of `secs` ends; `None` when out of range.
/// Timeouts are at most a year (documents with longer ones are refused), but stored values
/// are checked all the same: a bad one is an error for its stage, never a panic.
pub fn deadline(started: DateTime<Utc>, secs: i64) -> Option<DateTime<Utc>> {
    Duration::try_seconds(secs).and_then(|d| started.checked_add_signed(d))
}

/// What asking for a one-time code does, given how many the link was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRequest {
    Send,
    /// The link had all its codes: it locks.
    Lock,
}

pub fn request_code(codes_sent: i64) -> CodeRequest {
    if codes_sent >= CODES_PER_LINK {
        CodeRequest::Lock
    } else {
        CodeRequest::Send
    }
}

/// What a one-time code given with a decision comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Right,
    /// Wrong or expired: counted, and the link locks at [`WRONG_CODES_PER_LINK`].
    Wrong {
        attempts: i64,
        locked: bool,
    },
}

/// Checks a code's hash against the link's current one, in time independent of where they
/// differ. `fresh` says whether the current code is still within its lifetime; `attempts`
/// counts the wrong codes the link took before.
pub fn check_code(current: Option<&str>, fresh: bool, given: &str, attempts: i64) -> CodeCheck {
    let right = current.is_some_and(|c| constant_time_eq(c, given));
    if fresh && right {
        CodeCheck::Right
    } else {
        let attempts = attempts + 1;
        CodeCheck::Wrong {
            attempts,
            locked: attempts >= WRONG_CODES_PER_LINK,
        }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(required: i64, approvals: i64, has_next: bool, on_timeout: OnTimeout) -> StageState {
        StageState {
            index: 0,
            required,
            approvals,
            on_timeout,
            has_next,
        }
    }

    fn ballot(approver: &str, vote: Vote) -> Ballot<'_> {
        Ballot {
            approver,
            vote,
            on_behalf_of: None,
            approved_another_stage: false,
        }
    }

    #[test]
    fn a_stage_passes_at_its_quorum_and_not_before() {
        let two_of_three = stage(2, 0, true, OnTimeout::Reject);
        assert_eq!(
            decide(&two_of_three, &ballot("a@x.io", Vote::Approve)),
            Ok(Transition::Waiting { approvals: 1 })
        );
        let one_in = StageState {
            approvals: 1,
            ..two_of_three
        };
        assert_eq!(
            decide(&one_in, &ballot("b@x.io", Vote::Approve)),
            Ok(Transition::Advance {
                ended: StageEnd::Passed,
                approvals: 2,
                next: 1
            })
        );
        let last = StageState {
            has_next: false,
            ..one_in
        };
        assert_eq!(
            decide(&last, &ballot("b@x.io", Vote::Approve)),
            Ok(Transition::Conclude {
                ended: StageEnd::Passed,
                approvals: 2,
                outcome: Outcome::Approved,
                reason: "approved".into()
            })
        );
    }

    #[test]
    fn one_rejection_ends_the_evaluation_whatever_the_quorum() {
        let s = stage(3, 2, true, OnTimeout::Escalate);
        assert_eq!(
            decide(&s, &ballot("c@x.io", Vote::Reject)),
            Ok(Transition::Conclude {
                ended: StageEnd::Rejected,
                approvals: 2,
                outcome: Outcome::Rejected,
                reason: "rejected by c@x.io".into()
            })
        );
    }

    #[test]
    fn separation_of_duties() {
        let s = stage(1, 0, false, OnTimeout::Reject);
        for vote in [Vote::Approve, Vote::Reject] {
            let mine = Ballot {
                on_behalf_of: Some("a@x.io"),
                ..ballot("a@x.io", vote)
            };
            assert_eq!(decide(&s, &mine), Err(Refusal::OnTheirBehalf));
        }
        let someone_else = Ballot {
            on_behalf_of: Some("b@x.io"),
            ..ballot("a@x.io", Vote::Approve)
        };
        assert!(decide(&s, &someone_else).is_ok());
        // Approving a second stage is refused; rejecting it is not.
        let again = Ballot {
            approved_another_stage: true,
            ..ballot("a@x.io", Vote::Approve)
        };
        assert_eq!(decide(&s, &again), Err(Refusal::SecondStage));
        let reject = Ballot {
            approved_another_stage: true,
            ..ballot("a@x.io", Vote::Reject)
        };
        assert!(matches!(
            decide(&s, &reject),
            Ok(Transition::Conclude {
                outcome: Outcome::Rejected,
                ..
            })
        ));
    }

    #[test]
    fn deadlines_escalate_only_to_a_next_stage() {
        assert_eq!(
            expire(&stage(1, 0, true, OnTimeout::Escalate)),
            Transition::Advance {
                ended: StageEnd::Expired,
                approvals: 0,
                next: 1
            }
        );
        for s in [
            stage(1, 0, false, OnTimeout::Escalate),
            stage(2, 1, true, OnTimeout::Reject),
        ] {
            assert!(matches!(
                expire(&s),
                Transition::Conclude {
                    ended: StageEnd::Expired,
                    outcome: Outcome::Expired,
                    ..
                }
            ));
        }
    }

    #[test]
    fn deadlines_out_of_range_are_none() {
        let now = Utc::now();
        assert_eq!(deadline(now, 60), Some(now + Duration::seconds(60)));
        assert_eq!(deadline(now, i64::MAX), None);
        assert_eq!(deadline(DateTime::<Utc>::MAX_UTC, 1), None);
    }

    #[test]
    fn codes_lock_the_link_at_their_limits() {
        assert_eq!(request_code(0), CodeRequest::Send);
        assert_eq!(request_code(CODES_PER_LINK - 1), CodeRequest::Send);
        assert_eq!(request_code(CODES_PER_LINK), CodeRequest::Lock);
        assert_eq!(check_code(Some("h1"), true, "h1", 3), CodeCheck::Right);
        assert_eq!(
            check_code(Some("h1"), false, "h1", 0),
            CodeCheck::Wrong {
                attempts: 1,
                locked: false
            },
            "an expired code is wrong"
        );
        assert_eq!(
            check_code(None, true, "h1", 0),
            CodeCheck::Wrong {
                attempts: 1,
                locked: false
            }
        );
        assert_eq!(
            check_code(Some("h1"), true, "h2", WRONG_CODES_PER_LINK - 1),
            CodeCheck::Wrong {
                attempts: WRONG_CODES_PER_LINK,
                locked: true
            }
        );
    }
}
