-- The counts of what the list has caught up with so far (0012's `decision_counts`).
INSERT INTO decision_counts (workspace_id, day, decision, evaluations)
    SELECT a.workspace_id,
           to_char(to_timestamp(a.occurred_at / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
           a.data::json ->> 'decision', COUNT(*)
    FROM audit_events a JOIN audit_heads h ON h.workspace_id = a.workspace_id
    WHERE a.type = 'evaluation.created' AND a.seq <= h.indexed_seq
    GROUP BY 1, 2, 3;
