-- wgsyncd schema, version 7: bounds on what one host can write, so the fleet views
-- (0006) survive it (security review).
--
-- A host writes its own sync_status, peer_stats and peer_traffic rows; nothing bounded
-- their values, and the views read every host's rows. So one host could make the
-- operator's views fail for the whole fleet: 'infinity' times ("cannot subtract infinite
-- timestamps"), deltas near 2^63 (bigint overflow in a sum). Two layers, so an old row
-- or a forgotten writer cannot undo the other: the views (0006) skip or blank non-finite
-- times, and these CHECK constraints refuse them (and oversized deltas and text) on every write,
-- whichever function or grant it comes through.

-- ---------------------------------------------------------------- constraints
-- Existing poison is telemetry only (cycle results, counters): it is dropped or blanked
-- so the time and delta constraints can be VALIDATEd. 2^62 per delta: far above what a
-- link moves in one cycle, and a + b of two deltas still fits a bigint.
DELETE FROM sync_status WHERE NOT (isfinite(started_at) AND isfinite(finished_at));
DELETE FROM peer_traffic WHERE NOT isfinite(observed_at)
    OR rx_delta NOT BETWEEN 0 AND 4611686018427387904 OR tx_delta NOT BETWEEN 0 AND 4611686018427387904;
UPDATE peer_stats SET latest_handshake = NULL WHERE NOT isfinite(latest_handshake);
DELETE FROM peer_stats WHERE NOT isfinite(observed_at);

ALTER TABLE sync_status ADD CONSTRAINT sync_status_finite_times
    CHECK (isfinite(started_at) AND isfinite(finished_at)) NOT VALID;
ALTER TABLE peer_stats ADD CONSTRAINT peer_stats_finite_times
    CHECK (isfinite(latest_handshake) AND isfinite(observed_at)) NOT VALID;
ALTER TABLE peer_traffic ADD CONSTRAINT peer_traffic_finite_time
    CHECK (isfinite(observed_at)) NOT VALID;
ALTER TABLE peer_traffic ADD CONSTRAINT peer_traffic_delta_range
    CHECK (rx_delta BETWEEN 0 AND 4611686018427387904 AND tx_delta BETWEEN 0 AND 4611686018427387904) NOT VALID;
ALTER TABLE sync_status VALIDATE CONSTRAINT sync_status_finite_times;
ALTER TABLE peer_stats VALIDATE CONSTRAINT peer_stats_finite_times;
ALTER TABLE peer_traffic VALIDATE CONSTRAINT peer_traffic_finite_time;
ALTER TABLE peer_traffic VALIDATE CONSTRAINT peer_traffic_delta_range;

-- Lengths of the text an operator reads in a terminal or a dashboard (generous: a
-- hostname is at most 253 characters, wg-quick comments are free text; a site-to-site
-- peer may route many prefixes, so the allowed-IP bound is far above any real one). NOT VALID
-- only: an existing long name may be covered by a host's signature, so it is not
-- rewritten here; the views and the terminal table cut what they show anyway.
ALTER TABLE hosts ADD CONSTRAINT hosts_text_length
    CHECK (length(hostname) <= 256 AND length(agent_version) <= 256) NOT VALID;
ALTER TABLE peers ADD CONSTRAINT peers_text_length
    CHECK (length(name) <= 1024 AND length(endpoint) <= 300
           AND coalesce(cardinality(comments), 0) <= 10000
           AND coalesce(length(array_to_string(comments, '')), 0) <= 1048576
           AND coalesce(cardinality(allowed_ips), 0) <= 100000
           AND coalesce(length(array_to_string(allowed_ips, '')), 0) <= 100000 * 50) NOT VALID;
ALTER TABLE interfaces ADD CONSTRAINT interfaces_text_length
    CHECK (length(name) <= 256
           AND coalesce(cardinality(comments), 0) <= 10000
           AND coalesce(length(array_to_string(comments, '')), 0) <= 1048576) NOT VALID;
ALTER TABLE sync_status ADD CONSTRAINT sync_status_message_length
    CHECK (length(message) <= 4096) NOT VALID;
