-- mde-poller state, schema version 2: what `status` shows beyond version 1.
--
-- `status` reads this file, not the running daemon's memory, so what it
-- reports about the call budget and the audit must be written here.

-- API calls each poll made (pages fetched, the full windows that were split
-- included): `status` sums them over the last minute and hour to tell how
-- much of the per-tenant budget (100 a minute, 1,500 an hour) is left.
-- NULL for polls recorded by version 1.
ALTER TABLE polls ADD COLUMN requests INTEGER;

-- The tenant's last audit (`mde-poller audit`, or the daemon's `[audit]`):
-- when it ended, the range it compared (from, in 100 ns ticks), and its
-- counts of alert versions: in the API, emitted, missing, repaired.
-- All NULL until the tenant's first audit.
ALTER TABLE tenants ADD COLUMN last_audit_ended    INTEGER;
ALTER TABLE tenants ADD COLUMN last_audit_since    INTEGER;
ALTER TABLE tenants ADD COLUMN last_audit_in_api   INTEGER;
ALTER TABLE tenants ADD COLUMN last_audit_emitted  INTEGER;
ALTER TABLE tenants ADD COLUMN last_audit_missing  INTEGER;
ALTER TABLE tenants ADD COLUMN last_audit_repaired INTEGER;
