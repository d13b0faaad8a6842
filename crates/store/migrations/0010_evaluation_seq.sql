-- An evaluation's `evaluation.created` event is found by its seq, kept with the evaluation in
-- `evaluation_index` (or, for the few evaluations the index has not caught up with, in the
-- chain's tail), not by an entry per evaluation in `audit_events_by_evaluation`: that index now
-- holds only the events that follow a creation (decisions, deliveries), and every commit
-- writes one index leaf fewer.
ALTER TABLE evaluation_index ADD COLUMN seq BIGINT;
UPDATE evaluation_index SET seq = (
    SELECT a.seq FROM audit_events a
    WHERE a.evaluation_id = evaluation_index.id AND a.type = 'evaluation.created'
      AND a.workspace_id = evaluation_index.workspace_id);
DROP INDEX audit_events_by_evaluation;
CREATE INDEX audit_events_by_evaluation ON audit_events (evaluation_id)
    WHERE evaluation_id IS NOT NULL AND type <> 'evaluation.created';
