-- wgsyncd schema, version 4: signed config versions (issue 12).
--
-- Every config version a host writes is signed with the host's own Ed25519 key over
-- a domain-separated message (wgsyncd/signing.py: host_id, version, prev, created_at,
-- content and document hashes, recovery key fingerprint, the sha256 of each sealed
-- blob). Versions chain per host: prev_sha256 is the link (sha256 of the signed
-- message) of the version the host signed before; a chain starts at 64 zeros.
-- Restore verifies against keys the OPERATOR pinned in a trust file it keeps with the
-- recovery key, never against signing_key below (a database owner can write that).
-- Rows written before this migration stay unsigned (NULL signature): restore
-- refuses them unless told --allow-unsigned.
--
-- New nullable columns without defaults: no table rewrite.

ALTER TABLE config_versions
    ADD COLUMN prev_sha256    text,    -- the previous version's link; 64 zeros = a chain segment starts
    ADD COLUMN doc_sha256     text,    -- sha256 of the canonical doc (what restore renders)
    ADD COLUMN sealed_sha256  jsonb,   -- interface -> sha256 of its sealed blob's bytes
    ADD COLUMN signing_key    text,    -- the signer's verify key (base64): a hint for messages only
    ADD COLUMN signature      text;    -- Ed25519 over the message, base64; NULL = unsigned (legacy)

-- The operator's pin of a host's verify key in the database (`wgsyncd db add-host
-- ... --signing-key KEY`). Written by the database owner only. Restore does not trust
-- it (whoever owns the database can rewrite it): it only cross-checks it against the
-- trust file and warns when they disagree.
CREATE TABLE host_signing_keys (
    host_id     text NOT NULL,
    verify_key  text NOT NULL,
    pinned_at   timestamptz NOT NULL DEFAULT now(),
    comment     text,
    PRIMARY KEY (host_id, verify_key)
);

-- forced RLS and policies like every table with a host_id (migration 0003): a host
-- reads its own pins, the operator and the reader every host's (verify keys are public)
ALTER TABLE host_signing_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE host_signing_keys FORCE ROW LEVEL SECURITY;
SELECT wgsyncd_secure_table('host_signing_keys', true);
