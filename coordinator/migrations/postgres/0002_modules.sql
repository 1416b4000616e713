-- WebAssembly modules of module jobs, stored once under the SHA-256 of their binary form.
CREATE TABLE modules (
    sha256     TEXT PRIMARY KEY NOT NULL,
    bytes      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
