-- A status change reaches the evaluation's index row and, as a range of one, its new status's
-- facet (an evaluation not indexed yet gets both when the index catches up).
DROP TRIGGER evaluation_index_status;
CREATE TRIGGER evaluation_index_status AFTER UPDATE OF status ON evaluations
BEGIN
    UPDATE evaluation_index SET status = NEW.status
    WHERE workspace_id = NEW.workspace_id AND id = NEW.id;
    INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)
    SELECT NEW.workspace_id, 'status:' || NEW.status, NEW.id, NEW.id
    WHERE EXISTS (SELECT 1 FROM evaluation_index
                  WHERE workspace_id = NEW.workspace_id AND id = NEW.id)
    ON CONFLICT DO NOTHING;
END;
