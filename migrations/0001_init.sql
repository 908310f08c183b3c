-- mde-poller state, schema version 1.
--
-- Tenants are keyed by their Entra tenant id (a GUID), never by the config
-- name: renaming `[tenants.contoso]` must keep its cursor and dedup state.
-- Every time is an INTEGER of 100 ns ticks since the Unix epoch (the API's
-- own resolution, crate::timestamp::Timestamp); the cursor also keeps the
-- text exactly as the server wrote it.

CREATE TABLE tenants (
    tenant_id         TEXT    NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL,
    cursor_text       TEXT,
    cursor_ticks      INTEGER,
    last_poll_started INTEGER,
    last_poll_ended   INTEGER,
    last_success      INTEGER,
    last_error        TEXT
);

-- One row per (tenant, alert id): the last version emitted. content_hash is a
-- u64 stored bit-for-bit in SQLite's signed 64-bit INTEGER.
CREATE TABLE alerts (
    tenant_id         TEXT    NOT NULL REFERENCES tenants (tenant_id),
    alert_id          TEXT    NOT NULL,
    last_update_text  TEXT    NOT NULL,
    last_update_ticks INTEGER NOT NULL,
    content_hash      INTEGER NOT NULL,
    first_emitted     INTEGER NOT NULL,
    last_emitted      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, alert_id)
) WITHOUT ROWID;

-- Retention deletes by age across every tenant.
CREATE INDEX alerts_by_last_update ON alerts (last_update_ticks);

CREATE TABLE polls (
    id        INTEGER NOT NULL PRIMARY KEY,
    tenant_id TEXT    NOT NULL REFERENCES tenants (tenant_id),
    started   INTEGER NOT NULL,
    ended     INTEGER,
    seen      INTEGER,
    emitted   INTEGER,
    error     TEXT
);

-- `status` wants each tenant's latest poll; retention deletes by age.
CREATE INDEX polls_by_tenant ON polls (tenant_id, id);
CREATE INDEX polls_by_started ON polls (started);
