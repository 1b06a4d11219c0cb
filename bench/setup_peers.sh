#!/usr/bin/env bash
# Installs the peer task queues the benchmarks compare against, in their own venv
# (bench/.venv-peers), so they never mix with hubbub's dependencies. Pinned to versions that
# install together: taskiq-redis 1.0 needs redis-py < 6 (as kombu 5.4 does) and taskiq 0.11
# (taskiq 0.13 dropped what taskiq-redis 1.0 imports).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv-peers/bin/python ]; then
    python3 -m venv .venv-peers
fi
.venv-peers/bin/pip install --quiet --disable-pip-version-check \
    'huey==2.5.*' 'celery[redis]==5.4.*' 'kombu==5.4.*' 'dramatiq[redis]==1.17.*' \
    'taskiq==0.11.*' 'taskiq-redis==1.0.*' 'arq==0.28.*' 'rq==3.0.*' \
    'redis>=5,<6' packaging
echo "peers installed in bench/.venv-peers"

# hubbub's own clean venv (bench/.venv-hubbub), for memory.py's "clean venv" row: what
# `pip install hubbub[redis]` gives a user, without this machine's site-packages (its .pth files,
# the test-only OpenTelemetry SDK that redis-py 8 imports when present). Only the dependencies
# stay: hubbub itself is uninstalled, so the benchmark runs the source tree under test.
if [ ! -x .venv-hubbub/bin/python ]; then
    python3 -m venv .venv-hubbub
fi
.venv-hubbub/bin/pip install --quiet --disable-pip-version-check "$(cd .. && pwd)[redis]"
.venv-hubbub/bin/pip uninstall --quiet --disable-pip-version-check -y hubbub
echo "hubbub's dependencies installed in bench/.venv-hubbub"
