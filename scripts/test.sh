#!/usr/bin/env bash
# Runs the whole test suite, as CI does: set-up (idempotent), a throwaway PostgreSQL server on loopback for the
# shared-storage tests, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh postgresql chromium oclgrind  # the report's browser test; tests/test_oclgrind.py

# A private PostgreSQL cluster on 127.0.0.1, trust auth, removed on exit.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
PG_DIR=$(mktemp -d /tmp/autotune-pg.XXXXXX)
PG_PORT=${AUTOTUNE_TEST_PG_PORT:-54329}
chmod 755 "$PG_DIR"
run_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
run_pg "'$PG_BIN/initdb' -D '$PG_DIR/data' -U postgres --auth=trust >/dev/null"
run_pg "'$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/log' -w -o \"-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1\" start >/dev/null"
trap 'run_pg "\"$PG_BIN/pg_ctl\" -D \"$PG_DIR/data\" -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
export AUTOTUNE_TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/postgres"

# Style and types first: cheap, and a failure names the line.
.venv/bin/ruff check
.venv/bin/mypy

# Triton runs its kernels in the CPU interpreter where no GPU is present.
export TRITON_INTERPRET=${TRITON_INTERPRET:-1}
.venv/bin/python -m pytest "$@"
