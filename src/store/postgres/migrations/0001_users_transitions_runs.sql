-- The external store: the registry of users, the audit log of their transitions and
-- the history of runs, for every namespace the operator watches.

-- One row per user, as a DirectoryUser object would hold it. The operator writes
-- Directory users; admins own `manual_preserve` and the rows of origin Manual;
-- `usersync import-csv` writes the rows of origin CSV.
CREATE TABLE users (
    namespace           text        NOT NULL,
    name                text        NOT NULL,
    origin              text        NOT NULL CHECK (origin IN ('Directory', 'Manual', 'CSV')),
    connector           text,
    anchor              text,
    mapping             text,
    username            text,
    email               text,
    display_name        text,
    user_principal_name text,
    profile             text,
    attributes          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    manual_preserve     boolean     NOT NULL DEFAULT false,
    state               text        NOT NULL DEFAULT 'Active'
                                    CHECK (state IN ('Active', 'Preserved', 'Deleted')),
    reason              text        CHECK (reason IN ('DisabledInDirectory', 'Unmapped', 'Manual', 'RetentionExpired')),
    preserved_at        timestamptz,
    delete_after        timestamptz,
    deleted_at          timestamptz,
    last_seen_at        timestamptz,
    last_sync_run       text,
    -- The tombstone this record follows, when its directory object returned after
    -- deletion (rule 6).
    previous_record     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name),
    CHECK (origin <> 'Directory' OR (connector IS NOT NULL AND anchor IS NOT NULL))
);

CREATE INDEX users_by_owner ON users (namespace, connector, mapping, state);

-- One row per run of a mapping: written when it starts (result NULL while it runs)
-- and completed when it ends.
CREATE TABLE runs (
    namespace   text        NOT NULL,
    id          text        NOT NULL,
    mapping     text        NOT NULL,
    trigger     text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    result      text        CHECK (result IN ('Succeeded', 'Failed', 'Blocked', 'DryRun')),
    read        text,
    imported    integer,
    updated     integer,
    unchanged   integer,
    preserved   integer,
    reenabled   integer,
    deleted     integer,
    transferred integer,
    skipped     integer,
    writes      bigint,
    message     text,
    PRIMARY KEY (namespace, id)
);

CREATE INDEX runs_by_mapping ON runs (namespace, mapping, started_at DESC);

-- The audit log: who (actor) did what (kind, from_state -> to_state) to which user,
-- when (at), why (reason, detail) and in which run (run_id; NULL outside runs, for
-- a CSV import). Rows are only ever inserted.
CREATE TABLE transitions (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL,
    namespace  text        NOT NULL,
    user_name  text        NOT NULL,
    kind       text        NOT NULL,
    from_state text,
    to_state   text        NOT NULL,
    reason     text,
    detail     text,
    run_id     text,
    actor      text        NOT NULL,
    FOREIGN KEY (namespace, run_id) REFERENCES runs (namespace, id)
);

CREATE INDEX transitions_by_user ON transitions (namespace, user_name, at);
CREATE INDEX transitions_by_run ON transitions (namespace, run_id);
