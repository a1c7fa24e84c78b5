#!/bin/sh
# Creates qastream's own PostgreSQL role.  The postgres image runs the scripts in
# /docker-entrypoint-initdb.d/ once, when the data volume is empty, as the
# superuser POSTGRES_USER; on an existing volume run this by hand (README,
# "Access control").  The names and password come from the container's
# environment (docker-compose.yml takes them from .env).
#
# The role may log in, connect to POSTGRES_DB and create tables in its public
# schema (Alembic creates and alters the schema as this role, so it owns every
# table it uses).  It is no superuser, cannot create roles or databases, does
# not replicate and does not bypass row-level security; other roles lose the
# default right to connect to the database.
set -eu

: "${POSTGRES_APP_USER:?POSTGRES_APP_USER is not set}"
: "${POSTGRES_APP_PASSWORD:?POSTGRES_APP_PASSWORD is not set}"
if [ "$POSTGRES_APP_USER" = "$POSTGRES_USER" ]; then
    echo "init-app-role.sh: POSTGRES_APP_USER must differ from the superuser POSTGRES_USER" >&2
    exit 1
fi

# psql substitutes :"name" (an identifier) and :'name' (a literal) itself, quoted
# and escaped, so no value is pasted into SQL by the shell ('SQL' is not expanded).
psql --no-psqlrc --set ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set app_user="$POSTGRES_APP_USER" --set app_password="$POSTGRES_APP_PASSWORD" \
    --set app_db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"app_user" WITH LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"app_db" TO :"app_user";
GRANT USAGE, CREATE ON SCHEMA public TO :"app_user";
SQL
