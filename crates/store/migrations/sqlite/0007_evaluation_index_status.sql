-- An evaluation's status changes (approvals, deadlines) reach its index row in the same
-- statement, wherever they are made.
CREATE TRIGGER evaluation_index_status AFTER UPDATE OF status ON evaluations
BEGIN
    UPDATE evaluation_index SET status = NEW.status
    WHERE workspace_id = NEW.workspace_id AND id = NEW.id;
END;
