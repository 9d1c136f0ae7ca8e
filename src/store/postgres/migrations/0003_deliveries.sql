-- Downstream delivery (DESIGN section 5b): what each ProvisioningTarget last
-- delivered of each user. One row per (namespace, target, user); written only by
-- that target's cycles, and only when something changed.
--
-- No foreign key to users: a row outlives its user's record, so a user removed
-- from the registry is still known to have an account in the application (the
-- next cycle disables it), and only the target's cycle forgets it.
CREATE TABLE deliveries (
    namespace    text        NOT NULL,
    target       text        NOT NULL,
    name         text        NOT NULL,
    -- The account's id in the application, once created or adopted.
    remote_id    text,
    -- What was last delivered successfully; NULL before the first success.
    state        text        CHECK (state IN ('Provisioned', 'Disabled', 'Deleted')),
    -- A digest of the attributes last delivered.
    digest       text        NOT NULL DEFAULT '',
    changed_at   timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    failures     integer     NOT NULL DEFAULT 0,
    retry_after  timestamptz,
    PRIMARY KEY (namespace, target, name)
);
