-- wgsyncd schema, version 1.
--
-- Every key a host owns is led by host_id, so one set of tables holds thousands of
-- hosts and can later be distributed (Citus: distribute every table on host_id).
-- No private or preshared key is stored in clear anywhere: only public keys,
-- fingerprints (sha256) and booleans. Sealed secrets and config versions (restore,
-- issue 5) come in a later migration as their own tables keyed the same way.

CREATE TABLE hosts (
    host_id        text PRIMARY KEY,
    hostname       text NOT NULL,
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,   -- last successful write_cycle
    agent_version  text NOT NULL,
    last_sync_id   uuid
);

-- Config tables: a row changes (version + 1, updated_at) only when its data changed.
-- removed_at is set when the thing disappeared from a complete read; NULL again when it returns.
CREATE TABLE interfaces (
    host_id         text NOT NULL REFERENCES hosts (host_id),
    name            text NOT NULL,
    public_key      text,
    listen_port     integer,
    fwmark          bigint,
    addresses       text[],
    dns             text[],
    mtu             integer,
    table_name      text,
    pre_up          text[],
    post_up         text[],
    pre_down        text[],
    post_down       text[],
    save_config     boolean,
    conf_path       text,
    conf_sha256     text,                  -- sha256 of the raw conf text, never the text
    implementation  text,
    comments        text[],
    sources         text[] NOT NULL DEFAULT '{}',   -- which sources saw the interface
    provenance      jsonb NOT NULL DEFAULT '{}',    -- field -> source
    row_hash        text NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    removed_at      timestamptz,
    PRIMARY KEY (host_id, name)
);

CREATE TABLE peers (
    host_id               text NOT NULL,
    interface             text NOT NULL,
    public_key            text NOT NULL,
    name                  text,
    comments              text[],
    allowed_ips           text[],
    endpoint              text,
    persistent_keepalive  integer,
    disabled              boolean,
    has_preshared_key     boolean,
    preshared_key_fp      text,            -- state.Secret.fingerprint(), never the key
    has_private_key       boolean,         -- the peer's own key is known (wgrest v1 data dir)
    private_key_fp        text,            -- its fingerprint; the sealed key itself: issue 5
    sources               text[] NOT NULL DEFAULT '{}',
    provenance            jsonb NOT NULL DEFAULT '{}',
    row_hash              text NOT NULL,
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    removed_at            timestamptz,
    PRIMARY KEY (host_id, interface, public_key),
    FOREIGN KEY (host_id, interface) REFERENCES interfaces (host_id, name)
);

-- The interface's own public keys over time. last_seen is set when the key is
-- (re)confirmed as current and, on retirement, to the last sync that still saw it;
-- while retired_at IS NULL the key is current as of hosts.last_seen. Public only.
CREATE TABLE server_keys (
    host_id      text NOT NULL,
    interface    text NOT NULL,
    public_key   text NOT NULL,
    fingerprint  text NOT NULL,            -- state.key_fingerprint(public_key)
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    retired_at   timestamptz,
    PRIMARY KEY (host_id, interface, public_key)
);
CREATE INDEX server_keys_fingerprint ON server_keys (fingerprint);

-- Runtime: the last raw counters and the monotonic totals. observed_at is the
-- collection time of the cycle that last saw the counters or handshake change.
CREATE TABLE peer_stats (
    host_id           text NOT NULL,
    interface         text NOT NULL,
    public_key        text NOT NULL,
    latest_handshake  timestamptz,
    rx_bytes          bigint NOT NULL DEFAULT 0,
    tx_bytes          bigint NOT NULL DEFAULT 0,
    rx_total          numeric NOT NULL DEFAULT 0,   -- never goes down
    tx_total          numeric NOT NULL DEFAULT 0,
    observed_at       timestamptz NOT NULL,
    PRIMARY KEY (host_id, interface, public_key)
);

-- Traffic history: one row per peer per cycle with a non-zero delta.
CREATE TABLE peer_traffic (
    host_id      text NOT NULL,
    interface    text NOT NULL,
    public_key   text NOT NULL,
    observed_at  timestamptz NOT NULL,
    rx_delta     bigint NOT NULL,
    tx_delta     bigint NOT NULL,
    PRIMARY KEY (host_id, interface, public_key, observed_at)
);
-- retention jobs and "traffic of this host since T" scan by time
CREATE INDEX peer_traffic_host_time ON peer_traffic (host_id, observed_at);

CREATE TABLE sync_status (
    id                   bigserial,
    host_id              text NOT NULL,
    sync_id              uuid NOT NULL,
    started_at           timestamptz NOT NULL,
    finished_at          timestamptz NOT NULL,
    status               text NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    errors               text[] NOT NULL DEFAULT '{}',
    message              text,
    drift_count          integer NOT NULL DEFAULT 0,
    drift                jsonb NOT NULL DEFAULT '[]',
    interfaces           integer NOT NULL DEFAULT 0,
    peers                integer NOT NULL DEFAULT 0,
    config_rows_written  integer NOT NULL DEFAULT 0,
    duration_ms          integer NOT NULL DEFAULT 0,
    agent_version        text NOT NULL,
    PRIMARY KEY (host_id, id)
);
CREATE INDEX sync_status_host_started ON sync_status (host_id, started_at DESC, id DESC);
CREATE INDEX sync_status_started ON sync_status (started_at DESC, id DESC);
