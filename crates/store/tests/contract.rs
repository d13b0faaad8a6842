//! The contract every backend keeps, run on SQLite and PostgreSQL alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentnexus_engine::{Effect, Format, Proposal, ProposalFields, compile_policy};
use agentnexus_store::{
    Actor, Attempt, EventKind, Finished, NewAuditEvent, NewEvaluation, NewOwner, Next,
    PolicyChange, PolicySource, Recorded, Scope, Status, Store, StoreConfig, Tenant, Verification,
};
use agentnexus_testkit::{TestDatabase, both_backends};
use chrono::{Duration, Utc};
use serde_json::json;

async fn open(db: &TestDatabase) -> Store {
    Store::open(StoreConfig::new(&db.url))
        .await
        .expect("store opens")
}

async fn workspace(store: &Store, name: &str) -> Tenant {
    let owner = NewOwner {
        email: format!("owner@{name}.example"),
        name: None,
        password_hash: "$argon2id$not-used".into(),
    };
    store
        .create_workspace(name, owner, Actor::Cli, Utc::now())
        .await
        .expect("workspace")
        .1
}

fn evaluation(tenant: &Tenant, agent: &str, idempotency_key: Option<&str>) -> NewEvaluation {
    let proposal = Proposal::new(ProposalFields {
        agent_id: Some(agent.into()),
        action: Some("stripe.refund".into()),
        cost_cents: Some(3),
        ..Default::default()
    })
    .unwrap();
    let created_at = Utc::now();
    NewEvaluation {
        id: agentnexus_store::new_evaluation_id(created_at),
        tenant: tenant.clone(),
        key_id: None,
        proposal_hash: proposal.hash(),
        proposal,
        trace: None,
        idempotency_key: idempotency_key.map(str::to_owned),
        webhook_url: None,
        decision: Effect::Allow,
        reason: "ok".into(),
        matched_rules: vec![],
        errors: vec![],
        approval: None,
        stages: vec![],
        notices: vec![],
        policy_versions: BTreeMap::new(),
        created_at,
    }
}

/// An evaluation waiting for approval through the stages given (YAML list items).
fn pending_evaluation(tenant: &Tenant, agent: &str, stages: &str) -> NewEvaluation {
    let policy = compile_policy(
        &format!(
            "name: p\nrules:\n  - id: r\n    effect: require_approval\n    approval:\n      stages:\n{stages}"
        ),
        Format::Yaml,
    )
    .unwrap();
    let mut ev = evaluation(tenant, agent, None);
    ev.decision = Effect::RequireApproval;
    ev.stages = policy.document.rules[0].approval.clone().unwrap().stages;
    ev
}

/// `ev`, proposing `action` instead (the same agent, a cost of 3).
fn doing(mut ev: NewEvaluation, action: &str) -> NewEvaluation {
    ev.proposal = Proposal::new(ProposalFields {
        agent_id: Some(ev.proposal.agent_id.clone()),
        action: Some(action.into()),
        cost_cents: Some(3),
        ..Default::default()
    })
    .unwrap();
    ev.proposal_hash = ev.proposal.hash();
    ev
}

fn head(v: &Verification) -> (i64, String) {
    match v {
        Verification::Ok {
            events, head_hash, ..
        } => (*events, head_hash.clone()),
        other => panic!("chain broken: {other:?}"),
    }
}

both_backends!(
    concurrent_writers_never_fork_the_chain,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        // Two stores on one database stand for two server processes.
        let (a, b) = (open(&db).await, open(&db).await);
        let tenant = workspace(&a, "acme").await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let tenant = tenant.clone();
            tasks.push(tokio::spawn(async move {
                if i % 4 == 0 {
                    let event = NewAuditEvent {
                        kind: EventKind::ApprovalViewed,
                        actor: Actor::System,
                        evaluation_id: None,
                        data: json!({"i": i}),
                        occurred_at: Utc::now(),
                    };
                    store.append_audit(&tenant, &[event]).await.unwrap();
                } else {
                    let r = store
                        .record_evaluation(evaluation(&tenant, "bot", None))
                        .await;
                    assert_eq!(r.unwrap(), Recorded::Created);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = a.verify_audit(&tenant).await.unwrap();
        // 3 events at creation, then one per task.
        assert_eq!(head(&v).0, 3 + 40);
        let page = a.audit_page(&tenant, 0, 1000).await.unwrap();
        let seqs: Vec<i64> = page.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=43).collect::<Vec<_>>(), "gap-free");
        for pair in page.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        a.close().await;
        b.close().await;
        db.drop_database().await;
    }
);

both_backends!(tampering_is_detected_and_refused, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let store = open(&db).await;
    let tenant = workspace(&store, "acme").await;
    for _ in 0..5 {
        store
            .record_evaluation(evaluation(&tenant, "bot", None))
            .await
            .unwrap();
    }
    assert!(store.verify_audit(&tenant).await.unwrap().is_ok());

    // The product has no update path, and the database refuses one.
    let update = "UPDATE audit_events SET data = '{\"decision\":\"deny\"}' WHERE seq = 5";
    let refused = sqlx::query(update).execute(store.pool()).await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    let refused = sqlx::query("DELETE FROM audit_events WHERE seq = 8")
        .execute(store.pool())
        .await;
    assert!(refused.is_err());

    // Someone with the database's keys goes around the trigger.
    agentnexus_testkit::tamper(
        store.pool(),
        backend,
        &format!("{update} AND workspace_id = '{}'", tenant.workspace_id()),
    )
    .await;
    match store.verify_audit(&tenant).await.unwrap() {
        Verification::Broken { broken_at_seq, .. } => assert_eq!(broken_at_seq, 5),
        ok => panic!("tampering went unnoticed: {ok:?}"),
    }
    store.close().await;
    db.drop_database().await;
});

both_backends!(
    events_forged_past_the_head_are_detected,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        let last = store
            .audit_page(&tenant, 0, 100)
            .await
            .unwrap()
            .pop()
            .unwrap();
        // Inserts are allowed (the trail grows), so a forger can append a row with a valid-looking
        // prev_hash without moving the head.
        sqlx::query(
            "INSERT INTO audit_events (workspace_id, seq, occurred_at, type, actor, evaluation_id, \
         data, prev_hash, hash) VALUES ($1, 4, 0, 'key.created', 'cli', NULL, '{}', $2, $3)",
        )
        .bind(tenant.workspace_id())
        .bind(&last.hash)
        .bind("f".repeat(64))
        .execute(store.pool())
        .await
        .unwrap();
        match store.verify_audit(&tenant).await.unwrap() {
            Verification::Broken { broken_at_seq, .. } => assert_eq!(broken_at_seq, 4),
            ok => panic!("a forged event went unnoticed: {ok:?}"),
        }
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(
    idempotency_keys_return_the_first_evaluation,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        // Many at once, so several share a batch: exactly one is created.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (store, tenant) = (store.clone(), tenant.clone());
            tasks.push(tokio::spawn(async move {
                let ev = evaluation(&tenant, "bot", Some("refund-ch_1"));
                let id = ev.id.clone();
                (id, store.record_evaluation(ev).await.unwrap())
            }));
        }
        let mut created = Vec::new();
        let mut existing = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (id, Recorded::Created) => created.push(id),
                (_, Recorded::Existing(id)) => existing.push(id),
            }
        }
        assert_eq!(created.len(), 1);
        assert!(existing.iter().all(|id| *id == created[0]));
        let now = Utc::now();
        let found = store
            .idempotent_evaluation(&tenant, "refund-ch_1", now)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(created[0].as_str()));
        // After 24 hours the key is free again.
        let later = now + Duration::hours(25);
        assert_eq!(
            store
                .idempotent_evaluation(&tenant, "refund-ch_1", later)
                .await
                .unwrap(),
            None
        );
        let mut again = evaluation(&tenant, "bot", Some("refund-ch_1"));
        again.created_at = later;
        let again_id = again.id.clone();
        assert_eq!(
            store.record_evaluation(again).await.unwrap(),
            Recorded::Created
        );
        // And now names the new evaluation (the key's row was updated, not left alone).
        let found = store
            .idempotent_evaluation(&tenant, "refund-ch_1", later)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some(again_id.as_str()));
        // One audit event per created evaluation, none for the replays.
        assert_eq!(head(&store.verify_audit(&tenant).await.unwrap()).0, 3 + 2);
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(tenants_see_only_their_own_rows, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let store = open(&db).await;
    let (a, b) = (workspace(&store, "a").await, workspace(&store, "b").await);
    let ev = evaluation(&a, "bot", Some("k"));
    let id = ev.id.clone();
    store.record_evaluation(ev).await.unwrap();
    assert!(store.evaluation(&a, &id).await.unwrap().is_some());
    assert!(store.evaluation(&b, &id).await.unwrap().is_none());
    assert!(store.timeline(&b, &id).await.unwrap().is_empty());
    assert_eq!(
        store
            .idempotent_evaluation(&b, "k", Utc::now())
            .await
            .unwrap(),
        None
    );
    let key_of_a = store.keys(&a).await.unwrap().remove(0);
    assert!(matches!(
        store
            .revoke_key(&b, &key_of_a.id, Actor::Cli, Utc::now())
            .await,
        Err(agentnexus_store::StoreError::NotFound)
    ));
    assert_eq!(store.keys(&b).await.unwrap().len(), 1);
    // Each workspace has its own chain starting at 1.
    assert_eq!(head(&store.verify_audit(&b).await.unwrap()).0, 3);
    store.close().await;
    db.drop_database().await;
});

// A commit read from Git is one version of a policy: a second document under the same commit
// (another server's sync of it, or a rewritten history) changes nothing, and the store itself
// refuses a second version of one commit.
both_backends!(one_commit_is_one_version, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let store = open(&db).await;
    let tenant = workspace(&store, "acme").await;
    let doc = |effect: &str| format!("name: p\nrules:\n  - id: r\n    effect: {effect}\n");
    let change = |text: &'static str, source: PolicySource| PolicyChange {
        name: "p",
        document: text,
        format: "yaml",
        enabled: true,
        actor: Actor::System,
        source,
        now: Utc::now(),
    };
    let (allow, deny) = (doc("allow").leak() as &str, doc("deny").leak() as &str);
    let git = || PolicySource::Git("c0ffee".into());
    let (v1, made) = store
        .put_git_policy(&tenant, change(allow, git()), "c0ffee", "Alice <a@x>")
        .await
        .unwrap();
    assert_eq!(
        (v1.version, made, v1.author.as_str()),
        (1, true, "Alice <a@x>")
    );
    let (again, made) = store
        .put_git_policy(&tenant, change(deny, git()), "c0ffee", "Alice <a@x>")
        .await
        .unwrap();
    assert_eq!(
        (again.version, made, again.document.as_str()),
        (1, false, allow)
    );
    assert!(
        store
            .put_policy(&tenant, change(deny, git()))
            .await
            .is_err()
    );
    assert_eq!(store.policy_versions(&tenant, "p").await.unwrap().len(), 1);
    store.close().await;
    db.drop_database().await;
});

both_backends!(
    policy_versions_are_immutable_and_roll_back,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        let doc = |effect: &str| format!("name: p\nrules:\n  - id: r\n    effect: {effect}\n");
        // Each document from its own commit: one commit is one version of a policy.
        let put = |text: String, commit: &'static str| {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                let compiled = compile_policy(&text, Format::Yaml).unwrap();
                store
                    .put_policy(
                        &tenant,
                        PolicyChange {
                            name: compiled.name(),
                            document: &text,
                            format: "yaml",
                            enabled: true,
                            actor: Actor::Cli,
                            source: PolicySource::Git(commit.into()),
                            now: Utc::now(),
                        },
                    )
                    .await
                    .unwrap()
            }
        };
        assert_eq!(put(doc("allow"), "abc123").await.0.version, 1);
        // The same document again is not a change.
        let (same, changed) = put(doc("allow"), "abc123").await;
        assert_eq!((same.version, changed), (1, false));
        assert_eq!(put(doc("deny"), "def456").await.0.version, 2);
        let generation = store.policy_generation(&tenant).await.unwrap();
        let v3 = store
            .rollback_policy(&tenant, "p", 1, Actor::Cli, PolicySource::Cli, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            (v3.version, v3.document.as_str()),
            (3, doc("allow").as_str())
        );
        assert!(store.policy_generation(&tenant).await.unwrap() > generation);
        let v4 = store
            .disable_policy(&tenant, "p", Actor::Cli, PolicySource::Cli, Utc::now())
            .await
            .unwrap();
        assert!(!v4.enabled);
        let versions = store.policy_versions(&tenant, "p").await.unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![4, 3, 2, 1]
        );
        assert_eq!(versions[2].source, "git:def456");
        assert_eq!(
            versions[2].document,
            doc("deny"),
            "old versions never change"
        );
        assert!(matches!(
            store
                .rollback_policy(&tenant, "p", 9, Actor::Cli, PolicySource::Cli, Utc::now())
                .await,
            Err(agentnexus_store::StoreError::NotFound)
        ));
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(cost_is_attributed_per_agent_and_day, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let store = open(&db).await;
    let tenant = workspace(&store, "acme").await;
    let now = Utc::now();
    for agent in ["a", "a", "b"] {
        store
            .record_evaluation(evaluation(&tenant, agent, None))
            .await
            .unwrap();
    }
    let mut old = evaluation(&tenant, "a", None);
    old.created_at = now - Duration::days(40);
    store.record_evaluation(old).await.unwrap();
    let spend = store.spend(&tenant, "a", now).await.unwrap();
    assert_eq!((spend.today_cents, spend.month_cents), (6, 6));
    assert_eq!(store.spend(&tenant, "b", now).await.unwrap().today_cents, 3);
    // Costs are added up when the list index catches up (every 128 events); before and after,
    // spend counts each evaluation once.
    for _ in 0..130 {
        store
            .record_evaluation(evaluation(&tenant, "b", None))
            .await
            .unwrap();
    }
    let added: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT agent_id, cents, evaluations FROM agent_costs WHERE day = $1 ORDER BY agent_id",
    )
    .bind(now.format("%Y-%m-%d").to_string())
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(added.iter().any(|(agent, _, _)| agent == "b"), "{added:?}");
    let spend = store.spend(&tenant, "a", now).await.unwrap();
    assert_eq!((spend.today_cents, spend.month_cents), (6, 6));
    let spend = store.spend(&tenant, "b", now).await.unwrap();
    assert_eq!((spend.today_cents, spend.month_cents), (393, 393));
    store.close().await;
    db.drop_database().await;
});

both_backends!(
    final_evaluations_are_read_whole_from_their_audit_event,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let (tenant, other) = (
            workspace(&store, "acme").await,
            workspace(&store, "other").await,
        );
        // Everything an evaluation can carry, at a time the store keeps exactly (micros).
        let mut ev = evaluation(&tenant, "bot", Some("refund-ch_1"));
        ev.proposal = Proposal::new(ProposalFields {
            agent_id: Some("bot".into()),
            action: Some("stripe.refund".into()),
            resource: Some("customer/cus_1".into()),
            amount_cents: Some(agentnexus_engine::MAX_CENTS),
            cost_cents: Some(4),
            params: Some(json!({"charge": "ch_1", "n": [1, 2.5, {"deep": null}]})),
            context: Some(json!({"environment": "production", "on_behalf_of": "a@b.c"})),
        })
        .unwrap();
        ev.proposal_hash = ev.proposal.hash();
        ev.key_id = Some("key_1".into());
        ev.trace = Some(json!({"trace_id": "t1", "span_id": "s1"}));
        ev.webhook_url = Some("https://hooks.example.com/x".into());
        ev.decision = Effect::Deny;
        ev.reason = "production deletes are denied".into();
        ev.matched_rules = vec![agentnexus_engine::MatchedRule {
            policy: "payments".into(),
            rule: "deny-prod".into(),
            effect: Effect::Deny,
        }];
        ev.errors = vec![agentnexus_engine::RuleError {
            policy: "payments".into(),
            rule: "broken".into(),
            message: "no such field".into(),
        }];
        ev.policy_versions = BTreeMap::from([("payments".to_owned(), 3)]);
        ev.created_at =
            chrono::DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let expected = ev.to_evaluation();
        store.record_evaluation(ev).await.unwrap();
        let pending = pending_evaluation(
            &tenant,
            "bot",
            "        - {name: ops, approvers: [role:ops]}\n",
        );
        store.record_evaluation(pending).await.unwrap();

        // Only the pending evaluation, which humans will change, has a row.
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);
        let read = store.evaluation(&tenant, &expected.id).await.unwrap();
        assert_eq!(read.as_ref(), Some(&expected));
        assert_eq!(store.evaluation(&other, &expected.id).await.unwrap(), None);

        // Listed and filtered alike from the chain's tail and, once caught up, the index.
        let denied = agentnexus_store::EvaluationFilter {
            status: Some(Status::Denied),
            agent_id: Some("bot".into()),
            limit: 10,
            ..Default::default()
        };
        let listed = store
            .evaluations(&tenant, &denied)
            .await
            .unwrap()
            .evaluations;
        assert_eq!(listed, vec![expected.clone()]);
        for _ in 0..130 {
            store
                .record_evaluation(evaluation(&tenant, "bot", None))
                .await
                .unwrap();
        }
        let indexed: Vec<String> =
            sqlx::query_scalar("SELECT status FROM evaluation_index WHERE id = $1")
                .bind(&expected.id)
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(indexed, vec!["denied".to_owned()]);
        let listed = store
            .evaluations(&tenant, &denied)
            .await
            .unwrap()
            .evaluations;
        assert_eq!(listed, vec![expected.clone()]);
        // Found by the seq the index keeps, once caught up, as it was in the tail before.
        let read = store.evaluation(&tenant, &expected.id).await.unwrap();
        assert_eq!(read.as_ref(), Some(&expected));
        let timeline = store.timeline(&tenant, &expected.id).await.unwrap();
        let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["evaluation.created"]);
        assert!(
            store
                .timeline(&other, &expected.id)
                .await
                .unwrap()
                .is_empty()
        );
        let elsewhere = store
            .evaluations(&other, &denied)
            .await
            .unwrap()
            .evaluations;
        assert!(elsewhere.is_empty());
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(
    two_writers_keep_the_list_index_and_costs_whole,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        // Two stores on one database stand for two server processes: each writer's memory of
        // the chain holds only until the other appends, then catching up reads the chain back.
        let (a, b) = (open(&db).await, open(&db).await);
        let tenant = workspace(&a, "acme").await;
        let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for i in 0..400 {
            // Runs of 150 from each store, then alternating, so both ways of catching up run.
            let store = match i {
                0..150 => &a,
                150..300 => &b,
                _ if i % 2 == 0 => &a,
                _ => &b,
            };
            let agent = if i % 3 == 0 { "x" } else { "y" };
            let ev = evaluation(&tenant, agent, None);
            expected.entry(agent).or_default().push(ev.id.clone());
            store.record_evaluation(ev).await.unwrap();
        }
        let indexed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluation_index")
            .fetch_one(a.pool())
            .await
            .unwrap();
        assert!(indexed >= 256, "{indexed}");
        for (agent, ids) in &expected {
            let mut ids = ids.clone();
            ids.sort_unstable_by(|l, r| r.cmp(l));
            let filter = agentnexus_store::EvaluationFilter {
                agent_id: Some((*agent).to_owned()),
                limit: 500,
                ..Default::default()
            };
            for store in [&a, &b] {
                let listed: Vec<String> = store
                    .evaluations(&tenant, &filter)
                    .await
                    .unwrap()
                    .evaluations
                    .into_iter()
                    .map(|e| e.id)
                    .collect();
                assert_eq!(listed, ids);
                let spend = store.spend(&tenant, agent, Utc::now()).await.unwrap();
                assert_eq!(spend.today_cents, 3 * ids.len() as i64);
            }
        }
        a.close().await;
        b.close().await;
        db.drop_database().await;
    }
);

both_backends!(a_failing_evaluation_fails_alone, |backend| async move {
    let db = TestDatabase::new(backend).await;
    let store = open(&db).await;
    let tenant = workspace(&store, "acme").await;
    // Two pending evaluations with one id (the second row cannot be written) among others,
    // sent at once so that they share batches: only the duplicate fails.
    let stage = "        - {name: ops, approvers: [role:ops]}\n";
    let first = pending_evaluation(&tenant, "bot", stage);
    let mut twin = pending_evaluation(&tenant, "bot", stage);
    twin.id = first.id.clone();
    let mut batch = vec![first, twin];
    batch.extend((0..20).map(|_| evaluation(&tenant, "bot", None)));
    let tasks: Vec<_> = batch
        .into_iter()
        .map(|ev| {
            let store = store.clone();
            tokio::spawn(async move { store.record_evaluation(ev).await })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        failed += usize::from(t.await.unwrap().is_err());
    }
    assert_eq!(failed, 1);
    // 3 events at creation, one per evaluation written; the chain and the lists whole after
    // the index has caught up past them.
    for _ in 0..130 {
        store
            .record_evaluation(evaluation(&tenant, "bot", None))
            .await
            .unwrap();
    }
    assert_eq!(
        head(&store.verify_audit(&tenant).await.unwrap()).0,
        3 + 21 + 130
    );
    let all = agentnexus_store::EvaluationFilter {
        agent_id: Some("bot".into()),
        limit: 500,
        ..Default::default()
    };
    assert_eq!(
        store
            .evaluations(&tenant, &all)
            .await
            .unwrap()
            .evaluations
            .len(),
        21 + 130
    );
    store.close().await;
    db.drop_database().await;
});

both_backends!(
    pending_evaluations_keep_their_stages,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        let ev = pending_evaluation(
            &tenant,
            "bot",
            "        - {name: finance, approvers: [role:finance], timeout: 30m, on_timeout: escalate}\n        - {name: cfo, approvers: [cfo@example.com], required: 2}\n",
        );
        let id = ev.id.clone();
        let created = ev.created_at;
        let expected = Arc::new(ev.to_evaluation());
        store.record_evaluation(ev).await.unwrap();
        let read = store.evaluation(&tenant, &id).await.unwrap().unwrap();
        assert_eq!(read.status, Status::Pending);
        assert_eq!(read.stages.len(), 2);
        assert_eq!(read.stages[0].status.as_str(), "waiting");
        assert_eq!(read.stages[1].status.as_str(), "queued");
        assert_eq!(read.stages[1].required, 2);
        let micros = |t: chrono::DateTime<Utc>| t.timestamp_micros();
        assert_eq!(
            read.stages[0].expires_at.map(micros),
            Some(micros(created + Duration::minutes(30)))
        );
        assert_eq!(read.stages.len(), expected.stages.len());
        let pending = agentnexus_store::EvaluationFilter {
            status: Some(Status::Pending),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            store
                .evaluations(&tenant, &pending)
                .await
                .unwrap()
                .evaluations
                .len(),
            1
        );
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(
    evaluation_lists_read_the_index_and_the_chain_tail_alike,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        let pending = |agent: &str| {
            let stage =
                "        - {name: ops, approvers: [role:ops], timeout: 30m, on_timeout: reject}\n";
            pending_evaluation(&tenant, agent, stage)
        };
        let list = |status: Option<Status>, agent: Option<&str>, before: Option<&str>, limit| {
            let filter = agentnexus_store::EvaluationFilter {
                status,
                agent_id: agent.map(str::to_owned),
                before: before.map(str::to_owned),
                limit,
                ..Default::default()
            };
            let store = &store;
            let tenant = &tenant;
            async move {
                let page = store
                    .evaluations(tenant, &filter)
                    .await
                    .unwrap()
                    .evaluations;
                page.into_iter().map(|e| e.id).collect::<Vec<_>>()
            }
        };

        // One pending evaluation, then enough others (agents a and b) that the index catches
        // up past it, then one more pending at the tail.
        let old = pending("approver");
        let old_id = old.id.clone();
        store.record_evaluation(old).await.unwrap();
        let mut by_agent: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for i in 0..600 {
            let agent = if i % 2 == 0 { "a" } else { "b" };
            let ev = evaluation(&tenant, agent, None);
            by_agent.entry(agent).or_default().push(ev.id.clone());
            store.record_evaluation(ev).await.unwrap();
        }
        let new = pending("approver");
        let new_id = new.id.clone();
        store.record_evaluation(new).await.unwrap();

        // The index holds the first evaluations, not the last (so both halves are read).
        let indexed: Vec<String> = sqlx::query_scalar("SELECT id FROM evaluation_index")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert!(indexed.contains(&old_id));
        assert!(!indexed.contains(&new_id));

        let newest_first = |mut ids: Vec<String>| {
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids
        };
        for (agent, ids) in &by_agent {
            assert_eq!(ids.len(), 300);
            let expected = newest_first(ids.clone());
            assert_eq!(list(None, Some(agent), None, 500).await, expected);
            // Page by page, each evaluation once.
            let mut paged = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let page = list(None, Some(agent), before.as_deref(), 70).await;
                before = page.last().cloned();
                paged.extend(page);
                if before.is_none() {
                    break;
                }
            }
            assert_eq!(paged, expected);
        }
        let everything = newest_first(
            by_agent
                .values()
                .flatten()
                .cloned()
                .chain([old_id.clone(), new_id.clone()])
                .collect(),
        );
        assert_eq!(list(None, None, None, 25).await, everything[..25]);
        assert_eq!(
            list(None, None, Some(&everything[400]), 500).await,
            everything[401..]
        );
        let both = newest_first(vec![old_id.clone(), new_id.clone()]);
        assert_eq!(list(Some(Status::Pending), None, None, 10).await, both);
        assert_eq!(
            list(Some(Status::Pending), Some("a"), None, 10).await,
            Vec::<String>::new()
        );
        assert_eq!(
            list(Some(Status::Allowed), Some("b"), None, 500).await,
            newest_first(by_agent["b"].clone())
        );

        // A status change reaches the index (old) as it reaches the tail (new).
        let later = Utc::now() + Duration::hours(1);
        let due = store.due_stages(later, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        for d in &due {
            assert!(store.expire_stage(d, vec![], later).await.unwrap());
        }
        assert_eq!(
            list(Some(Status::Pending), None, None, 10).await,
            Vec::<String>::new()
        );
        assert_eq!(list(Some(Status::Expired), None, None, 10).await, both);
        assert_eq!(
            list(Some(Status::Expired), Some("approver"), None, 1).await,
            both[..1]
        );
        store.close().await;
        db.drop_database().await;
    }
);

/// One evaluation of the filter test: what it is listed by.
struct Listed {
    id: String,
    agent: &'static str,
    action: &'static str,
    policies: Vec<&'static str>,
    pending: bool,
}

both_backends!(
    evaluation_lists_filter_by_action_and_policy,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        let stage = "        - {name: ops, approvers: [role:ops], timeout: 30m}\n";
        let mut all = Vec::new();
        for i in 0..700 {
            let agent = ["a", "b", "c"][i % 3];
            let action = match i % 7 {
                0 => "refund",
                1 => "wire transfer",
                _ => "read",
            };
            // Names one another's prefix ("pay", "payments") or alike but for a character
            // that `LIKE` would take for any ("ops_x", "opsax"); "payments" twice at times.
            let mut policies = Vec::new();
            for (every, at, policy) in [
                (5, 0, "payments"),
                (10, 1, "pay"),
                (11, 0, "ops_x"),
                (17, 3, "opsax"),
                (20, 0, "payments"),
            ] {
                if i % every == at {
                    policies.push(policy);
                }
            }
            let pending = i % 50 == 10;
            let mut ev = doing(
                match pending {
                    true => pending_evaluation(&tenant, agent, stage),
                    false => evaluation(&tenant, agent, None),
                },
                action,
            );
            ev.matched_rules = policies
                .iter()
                .enumerate()
                .map(|(n, p)| agentnexus_engine::MatchedRule {
                    policy: (*p).to_owned(),
                    rule: format!("r{n}"),
                    effect: ev.decision,
                })
                .collect();
            policies.dedup();
            all.push(Listed {
                id: ev.id.clone(),
                agent,
                action,
                policies,
                pending,
            });
            store.record_evaluation(ev).await.unwrap();
        }
        all.sort_unstable_by(|l, r| r.id.cmp(&l.id));
        // The index has caught up with most, not the newest: both halves are read.
        let indexed: Vec<String> = sqlx::query_scalar("SELECT id FROM evaluation_index")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert!(indexed.len() >= 500, "{}", indexed.len());
        assert!(!indexed.contains(&all[0].id));

        type Filter = agentnexus_store::EvaluationFilter;
        let expect = |f: &Filter| -> Vec<String> {
            all.iter()
                .filter(|e| {
                    f.agent_id.as_ref().is_none_or(|a| a == e.agent)
                        && f.action.as_ref().is_none_or(|a| a == e.action)
                        && f.policy
                            .as_ref()
                            .is_none_or(|p| e.policies.contains(&p.as_str()))
                        && f.status.is_none_or(|s| (s == Status::Pending) == e.pending)
                        && f.since.as_ref().is_none_or(|s| e.id >= *s)
                        && f.before.as_ref().is_none_or(|b| e.id < *b)
                })
                .take(f.limit as usize)
                .map(|e| e.id.clone())
                .collect()
        };
        let filter = |action: Option<&str>, policy: Option<&str>| Filter {
            action: action.map(str::to_owned),
            policy: policy.map(str::to_owned),
            limit: 500,
            ..Default::default()
        };
        let filters = [
            filter(Some("refund"), None),
            filter(Some("wire transfer"), None),
            filter(Some("nothing"), None),
            filter(None, Some("pay")),
            filter(None, Some("payments")),
            filter(None, Some("ops_x")),
            filter(None, Some("opsax")),
            filter(None, Some("nothing")),
            filter(Some("refund"), Some("payments")),
            Filter {
                agent_id: Some("b".into()),
                ..filter(None, Some("payments"))
            },
            Filter {
                agent_id: Some("c".into()),
                ..filter(Some("wire transfer"), None)
            },
            Filter {
                status: Some(Status::Pending),
                ..filter(Some("read"), None)
            },
            Filter {
                status: Some(Status::Pending),
                ..filter(None, Some("payments"))
            },
            Filter {
                since: Some(all[400].id.clone()),
                before: Some(all[30].id.clone()),
                ..filter(None, Some("payments"))
            },
            Filter {
                limit: 7,
                ..filter(Some("read"), Some("pay"))
            },
            // Pages the index alone answers, each full: a range read that took in one
            // evaluation too many would leave one out.
            Filter {
                before: Some(all[300].id.clone()),
                limit: 7,
                ..filter(None, Some("pay"))
            },
            Filter {
                before: Some(all[300].id.clone()),
                limit: 5,
                ..filter(None, Some("ops_x"))
            },
            Filter {
                before: Some(all[300].id.clone()),
                limit: 9,
                ..filter(Some("refund"), None)
            },
        ];
        let check = async |store: &Store| {
            for f in &filters {
                let listed: Vec<String> = store
                    .evaluations(&tenant, f)
                    .await
                    .unwrap()
                    .evaluations
                    .into_iter()
                    .map(|e| e.id)
                    .collect();
                assert_eq!(listed, expect(f), "{f:?}");
                assert!(
                    !listed.is_empty()
                        || f.action.as_deref() == Some("nothing")
                        || f.policy.as_deref() == Some("nothing"),
                    "{f:?}"
                );
            }
            // Page by page, each evaluation once.
            let f = filter(None, Some("payments"));
            let mut paged = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let page_filter = Filter {
                    before: before.clone(),
                    limit: 40,
                    ..f.clone()
                };
                let page = store.evaluations(&tenant, &page_filter).await.unwrap();
                assert_eq!(page.searched_to, None, "{page_filter:?}");
                let page = page.evaluations;
                before = (page.len() == 40).then(|| page[39].id.clone());
                paged.extend(page.into_iter().map(|e| e.id));
                if before.is_none() {
                    break;
                }
            }
            assert_eq!(paged, expect(&f));
        };
        check(&store).await;

        // A store whose index was filled before evaluations were listed by action and policy
        // gets them when it is opened: as if migration 22 had not run yet.
        for sql in [
            "UPDATE evaluation_index SET action = NULL, policies = NULL",
            "DELETE FROM evaluation_batches",
            "DELETE FROM _sqlx_migrations WHERE version = 22",
        ] {
            sqlx::query(sql).execute(store.pool()).await.unwrap();
        }
        store.close().await;
        let store = open(&db).await;
        check(&store).await;
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(
    a_filtered_page_searches_a_bounded_part_of_the_history,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        // 130 catch-ups' worth, each naming agents a and b and actions read and write; b
        // read only once, first.
        let acme = tenant.clone();
        let made = move |i: usize| {
            let (agent, action) = match i {
                0 => ("b", "read"),
                _ if i.is_multiple_of(2) => ("a", "read"),
                _ => ("b", "write"),
            };
            doing(evaluation(&acme, agent, None), action)
        };
        let first = made(0);
        let first_id = first.id.clone();
        store.record_evaluation(first).await.unwrap();
        // Ids order by the millisecond they were made in: every other is newer.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        // A catch-up takes whole commits of the group-commit writer, so it may take more
        // than 128 events: made until there are more batches than a page reads.
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        loop {
            let batches: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM evaluation_batches")
                .fetch_one(store.pool())
                .await
                .unwrap();
            if batches > 130 {
                break;
            }
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let (store, next, made) = (store.clone(), next.clone(), made.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..64 {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        store.record_evaluation(made(i)).await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
        let filter = agentnexus_store::EvaluationFilter {
            agent_id: Some("b".into()),
            action: Some("read".into()),
            limit: 50,
            ..Default::default()
        };
        // The first page reads as far as a page may, finds nothing, and says where it stopped.
        let page = store.evaluations(&tenant, &filter).await.unwrap();
        assert!(page.evaluations.is_empty());
        let searched = page.searched_to.expect("searched part of the history");
        assert!(searched > first_id);
        // The next pages, each below where the last stopped, find the one and reach the end.
        let mut ids = Vec::new();
        let mut before = Some(searched);
        let mut pages = 1;
        while let Some(b) = before.take() {
            let rest = agentnexus_store::EvaluationFilter {
                before: Some(b),
                ..filter.clone()
            };
            let page = store.evaluations(&tenant, &rest).await.unwrap();
            ids.extend(page.evaluations.into_iter().map(|e| e.id));
            before = page.searched_to;
            pages += 1;
        }
        assert_eq!(ids, vec![first_id]);
        assert!((3..=4).contains(&pages), "{pages}");
        // A filter the newest ranges answer is never cut short.
        let reads = agentnexus_store::EvaluationFilter {
            agent_id: Some("a".into()),
            ..filter.clone()
        };
        let page = store.evaluations(&tenant, &reads).await.unwrap();
        assert_eq!(page.evaluations.len(), 50);
        assert_eq!(page.searched_to, None);
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(
    jobs_are_claimed_fairly_between_workspaces,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let (busy, quiet) = (
            workspace(&store, "busy").await,
            workspace(&store, "quiet").await,
        );
        let queue = |tenant: &Tenant, n: usize| {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                for _ in 0..n {
                    let mut ev = evaluation(&tenant, "bot", None);
                    ev.webhook_url = Some("https://hooks.example.com/x".into());
                    store.record_evaluation(ev).await.unwrap();
                }
            }
        };
        // The busy workspace queued 50 jobs before the quiet one queued its one.
        queue(&busy, 50).await;
        queue(&quiet, 1).await;
        let now = Utc::now() + Duration::seconds(1);
        let lease = Duration::seconds(30);
        let owner = |jobs: &[agentnexus_store::Job], t: &Tenant| {
            jobs.iter().filter(|j| j.tenant == *t).count()
        };
        // Round-robin: the first claim of two takes one job of each.
        let first = store
            .claim_jobs("wrk_a", now, lease, 2, 1000)
            .await
            .unwrap();
        assert_eq!((owner(&first, &busy), owner(&first, &quiet)), (1, 1));
        // A workspace holds at most `per_workspace` running jobs, whoever claims.
        let second = store.claim_jobs("wrk_b", now, lease, 20, 4).await.unwrap();
        assert_eq!(owner(&second, &busy), 3, "1 running + 3 = the share of 4");
        let third = store.claim_jobs("wrk_c", now, lease, 20, 4).await.unwrap();
        assert!(third.is_empty(), "{third:?}");
        // Full queues: the busy workspace has 50 jobs not ended, the quiet one 1.
        let full = store.workspaces_with_full_queues(10).await.unwrap();
        assert_eq!(full, vec![busy.clone()]);
        assert!(
            store
                .workspaces_with_full_queues(100)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
        db.drop_database().await;
    }
);

both_backends!(
    jobs_are_claimed_once_and_leases_expire,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let (a, b) = (open(&db).await, open(&db).await);
        let tenant = workspace(&a, "acme").await;
        for _ in 0..30 {
            let mut ev = evaluation(&tenant, "bot", None);
            ev.webhook_url = Some("https://hooks.example.com/x".into());
            a.record_evaluation(ev).await.unwrap();
        }
        let now = Utc::now();
        let lease = Duration::seconds(30);
        // Two workers on two connections claim at once: every job goes to exactly one.
        let (left, right) = tokio::join!(
            a.claim_jobs("wrk_a", now, lease, 20, 1000),
            b.claim_jobs("wrk_b", now, lease, 20, 1000)
        );
        let (left, right) = (left.unwrap(), right.unwrap());
        assert_eq!(
            left.len() + right.len(),
            30,
            "{} + {}",
            left.len(),
            right.len()
        );
        let mut ids: Vec<&str> = left.iter().chain(&right).map(|j| j.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 30, "no job claimed twice");
        assert!(left.iter().all(|j| j.attempts == 1
            && matches!(&j.message, agentnexus_store::Message::Webhook { event, .. }
                        if event.name() == "terminal_outcome")));
        assert!(
            a.claim_jobs("wrk_c", now, lease, 50, 1000)
                .await
                .unwrap()
                .is_empty(),
            "all leased"
        );

        // wrk_a dies. After its lease, another worker takes its jobs.
        let later = now + Duration::seconds(31);
        let retaken = b.claim_jobs("wrk_b", later, lease, 50, 1000).await.unwrap();
        assert_eq!(retaken.len(), 30, "both workers' leases ran out");
        let job = retaken.iter().find(|j| j.id == left[0].id).unwrap().clone();
        assert_eq!(job.attempts, 2);
        // The old worker's late result is recorded, but the job stays with its new owner.
        let attempt = Attempt {
            attempt: 1,
            attempted_at: String::new(),
            status_code: Some(200),
            latency_ms: 5,
            error: None,
            response_body: None,
        };
        let late = Finished {
            job: left[0].clone(),
            attempt: attempt.clone(),
            next: Next::Done,
            summary: json!({}),
            at: later,
        };
        a.finish_jobs("wrk_a", &[late]).await.unwrap();
        assert!(
            b.job_counts()
                .await
                .unwrap()
                .iter()
                .all(|(s, _)| s == "running")
        );
        let current = Finished {
            job,
            attempt,
            next: Next::Done,
            summary: json!({}),
            at: later,
        };
        b.finish_jobs("wrk_b", &[current]).await.unwrap();
        let deliveries = a
            .deliveries(&tenant, left[0].evaluation_id.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(deliveries[0].status, "done");
        assert_eq!(deliveries[0].attempts.len(), 2);
        assert!(a.verify_audit(&tenant).await.unwrap().is_ok());
        a.close().await;
        b.close().await;
        db.drop_database().await;
    }
);

/// On SQLite the WAL reaches the database file beside the writer: a background checkpoint
/// copies it long before the WAL grows to the writer's own checkpoint, and what it copied reads
/// back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_beside_the_writer() {
    let db = TestDatabase::new(agentnexus_testkit::Backend::Sqlite).await;
    let store = open(&db).await;
    let tenant = workspace(&store, "acme").await;
    let file = std::path::PathBuf::from(db.url.strip_prefix("sqlite://").unwrap());
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    // One evaluation per commit: 130 commits, two ticks, far fewer frames than the writer's
    // own checkpoint waits for.
    for _ in 0..130 {
        let ev = evaluation(&tenant, "a", None);
        store.record_evaluation(ev).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() <= before && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        size() > before,
        "the database file stayed at {before} bytes: nothing was checkpointed"
    );
    let all = agentnexus_store::EvaluationFilter {
        limit: 500,
        ..Default::default()
    };
    assert_eq!(
        store
            .evaluations(&tenant, &all)
            .await
            .unwrap()
            .evaluations
            .len(),
        130
    );
    assert!(store.verify_audit(&tenant).await.unwrap().is_ok());
    store.close().await;
    db.drop_database().await;
}

both_backends!(
    maintenance_catches_up_lists_that_other_writes_left_behind,
    |backend| async move {
        let db = TestDatabase::new(backend).await;
        let store = open(&db).await;
        let tenant = workspace(&store, "acme").await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let ev = evaluation(&tenant, "x", None);
            ids.push(ev.id.clone());
            store.record_evaluation(ev).await.unwrap();
        }
        // Newest first, by id (ids made in one millisecond are not in order of making).
        ids.sort_unstable_by(|a, b| b.cmp(a));
        // Events appended outside the group-commit writer never catch the list up themselves.
        for i in 0..200 {
            store
                .create_key(
                    &tenant,
                    &format!("k{i}"),
                    Scope::Agent,
                    Actor::Cli,
                    Utc::now(),
                )
                .await
                .unwrap();
        }
        let heads = || async {
            let (seq, indexed): (i64, i64) =
                sqlx::query_as("SELECT seq, indexed_seq FROM audit_heads WHERE workspace_id = $1")
                    .bind(tenant.workspace_id())
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            (seq, indexed)
        };
        let (seq, indexed) = heads().await;
        assert!(seq - indexed >= 200, "{seq} {indexed}");
        let listed = |store: &Store| {
            let store = store.clone();
            let tenant = tenant.clone();
            async move {
                let filter = agentnexus_store::EvaluationFilter {
                    agent_id: Some("x".into()),
                    limit: 10,
                    ..Default::default()
                };
                let page = store
                    .evaluations(&tenant, &filter)
                    .await
                    .unwrap()
                    .evaluations;
                page.into_iter().map(|e| e.id).collect::<Vec<_>>()
            }
        };
        // The list reads what it has not caught up with from the chain's tail.
        assert_eq!(listed(&store).await, ids);
        let spent = store.spend(&tenant, "x", Utc::now()).await.unwrap();
        assert_eq!(store.catch_up_lists().await.unwrap(), 1);
        let (seq, indexed) = heads().await;
        assert_eq!(seq, indexed);
        assert_eq!(store.catch_up_lists().await.unwrap(), 0);
        assert_eq!(listed(&store).await, ids);
        assert_eq!(store.spend(&tenant, "x", Utc::now()).await.unwrap(), spent);
        let in_index: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM evaluation_index WHERE workspace_id = $1 AND agent_id = 'x'",
        )
        .bind(tenant.workspace_id())
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(in_index, 3);
        assert!(store.verify_audit(&tenant).await.unwrap().is_ok());
        store.close().await;
        db.drop_database().await;
    }
);
