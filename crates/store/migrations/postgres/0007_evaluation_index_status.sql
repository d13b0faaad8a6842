-- An evaluation's status changes (approvals, deadlines) reach its index row in the same
-- statement, wherever they are made.
CREATE FUNCTION evaluation_index_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE evaluation_index SET status = NEW.status
    WHERE workspace_id = NEW.workspace_id AND id = NEW.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER evaluation_index_status AFTER UPDATE OF status ON evaluations
    FOR EACH ROW EXECUTE FUNCTION evaluation_index_status();
