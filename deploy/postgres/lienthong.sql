-- The bus's database, role and schema on PostgreSQL (docs/deploy.md, "The store on
-- PostgreSQL"). Run once as a superuser, naming the database:
--
--   psql -v db=lienthong -f deploy/postgres/lienthong.sql
--   psql -c '\password lienthong'      -- then put the URL into LIENTHONG__STORE__URL
--
-- The role `lienthong` logs in, owns the schema `lienthong` of that database and nothing else:
-- it creates and migrates its own tables there (every `lienthong run`, or `lienthong store
-- migrate`), and has no right on any other schema, database or role. Nobody else may create
-- anything in the database's `public` schema.
\set ON_ERROR_STOP on
SELECT format('CREATE ROLE lienthong LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lienthong') \gexec
SELECT format('CREATE DATABASE %I', :'db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
\connect :db
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO lienthong;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS lienthong AUTHORIZATION lienthong;
ALTER ROLE lienthong IN DATABASE :"db" SET search_path = lienthong;
-- Every connection of the role is TLS (hostssl lines in pg_hba.conf; see docs/deploy.md).
