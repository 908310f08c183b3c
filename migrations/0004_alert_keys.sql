-- mde-poller state, schema version 4: alert versions keyed by fixed-size
-- hashes instead of text, with only what dedup reads (issue 10).
--
-- Every page of a back-fill upserts up to 10,000 random alert ids. Keyed by
-- (tenant_id TEXT, alert_id TEXT) with the texts of the update time, a row
-- took ~150 bytes, and each page's commit rewrote nearly the whole table into
-- the WAL and again at the checkpoint. Here a row is ~50 bytes of integers:
--
--   tenant_key  xxh3-64 of the tenant id (a tenant's rows stay together, so a
--               page of one tenant touches only that tenant's part)
--   id_key      the low 64 bits of xxh3-128 over tenant id, NUL, alert id
--   id_check    its high 64 bits: a row whose id_key matches but whose check
--               does not belongs to another alert and counts as unknown, so a
--               64-bit collision can only repeat an alert, never hide one
--
-- The key functions are the store's own (src/store.rs, `version_key`),
-- registered on every connection; the text columns nobody read
-- (last_update_text, first_emitted, last_emitted) are dropped.

CREATE TABLE alert_versions (
    tenant_key        INTEGER NOT NULL,
    id_key            INTEGER NOT NULL,
    id_check          INTEGER NOT NULL,
    last_update_ticks INTEGER NOT NULL,
    content_hash      INTEGER NOT NULL,
    from_graph        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_key, id_key)
) WITHOUT ROWID;

-- In key order, so the copy builds the new B-tree by appending. OR REPLACE:
-- two ids colliding on 64 bits (never seen) keep one row, as a page would.
INSERT OR REPLACE INTO alert_versions
    (tenant_key, id_key, id_check, last_update_ticks, content_hash, from_graph)
SELECT mde_tenant_key(tenant_id), mde_id_key(tenant_id, alert_id),
       mde_id_check(tenant_id, alert_id), last_update_ticks, content_hash, from_graph
FROM alerts
ORDER BY 1, 2;

DROP TABLE alerts;

-- Retention deletes by age across every tenant.
CREATE INDEX alert_versions_by_last_update ON alert_versions (last_update_ticks);
