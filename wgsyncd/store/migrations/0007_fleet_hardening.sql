-- wgsyncd schema, version 7: the fleet views survive what one host can write (security
-- review of 0006).
--
-- A host writes its own sync_status, peer_stats and peer_traffic rows; nothing bounded
-- their values, and the views read every host's rows. So one host could make the
-- operator's views fail for the whole fleet: 'infinity' times ("cannot subtract infinite
-- timestamps"), deltas near 2^63 (bigint overflow in a sum). Two layers, so an old row
-- or a forgotten writer cannot undo the other: the views skip or blank non-finite times,
-- and CHECK constraints refuse them (and oversized deltas and text) on every write,
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
-- hostname is at most 253 characters, wg-quick comments are free text). NOT VALID
-- only: an existing long name may be covered by a host's signature, so it is not
-- rewritten here; the views and the terminal table cut what they show anyway.
ALTER TABLE hosts ADD CONSTRAINT hosts_text_length
    CHECK (length(hostname) <= 256 AND length(agent_version) <= 256) NOT VALID;
ALTER TABLE peers ADD CONSTRAINT peers_text_length
    CHECK (length(name) <= 1024 AND length(endpoint) <= 300
           AND coalesce(cardinality(comments), 0) <= 256
           AND coalesce(length(array_to_string(comments, '')), 0) <= 65536
           AND coalesce(cardinality(allowed_ips), 0) <= 4096
           AND coalesce(length(array_to_string(allowed_ips, '')), 0) <= 4096 * 50) NOT VALID;
ALTER TABLE interfaces ADD CONSTRAINT interfaces_text_length
    CHECK (length(name) <= 256
           AND coalesce(cardinality(comments), 0) <= 256
           AND coalesce(length(array_to_string(comments, '')), 0) <= 65536) NOT VALID;
ALTER TABLE sync_status ADD CONSTRAINT sync_status_message_length
    CHECK (length(message) <= 4096) NOT VALID;

-- ---------------------------------------------------------------- views
-- Same columns as 0006; only rows with finite times count, and a non-finite time a row
-- may still hold (an unconstrained replica, a restored dump) shows as NULL.
CREATE OR REPLACE VIEW fleet_hosts WITH (security_invoker = true) AS
SELECT h.host_id, h.hostname, h.agent_version, h.first_seen,
       ok.finished_at AS last_ok_at,
       last.started_at AS last_cycle_at, last.status AS last_status, last.message AS last_message,
       iv.interval_s, iv.measured AS interval_measured,
       CASE WHEN ok.finished_at IS NULL THEN 'never'
            WHEN now() - ok.finished_at > make_interval(secs => 3 * iv.interval_s) THEN 'stopped'
            ELSE 'ok' END AS state,
       n.interfaces, n.peers
FROM hosts h
LEFT JOIN LATERAL (
    SELECT s.finished_at FROM sync_status s WHERE s.host_id = h.host_id AND s.status = 'ok'
        AND isfinite(s.started_at) AND isfinite(s.finished_at)
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1) ok ON true
LEFT JOIN LATERAL (
    SELECT s.started_at, s.status, s.message FROM sync_status s WHERE s.host_id = h.host_id
        AND isfinite(s.started_at) AND isfinite(s.finished_at)
    ORDER BY s.started_at DESC, s.id DESC LIMIT 1) last ON true
CROSS JOIN LATERAL (
    SELECT greatest(10, coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY g.gap), 300))::double precision
               AS interval_s,
           count(g.gap) > 0 AS measured
    FROM (SELECT extract(epoch FROM r.started_at - lag(r.started_at) OVER (ORDER BY r.started_at, r.id)) AS gap
          FROM (SELECT s.started_at, s.id FROM sync_status s WHERE s.host_id = h.host_id
                    AND isfinite(s.started_at) AND isfinite(s.finished_at)
                ORDER BY s.started_at DESC, s.id DESC LIMIT 21) r) g
    WHERE g.gap IS NOT NULL) iv
CROSS JOIN LATERAL (
    SELECT (SELECT count(*) FROM interfaces i WHERE i.host_id = h.host_id AND i.removed_at IS NULL) AS interfaces,
           (SELECT count(*) FROM peers p WHERE p.host_id = h.host_id AND p.removed_at IS NULL) AS peers) n;

CREATE OR REPLACE VIEW fleet_peers WITH (security_invoker = true) AS
SELECT p.host_id, h.hostname, p.interface, p.public_key, p.name, p.allowed_ips, p.endpoint,
       coalesce(p.disabled, false) AS disabled, p.sources,
       hs.latest_handshake,
       extract(epoch FROM now() - hs.latest_handshake)::bigint AS handshake_age_s,
       coalesce(s.rx_total, 0) AS rx_bytes, coalesce(s.tx_total, 0) AS tx_bytes,
       p.updated_at
FROM peers p
JOIN hosts h ON h.host_id = p.host_id
LEFT JOIN peer_stats s ON s.host_id = p.host_id AND s.interface = p.interface AND s.public_key = p.public_key
CROSS JOIN LATERAL (SELECT CASE WHEN isfinite(s.latest_handshake) THEN s.latest_handshake END
                        AS latest_handshake) hs
WHERE p.removed_at IS NULL;

CREATE OR REPLACE VIEW fleet_traffic WITH (security_invoker = true) AS
SELECT t.host_id, h.hostname, t.interface, t.public_key, p.name, t.observed_at,
       t.rx_delta AS rx_bytes, t.tx_delta AS tx_bytes
FROM peer_traffic t
JOIN hosts h ON h.host_id = t.host_id
LEFT JOIN peers p ON p.host_id = t.host_id AND p.interface = t.interface AND p.public_key = t.public_key
WHERE isfinite(t.observed_at) AND t.rx_delta >= 0 AND t.tx_delta >= 0;

-- ---------------------------------------------------------------- least privilege
-- Agents never ask fleet questions: the views and the conflict function are the
-- operator's and the reader's only.
REVOKE SELECT ON fleet_hosts, fleet_peers, fleet_keys, fleet_conflicts, fleet_traffic FROM wgsyncd_host;
REVOKE EXECUTE ON FUNCTION wgsyncd_fleet_conflicts() FROM wgsyncd_host;
