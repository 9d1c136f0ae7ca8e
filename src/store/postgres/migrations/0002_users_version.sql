-- No stale write (DESIGN section 3): every write of a run is conditional on the row
-- as its plan read it. `version` counts the writes of a row; the operator's writes
-- name the version they expect and bump it, and a row whose version moved on since
-- the snapshot is not written (the run plans that user again).
--
-- Existing rows start at 1 (a constant default: no table rewrite).
ALTER TABLE users ADD COLUMN version bigint NOT NULL DEFAULT 1;

-- Any other UPDATE (an admin's by hand, a tool's) bumps it too, so that it also
-- makes a plan made before it stale. The operator's own statements set the new
-- version themselves, and the WHEN clause skips the function for them.
CREATE FUNCTION users_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_version_bump BEFORE UPDATE ON users
    FOR EACH ROW WHEN (NEW.version = OLD.version)
    EXECUTE FUNCTION users_bump_version();
