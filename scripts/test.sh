#!/usr/bin/env bash
# Installs what the test suite needs on a fresh machine and runs the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Beanstalkd is not on a fresh machine: install it and start it on loopback.
if ! command -v beanstalkd >/dev/null 2>&1; then
    (apt-get install -y -qq beanstalkd >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null && apt-get install -y -qq beanstalkd >/dev/null))
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/11300) 2>/dev/null; then
    beanstalkd -l 127.0.0.1 -p 11300 -z 1048576 &
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/11300) 2>/dev/null && break; sleep 0.1; done
fi

# tmux gives the test of `hubbub top` a real terminal (tests/e2e/test_top.py).
if ! command -v tmux >/dev/null 2>&1; then
    (apt-get install -y -qq tmux >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null && apt-get install -y -qq tmux >/dev/null))
fi

# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 \
        || (apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null))
fi

# Redis and RabbitMQ run on these machines; start them if they stopped.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached
    for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 0.2; done
fi

# Style and types first (STYLE.md's tooling), so that pytest's summary is the last word.
python3 -m ruff check hubbub tests bench examples
python3 -m mypy --strict hubbub

# The documentation site: a broken link, a missing page or an API docstring that is missing
# or malformed fails here (mkdocs.yml, scripts/mkdocs_hooks.py). Built into a scratch folder.
# No --quiet: it hides the warnings that --strict counts, and the build would pass anyway.
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 python3 -m mkdocs build --strict --site-dir "$site"

# Parallel workers (pytest-xdist): the tests mostly wait on brokers, subprocesses and
# timers, so three workers help even on 2 cores. Every test has its own broker namespace
# (prefix, tube, SQLite file in tmp_path) and free ports, so they do not interfere; the
# fault suites' ledger table is gathered from the workers (tests/conftest.py). loadgroup
# keeps modules with module-scoped fixtures on one worker. -p no:benchmark: a stray
# pytest-benchmark warns (an error here) when xdist is active; the suite does not use it.
# HB_TEST_WORKERS=0 runs serially. With pytest args, only those tests run.
parallel=(-p no:benchmark -n "${HB_TEST_WORKERS:-3}" --dist loadgroup)
if [ "$#" -gt 0 ]; then
    python3 -m pytest "${parallel[@]}" "$@"
    exit 0
fi
python3 -m pytest "${parallel[@]}" --ignore=tests/faults
# The fault suite holds recovery times to bounds (kill -9, outages): it runs alone, after
# the parallel run, so that other tests' load does not stretch them.
python3 -m pytest -p no:benchmark tests/faults

# The clustered brokers (issue 19): the session starts them on loopback (Redis Cluster on
# 17000-17005, Sentinel on 17010-17014; a 3-node RabbitMQ on 25701-25703 with its own
# cookie, beside the machine's node; see tests/cluster/servers.py and rabbit.py). Marked slow to keep
# them out of the quick run above; the whole test command runs them here.
python3 -m pytest -m slow tests/cluster tests/conformance -k "cluster or sentinel"
