#!/bin/sh
# The example data space on one machine, without containers: the same set-up script and the
# same configs as compose.yaml, on loopback. Stops (all four processes) on Ctrl-C.
#   sh examples/run.sh DIR
# DIR holds everything (created; a second run reuses it). The ports are the containers' (8700,
# 8801-8803, 8811-8812, 8804) unless AUTHORITY_PORT, PROVIDER_DSP_PORT, PROVIDER_MGMT_PORT,
# PROVIDER_DATA_PORT, CONSUMER_DSP_PORT, CONSUMER_MGMT_PORT or BROKER_PORT say otherwise; the
# consumer's store is SQLite in DIR unless CONSUMER_STORE_URL names another (PostgreSQL).
set -eu
if [ $# -ne 1 ]; then
    echo "usage: sh examples/run.sh DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
EXAMPLE_ROOT=$(cd "$1" && pwd)
AUTHORITY_PORT=${AUTHORITY_PORT:-8700}
AUTHORITY_URL=http://127.0.0.1:$AUTHORITY_PORT
LISTEN_HOST=127.0.0.1
PROVIDER_HOST=127.0.0.1
CONSUMER_HOST=127.0.0.1
BROKER_HOST=127.0.0.1
CONSUMER_STORE_URL=${CONSUMER_STORE_URL:-sqlite:///$EXAMPLE_ROOT/consumer/connector.db}
export EXAMPLE_ROOT AUTHORITY_URL LISTEN_HOST PROVIDER_HOST CONSUMER_HOST BROKER_HOST CONSUMER_STORE_URL

sh "$here/setup.sh"
cd "$EXAMPLE_ROOT"
pids=""
trap 'kill $pids 2>/dev/null || :; wait' EXIT
trap 'exit 0' INT TERM
connector authority serve space --host 127.0.0.1 --port "$AUTHORITY_PORT" --issuer "$AUTHORITY_URL" \
    > authority.log 2>&1 &
pids="$pids $!"
connector broker serve broker/broker.toml > broker.log 2>&1 &
pids="$pids $!"
connector serve provider/connector.toml > provider.log 2>&1 &
pids="$pids $!"
connector serve consumer/connector.toml > consumer.log 2>&1 &
pids="$pids $!"
connector status provider/connector.toml --wait 120 > /dev/null
connector status consumer/connector.toml --wait 120 > /dev/null
# the connectors' readiness asked the authority; every process still runs (one that could not
# bind its port, the broker's say, has exited by now)
for pid in $pids; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "a process stopped while starting: see $EXAMPLE_ROOT/*.log" >&2
        exit 1
    fi
done
echo "ready: the dashboards are"
echo "  provider  http://127.0.0.1:${PROVIDER_MGMT_PORT:-8802}/ui  (key: $EXAMPLE_ROOT/provider/management.key)"
echo "  consumer  http://127.0.0.1:${CONSUMER_MGMT_PORT:-8812}/ui  (key: $EXAMPLE_ROOT/consumer/management.key)"
echo "  the logs are in $EXAMPLE_ROOT/*.log; Ctrl-C stops the data space"
wait
