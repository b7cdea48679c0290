#!/usr/bin/env bash
# Checks docs/openapi.yaml against the running emulator with schemathesis, bounded in examples and
# time, so that the description and the emulator cannot drift apart. Needs schemathesis on PATH
# and a built `cardsync` binary (first argument).
set -euo pipefail
bin=${1:?usage: check-emulator.sh PATH/TO/cardsync}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
"$bin" --output json sandbox --addr 127.0.0.1:0 --complete-after 0 >"$out" &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do
  [ -s "$out" ] && break
  sleep 0.1
done
base=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_url"])' "$out")
common=(--config-file "$here/schemathesis.toml" run "$here/../docs/openapi.yaml" --url "$base"
  --max-examples 25 --seed 1 --max-time 60 --request-timeout 5 --warnings off --continue-on-failure)
# Merchant-key operations, then the partner-key ones.
schemathesis "${common[@]}" -H "Authorization: sandbox_merchant_key" --exclude-path /v2/merchant
schemathesis "${common[@]}" -H "Authorization: sandbox_master_key" --include-path /v2/merchant
# The issuer side, with its bearer token.
schemathesis --config-file "$here/schemathesis.toml" run "$here/../docs/openapi-issuer.yaml" --url "$base" \
  --max-examples 25 --seed 1 --max-time 60 --request-timeout 5 --warnings off --continue-on-failure \
  -H "Authorization: Bearer sandbox_issuer_token"
