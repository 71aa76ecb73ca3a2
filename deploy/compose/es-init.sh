#!/usr/bin/env bash
# es-init (docker-compose.yml): check .env, then create the TLS certificates of es01 (once).
#
# Runs in the Elasticsearch image as root before es01 starts and exits: 0 when everything is in
# place, 1 with one line per problem. Every value below is checked against what Elasticsearch or
# Kibana would do with it, so a bad .env stops here with a clear message instead of as a service
# that never becomes healthy. Run again on every `docker compose up`: existing certificates are kept.
set -euo pipefail

problems=()
problem() { problems+=("$1"); }

# Secrets may hold any printable character (@:/%"'\ included): compose passes them as they are.
for v in ELASTIC_PASSWORD KIBANA_PASSWORD AUDIT_INGEST_ES_PASSWORD REDIS_PASSWORD KIBANA_ENCRYPTION_KEY \
         KIBANA_PUBLIC_URL INDEX_PREFIX LICENSE CLUSTER_NAME; do
  value="${!v:-}"
  if [[ -z "$value" ]]; then
    problem "$v is empty: set it in .env (see .env.example)"
  elif [[ "$value" == *[[:cntrl:]]* ]]; then
    problem "$v holds a control character (newline, tab...): Elasticsearch, Kibana and Redis read one line"
  fi
done

# Elasticsearch's native realm: "passwords must be at least [6] characters long".
for v in ELASTIC_PASSWORD KIBANA_PASSWORD AUDIT_INGEST_ES_PASSWORD; do
  value="${!v:-}"
  if [[ -n "$value" && ${#value} -lt 6 ]]; then
    problem "$v has ${#value} characters: Elasticsearch requires passwords of at least 6"
  fi
done
# The image's entrypoint stores it with `echo "$ELASTIC_PASSWORD" | elasticsearch-keystore add`.
if [[ "${ELASTIC_PASSWORD:-}" =~ ^-[neE]+$ ]]; then
  problem "ELASTIC_PASSWORD would be taken as an option of echo by the Elasticsearch image"
fi

# Kibana's image turns each variable into --setting=value, joined into one unquoted word list, and
# Kibana's command line parses each value as JSON first: no blanks, and nothing that is JSON.
for v in KIBANA_PASSWORD KIBANA_ENCRYPTION_KEY KIBANA_PUBLIC_URL; do
  value="${!v:-}"
  if [[ "$value" =~ [[:space:]] ]]; then
    problem "$v holds a blank: Kibana's image would split it into several arguments"
  elif [[ "$value" =~ ^(true|false|null|-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?)$ || "$value" =~ ^[\[\{\"] ]]; then
    problem "$v would be read as JSON by Kibana's command line (a number, true/false/null, or starting with [ { \")"
  fi
done
key="${KIBANA_ENCRYPTION_KEY:-}"
if [[ -n "$key" && ${#key} -lt 32 ]]; then
  problem "KIBANA_ENCRYPTION_KEY has ${#key} characters: Kibana requires at least 32 (it would not start)"
fi
url="${KIBANA_PUBLIC_URL:-}"
if [[ -n "$url" && ! "$url" =~ ^https?://[^/?#@[:space:]]+/?$ ]]; then
  problem "KIBANA_PUBLIC_URL=$url: Kibana takes http(s)://host[:port] only (no path, query or user)"
fi
if [[ -n "${LICENSE:-}" && "$LICENSE" != basic && "$LICENSE" != trial ]]; then
  problem "LICENSE=$LICENSE: Elasticsearch generates a basic or trial license only"
fi
if [[ "${CLUSTER_NAME:-}" == *:* ]]; then
  problem "CLUSTER_NAME must not contain ':' (Elasticsearch refuses it)"
fi
prefix="${INDEX_PREFIX:-}"
if [[ -n "$prefix" ]]; then
  if [[ "$prefix" != "${prefix,,}" || "$prefix" == *[\\/*?\"\<\>\|\ ,#:]* || "$prefix" == [_+-]* ]]; then
    problem "INDEX_PREFIX=$prefix cannot start an index name (lowercase, none of \\/*?\"<>| ,#:, not starting with _ - +)"
  fi
fi
case "${REDIS_APPENDFSYNC:-always}" in
  always|everysec|no) ;;
  *) problem "REDIS_APPENDFSYNC=$REDIS_APPENDFSYNC: always, everysec or no (Redis's appendfsync; see .env.example)" ;;
esac
if [[ -n "${RETENTION_DAYS:-}" && ! "$RETENTION_DAYS" =~ ^[1-9][0-9]*$ ]]; then
  problem "RETENTION_DAYS=$RETENTION_DAYS: a number of days (at least 1), or empty to keep everything"
fi

# Elasticsearch maps its index files into memory: it needs vm.max_map_count >= 262144. The kernel
# setting is the host's (not per container); with discovery.type single-node Elasticsearch itself
# only warns, and fails later under load.
map_count_file="${MAX_MAP_COUNT_FILE:-/proc/sys/vm/max_map_count}"
if [[ -r "$map_count_file" ]]; then
  map_count="$(cat "$map_count_file")"
  if [[ "$map_count" =~ ^[0-9]+$ && "$map_count" -lt 262144 ]]; then
    problem "vm.max_map_count is $map_count, Elasticsearch needs 262144: on the host run
  sysctl -w vm.max_map_count=262144 && echo vm.max_map_count=262144 > /etc/sysctl.d/99-elasticsearch.conf"
  fi
fi

if (( ${#problems[@]} )); then
  for p in "${problems[@]}"; do echo "es-init: $p" >&2; done
  echo "es-init: fix .env (or the host) and run docker compose up -d again" >&2
  exit 1
fi

cd "${ES_HOME:-/usr/share/elasticsearch}"
certs=config/certs
if [[ ! -f "$certs/ca/ca.crt" ]]; then
  echo "es-init: creating the certificate authority"
  bin/elasticsearch-certutil ca --silent --pem --out "$certs/ca.zip"
  unzip -oq "$certs/ca.zip" -d "$certs"
fi
if [[ ! -f "$certs/es01/es01.crt" ]]; then
  echo "es-init: creating the es01 certificate"
  printf 'instances:\n  - name: es01\n    dns: [es01, localhost]\n    ip: [127.0.0.1]\n' > "$certs/instances.yml"
  bin/elasticsearch-certutil cert --silent --pem --in "$certs/instances.yml" --out "$certs/certs.zip" \
    --ca-cert "$certs/ca/ca.crt" --ca-key "$certs/ca/ca.key"
  unzip -oq "$certs/certs.zip" -d "$certs"
fi
chown -R root:root "$certs"
find "$certs" -type d -exec chmod 750 {} +
find "$certs" -type f -exec chmod 640 {} +
# The CA certificate is public: the worker (uid 10001) and Kibana must read it; keys stay private.
# es01 runs as uid 1000, group 0 (root): the group bits let it read its key and certificate.
chmod 755 "$certs" "$certs/ca"
chmod 644 "$certs/ca/ca.crt"
echo "es-init: .env checked, certificates in place"
