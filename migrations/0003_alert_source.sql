-- mde-poller state, schema version 3: which API each stored version was read
-- from (issue 13). A tenant switched from `mde` to `graph` re-reads its
-- lookback from Graph; the same alert version in Graph's form is another
-- content at the same instant, and without knowing the stored one was MDE's
-- the larger-hash rule would re-emit about half of them at random. With it,
-- a version stored from the other API is always taken once in the new form.
-- 0 = the Defender for Endpoint API (every version written before), 1 = Graph.
ALTER TABLE alerts ADD COLUMN from_graph INTEGER NOT NULL DEFAULT 0;
