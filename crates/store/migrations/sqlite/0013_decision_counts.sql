-- The counts of what the list has caught up with so far (0012's `decision_counts`).
INSERT INTO decision_counts (workspace_id, day, decision, evaluations)
    SELECT a.workspace_id, strftime('%Y-%m-%d', a.occurred_at / 1000000, 'unixepoch'),
           a.data ->> 'decision', COUNT(*)
    FROM audit_events a JOIN audit_heads h ON h.workspace_id = a.workspace_id
    WHERE a.type = 'evaluation.created' AND a.seq <= h.indexed_seq
    GROUP BY 1, 2, 3;
