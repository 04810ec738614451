-- What every API process of a distributed deployment shares besides history: API keys (the
-- SHA-256 of the secret, scopes comma-separated, as in the embedded meta.db) and the dashboards
-- saved through the API (their JSON body). Both are small and read through short caches.
CREATE TABLE api_keys (
    key_id text COLLATE "C" PRIMARY KEY,
    secret_hash text NOT NULL,
    scopes text NOT NULL,
    name text NOT NULL,
    created_ms bigint NOT NULL,
    revoked_ms bigint
);

CREATE TABLE dashboards (
    id text COLLATE "C" PRIMARY KEY,
    body bytea NOT NULL,
    updated_ms bigint NOT NULL
);
