#!/bin/sh
# One-shot set-up of the compose data space (examples/compose.yaml runs it before the others):
# the authority's CA and keys, and each participant's keys, certified by the authority. Runs
# once: a second start finds the authority's directory and does nothing.
set -eu
if [ -f /space/authority.json ]; then
    echo "the data space exists already"
    exit 0
fi
connector authority init /space --name compose-space --issuer http://authority:8700
connector init /provider/participant --name Provider --tls-host provider
connector authority register /space /provider/participant/participant.csr \
    --tls-csr /provider/participant/tls.csr --role provider --connector-url https://provider:8801
connector init /consumer/participant --name Consumer --tls-host consumer
connector authority register /space /consumer/participant/participant.csr \
    --tls-csr /consumer/participant/tls.csr --role consumer --connector-url https://consumer:8811
connector init /broker/participant --name Broker --tls-host broker
connector authority register /space /broker/participant/participant.csr \
    --tls-csr /broker/participant/tls.csr --role broker
# the provider's data folder ([assets] roots), beside its participant directory
mkdir -p /provider/data
echo "the data space is set up"
