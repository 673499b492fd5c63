-- wgsyncd schema, version 2: config history and sealed secrets (issue 5).
--
-- A config version is one complete picture of a host's configuration (never runtime:
-- no handshakes, no counters), made only when its content hash changed. The public
-- part is plain jsonb; the secrets of each interface (private key, preshared keys,
-- wgrest v1 peer private keys, the raw conf text) are sealed to the operator's
-- recovery public key ON THE HOST and stored as one blob per interface, addressed by
-- the sha256 of their clear content. Versions point at blobs, so an interface whose
-- read failed this cycle can carry its previous secrets forward without the host
-- ever reading them back (it cannot: it has no private recovery key).
--
-- The sha256 of secrets is safe to store: every secret in it holds a 256-bit random
-- key, so the hash cannot be inverted or guessed.

CREATE TABLE config_versions (
    host_id          text NOT NULL REFERENCES hosts (host_id),
    version          integer NOT NULL,
    created_at       timestamptz NOT NULL,
    sync_id          uuid NOT NULL,
    content_sha256   text NOT NULL,          -- over doc, which names each interface's secrets hash
    doc              jsonb NOT NULL,         -- public config only; see wgsyncd/store/versions.py
    interfaces       integer NOT NULL,
    peers            integer NOT NULL,
    sealed           boolean NOT NULL,       -- every interface's secrets are stored (sealed)
    recovery_key_fp  text,                   -- the recovery public key this version sealed to
    PRIMARY KEY (host_id, version)
);
CREATE INDEX config_versions_host_time ON config_versions (host_id, created_at DESC);

CREATE TABLE config_secrets (
    host_id          text NOT NULL,
    interface        text NOT NULL,
    secrets_sha256   text NOT NULL,          -- sha256 of the clear secrets JSON (see above)
    recovery_key_fp  text NOT NULL,          -- sha256 of the recovery public key sealed to
    sealed           bytea NOT NULL,         -- X25519 sealed box; only the operator opens it
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (host_id, interface, secrets_sha256, recovery_key_fp)
);
