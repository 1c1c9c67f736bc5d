-- Runs once, when the compose Postgres volume is created: a database for Keycloak next to
-- the expenses database that POSTGRES_DB creates.
CREATE DATABASE keycloak;
