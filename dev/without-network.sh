#!/usr/bin/env bash
# Run a command in a private network namespace with only loopback up, as on a laptop that runs no
# PostgreSQL or Redis of its own; where namespaces are not allowed, run it as it is.
set -euo pipefail
if unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "without-network: unshare not allowed here; running with the host's network" >&2
exec "$@"
