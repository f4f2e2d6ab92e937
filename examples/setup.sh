#!/bin/sh
# One-shot set-up of the example data space: the authority's CA and keys, and each
# participant's keys, certified by the authority; each connector's management API key and the
# broker's metrics key; the configs of this folder copied beside them. The same script runs in the containers
# (compose.yaml's `setup` service: volumes at /space, /provider, /consumer, /broker) and on one
# machine (run.sh). What differs is in the environment, with the containers' values as defaults:
#   EXAMPLE_ROOT        where the folders go (default: / , the containers' volumes)
#   AUTHORITY_URL       the authority's URL (http://authority:8700)
#   PROVIDER_HOST, CONSUMER_HOST, BROKER_HOST   the names peers reach each at, and their TLS
#                       certificates' names (provider, consumer, broker)
#   PROVIDER_DSP_PORT, CONSUMER_DSP_PORT, BROKER_PORT   (8801, 8811, 8804)
# The configs are copied at every start, so an edit here takes effect on the next start; the
# keys and certificates are created once (a second start finds the authority's folder).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${EXAMPLE_ROOT:-}
authority_url=${AUTHORITY_URL:-http://authority:8700}
provider_host=${PROVIDER_HOST:-provider}
consumer_host=${CONSUMER_HOST:-consumer}
broker_host=${BROKER_HOST:-broker}

mkdir -p "$root/provider/data" "$root/consumer" "$root/broker"
cp "$here/provider/connector.toml" "$root/provider/connector.toml"
cp "$here/consumer/connector.toml" "$root/consumer/connector.toml"
cp "$here/broker/broker.toml" "$root/broker/broker.toml"
# the connectors' management API keys and the broker's metrics key: 24 random bytes in hex
for key in provider/management.key consumer/management.key broker/metrics.key; do
    if [ ! -s "$root/$key" ]; then
        (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$root/$key")
    fi
done

# done once: the marker is the last thing written, so a set-up that failed half-way starts
# over (in a fresh authority folder) at the next start
if [ -f "$root/space/.set-up" ]; then
    echo "the data space exists already: configs updated"
    exit 0
fi
for d in "$root/space" "$root/provider/participant" "$root/consumer/participant" "$root/broker/participant"; do
    if [ -d "$d" ]; then
        find "$d" -mindepth 1 -delete   # the contents only: /space is a volume's mount point
    fi
done
connector authority init "$root/space" --name example-space --issuer "$authority_url"
connector init "$root/provider/participant" --name Provider --tls-host "$provider_host"
connector authority register "$root/space" "$root/provider/participant/participant.csr" \
    --tls-csr "$root/provider/participant/tls.csr" --role provider \
    --connector-url "https://$provider_host:${PROVIDER_DSP_PORT:-8801}"
connector init "$root/consumer/participant" --name Consumer --tls-host "$consumer_host"
connector authority register "$root/space" "$root/consumer/participant/participant.csr" \
    --tls-csr "$root/consumer/participant/tls.csr" --role consumer \
    --connector-url "https://$consumer_host:${CONSUMER_DSP_PORT:-8811}"
connector init "$root/broker/participant" --name Broker --tls-host "$broker_host"
connector authority register "$root/space" "$root/broker/participant/participant.csr" \
    --tls-csr "$root/broker/participant/tls.csr" --role broker \
    --connector-url "https://$broker_host:${BROKER_PORT:-8804}"
touch "$root/space/.set-up"
echo "the data space is set up"
