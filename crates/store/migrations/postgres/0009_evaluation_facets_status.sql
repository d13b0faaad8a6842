-- A status change reaches the evaluation's index row and, as a range of one, its new status's
-- facet (an evaluation not indexed yet gets both when the index catches up).
CREATE OR REPLACE FUNCTION evaluation_index_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE evaluation_index SET status = NEW.status
    WHERE workspace_id = NEW.workspace_id AND id = NEW.id;
    IF FOUND THEN
        INSERT INTO evaluation_facets (workspace_id, facet, lo_id, hi_id)
        VALUES (NEW.workspace_id, 'status:' || NEW.status, NEW.id, NEW.id)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
