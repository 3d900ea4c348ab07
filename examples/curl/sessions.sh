#!/usr/bin/env bash
# The same calls over HTTP/JSON with curl, through switchboard-http:
# list a user's sessions; with --terminate, close them except the client IDs
# given with --keep, then list what is left.
#
#   bash examples/curl/sessions.sh 42
#   bash examples/curl/sessions.sh 42 --terminate --keep <client id>,<client id>
#
# SWITCHBOARD_HTTP (default http://127.0.0.1:8080), SWITCHBOARD_API_KEY (the
# dev key by default), SWITCHBOARD_APP (demo). Each answer is printed as the
# API gives it (the response message itself, no envelope; GET /openapi.json
# describes them). An answer without "complete": true is asked again, at
# most 3 times, 250 ms and 500 ms apart; exit status 3 when it stays
# incomplete, 1 when a call fails.
set -uo pipefail
base=${SWITCHBOARD_HTTP:-http://127.0.0.1:8080}
key=${SWITCHBOARD_API_KEY:-dev-api-key-change-me}
app=${SWITCHBOARD_APP:-demo}
if (($# < 1)) || [[ $1 == -* ]]; then
  echo "usage: sessions.sh USER [--terminate] [--keep ID,ID]" >&2
  exit 2
fi
user=$1
shift
terminate=0 keep=""
while (($#)); do
  case $1 in
    --terminate) terminate=1 ;;
    --keep) keep=${2:?--keep needs client IDs}; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# call METHOD PATH [BODY]: one request; prints the body, fails on an HTTP error.
call() {
  local out status
  out=$(curl -sS --max-time 5 -X "$1" -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} -w '\n%{http_code}' "$base$2") || return 1
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  echo "$body"
  [[ $status == 200 ]] || { echo "error: HTTP $status" >&2; return 1; }
}

# until_complete WHAT METHOD PATH [BODY]: again while "complete": true is missing.
until_complete() {
  local what=$1 attempt
  shift
  for attempt in 1 2 3; do
    call "$@" | tee "$tmp" || return 1
    grep -Eq '"complete": ?true' "$tmp" && return 0
    ((attempt < 3)) && { echo "$what: incomplete (attempt $attempt of 3); asking again" >&2; sleep "0.$((25 * attempt))"; }
  done
  echo "$what: INCOMPLETE: the gateways in gateways_missing were not heard" >&2
  return 3
}

path=/apps/$app/users/$user
echo "# GET $path/connections"
until_complete UserConnections GET "$path/connections"; rc=$?
((rc == 1)) && exit 1
if ((terminate)); then
  ids=""
  IFS=, read -ra kept <<<"$keep"
  for id in "${kept[@]}"; do ids+="${ids:+,}\"$id\""; done
  echo "# POST $path/terminate_connections"
  until_complete TerminateUser POST "$path/terminate_connections" "{\"except_client_ids\": [$ids]}" || rc=$?
  ((rc == 1)) && exit 1
  echo "# GET $path/connections"
  until_complete UserConnections GET "$path/connections" || rc=$?
fi
exit "$rc"
