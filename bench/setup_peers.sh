#!/usr/bin/env bash
# Installs the peer task queues the benchmarks compare against, in their own venv
# (bench/.venv-peers), so they never mix with hubbub's dependencies.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv-peers/bin/python ]; then
    python3 -m venv .venv-peers
fi
.venv-peers/bin/pip install --quiet --disable-pip-version-check \
    'huey==2.5.*' 'celery[redis]==5.4.*' 'kombu==5.4.*' 'dramatiq[redis]==1.17.*' 'redis>=5,<6' packaging
echo "peers installed in bench/.venv-peers"
