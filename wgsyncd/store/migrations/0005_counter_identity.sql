-- Which incarnation of the interface a peer's stored counters were read from
-- (boot id : network namespace : ifindex, see wgsyncd/sources/identity.py).
-- A different one next cycle means the counters restarted: the new reading is
-- all new traffic, even when it already grew past the stored one. NULL: unknown
-- (rows written before this migration, or a host without kernel access).
ALTER TABLE peer_stats ADD COLUMN IF NOT EXISTS iface_id text;
