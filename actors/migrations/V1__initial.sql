-- AuthGate's schema on PostgreSQL. Each table belongs to one actor (see ARCHITECTURE.md);
-- records are kept whole as JSON in `record`, beside the columns the conditions and indexes need.

-- The device actor: live device authorizations, keyed by SHA-256 of the device code.
CREATE TABLE device_codes (
    key            bytea PRIMARY KEY,
    user_code      text   NOT NULL,
    status         text   NOT NULL,
    expires_at_ms  bigint NOT NULL,
    record         jsonb  NOT NULL
);
CREATE INDEX device_codes_expiry ON device_codes (expires_at_ms);
-- Unique across every instance: a typed code names one device.
CREATE UNIQUE INDEX device_codes_user_code ON device_codes (user_code);

-- The token actor: access and refresh token records, and the issuance marks that make a
-- device code redeem once.
CREATE TABLE tokens (
    id                text PRIMARY KEY,
    authorization_id  text   NOT NULL,
    token_hash        text,
    status            text   NOT NULL,
    expires_at        bigint NOT NULL,
    record            jsonb  NOT NULL
);
CREATE INDEX tokens_authorization ON tokens (authorization_id);
CREATE INDEX tokens_hash ON tokens (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX tokens_user ON tokens ((record->>'user_id'));
CREATE INDEX tokens_client ON tokens ((record->>'client_id'));

CREATE TABLE authorizations (
    id         text PRIMARY KEY,
    issued_at  bigint NOT NULL
);

-- The session actor: signed-in browsers, keyed by SHA-256 of the session id.
CREATE TABLE sessions (
    key            bytea PRIMARY KEY,
    user_id        text   NOT NULL,
    expires_at_ms  bigint NOT NULL,
    record         jsonb  NOT NULL
);

-- The directory actor: users (usernames unique) and clients.
CREATE TABLE users (
    id        text PRIMARY KEY,
    username  text  NOT NULL UNIQUE,
    record    jsonb NOT NULL
);

CREATE TABLE clients (
    client_id  text PRIMARY KEY,
    record     jsonb NOT NULL
);

-- The audit actor: the trail, newest found first through (at_ms, id).
CREATE TABLE audit (
    id         bigserial PRIMARY KEY,
    at_ms      bigint NOT NULL,
    kind       text   NOT NULL,
    actor      text   NOT NULL,
    subject    text   NOT NULL,
    client_id  text,
    event      jsonb  NOT NULL
);
CREATE INDEX audit_time ON audit (at_ms, id);

-- The limits actor: failed attempts per key (a username, an address, a browser session) in
-- fixed windows, counted across every instance.
CREATE TABLE throttle (
    key              text PRIMARY KEY,
    window_start_ms  bigint  NOT NULL,
    count            integer NOT NULL
);

-- Server-wide values: generated secrets, the signing keyring, the seed mark, the health probe.
CREATE TABLE meta (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);
