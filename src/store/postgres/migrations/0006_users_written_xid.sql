-- The warm copy: a process keeps each namespace's users in memory between runs
-- and reads, for the next run, only the rows written since its last read.
-- `written_xid` is the transaction that last wrote a row; a row whose writer is
-- not visible in the snapshot the copy was read at was written since.
--
-- Rows from before this migration keep NULL (no table rewrite): a process reads
-- every row once when it starts, and they count as read from then on.
ALTER TABLE users ADD COLUMN written_xid xid8;
ALTER TABLE users ALTER COLUMN written_xid SET DEFAULT pg_current_xact_id();

CREATE INDEX users_by_writer ON users (namespace, written_xid);

-- The operator's statements set `written_xid` themselves; any other UPDATE (an
-- admin's by hand, `usersync preserve`, a CSV import) is stamped here.
CREATE FUNCTION users_stamp_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.written_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

CREATE TRIGGER users_written_by BEFORE UPDATE ON users
    FOR EACH ROW WHEN (NEW.written_xid IS NOT DISTINCT FROM OLD.written_xid)
    EXECUTE FUNCTION users_stamp_writer();

-- Rows removed by hand (the operator never deletes a row: a deleted user is a
-- tombstone), so that a copy forgets them.
CREATE TABLE users_removed (
    namespace   text NOT NULL,
    name        text NOT NULL,
    removed_xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX users_removed_by_writer ON users_removed (namespace, removed_xid);

CREATE FUNCTION users_note_removals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO users_removed (namespace, name) SELECT namespace, name FROM gone;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_removals AFTER DELETE ON users
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION users_note_removals();
