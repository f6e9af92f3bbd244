#!/bin/sh
# Enrol the three nodes of deploy/compose.yaml with the coordinator (run once, after `up`).
#
# What a real pool does by hand across companies, done here on one machine: the operator
# issues a one-time token per node and reads the coordinator's key id; each node owner enrols
# with both (the key id is what a node owner must receive over a separate channel); the node
# is restarted so that its pull agent starts. Importing data (`dpn node ingest`) and editing
# each node's policy.toml stay manual: see docs/operations.md.
set -eu
cd "$(dirname "$0")"
compose="docker compose -p crimmis-dpn -f compose.yaml --env-file .env"
home=/var/lib/dpn/coordinator
key_id=$($compose exec -T coordinator python -c \
    "import json, urllib.request as u; print(json.load(u.urlopen('http://127.0.0.1:8700/v1/info'))['key_id'])")
echo "coordinator key id: $key_id"
for pair in node-a:atlas-mining node-b:boreal-refining node-c:cobalt-cells; do
    service=${pair%%:*}
    node_id=${pair#*:}
    token=$($compose exec -T coordinator dpn coordinator enrolment-token --home "$home" \
        --node-id "$node_id" | head -n 1)
    $compose exec -T "$service" dpn node enrol --home /var/lib/dpn/node \
        --coordinator http://coordinator:8700 --token "$token" --coordinator-key-id "$key_id"
    $compose restart "$service"
done
$compose exec -T coordinator dpn coordinator nodes --home "$home"
