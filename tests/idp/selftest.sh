#!/usr/bin/env bash
# End-to-end check of the test IdP with curl and the headless helpers.
#   tests/idp/selftest.sh DIR
# Starts the server for DIR (start.sh), runs every check, stops it, restarts it with knobs,
# and stops it again. Exits non-zero at the first failure. Scratch files (they hold tokens)
# stay in DIR/selftest/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/idp/state-dir.sh
. "$HERE/state-dir.sh"
T="$DIR/selftest"
rm -rf "$T"
mkdir -p "$T"
chmod 700 "$T"

PASSED=0
LISTENER_PID=
cleanup() {
  [ -n "$LISTENER_PID" ] && kill "$LISTENER_PID" 2>/dev/null || true
  "$HERE/stop.sh" "$DIR" || true
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); echo "ok   $*"; }
die() {
  echo "FAIL $*" >&2
  echo "$PASSED passed, 1 failed"
  exit 1
}
# jq-like: j FILE 'JS expression over d' (prints strings raw, other values as JSON)
j() {
  node -e '
    const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const v = (0, eval)("(d) => (" + process.argv[2] + ")")(d);
    process.stdout.write(typeof v === "string" ? v : JSON.stringify(v ?? null));
  ' "$1" "$2"
}
# expect FILE 'JS boolean expression over d' DESCRIPTION
expect() {
  [ "$(j "$1" "$2")" = "true" ] || die "$3 (got: $(head -c 400 "$1"))"
  ok "$3"
}
# claims of a JWT in a JSON file field: jwt_part FILE FIELD 0|1 > OUT
jwt_part() {
  node -e '
    const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const part = d[process.argv[2]].split(".")[Number(process.argv[3])];
    process.stdout.write(Buffer.from(part, "base64url").toString());
  ' "$1" "$2" "$3"
}

# ---------------------------------------------------------------------------------------------
echo "== start/stop"
"$HERE/stop.sh" "$DIR"
ISSUER="$("$HERE/start.sh" "$DIR")"
ISSUER2="$("$HERE/start.sh" "$DIR")"
[ "$ISSUER" = "$ISSUER2" ] || die "start.sh twice gives one server ($ISSUER vs $ISSUER2)"
ok "start.sh twice: one server at $ISSUER"
[[ "$ISSUER" =~ ^https://127\.0\.0\.1:[0-9]+$ ]] || die "issuer form: $ISSUER"
expect "$DIR/ready.json" "d.issuer === '$ISSUER' && d.ca === '$DIR/ca.pem' && d.port > 0 && d.pid > 0" "ready.json fields"

CA="$DIR/ca.pem"
C=(curl -sS --cacert "$CA" --max-time 20)
API=https://slurm.example/api
DEVGT=urn:ietf:params:oauth:grant-type:device_code

"${C[@]}" -X POST "$ISSUER/_test/reset" >/dev/null

# ---------------------------------------------------------------------------------------------
echo "== discovery"
"${C[@]}" "$ISSUER/.well-known/openid-configuration" >"$T/disc.json"
expect "$T/disc.json" "d.issuer === '$ISSUER'" "discovery issuer equals ready.json issuer"
for f in authorization_endpoint token_endpoint device_authorization_endpoint userinfo_endpoint jwks_uri \
  revocation_endpoint end_session_endpoint introspection_endpoint; do
  [ "$(j "$T/disc.json" "typeof d.$f === 'string' && d.$f.startsWith('$ISSUER/')")" = true ] || die "discovery lacks $f"
done
ok "discovery has all endpoints"
expect "$T/disc.json" "['scopes_supported','response_types_supported','code_challenge_methods_supported','token_endpoint_auth_methods_supported'].every((k) => Array.isArray(d[k])) && d.code_challenge_methods_supported.includes('S256')" "discovery lists (fields QLAM Core requires)"

# ---------------------------------------------------------------------------------------------
echo "== device flow"
device_auth() { # device_auth OUT [extra curl args]
  local out="$1"; shift
  "${C[@]}" "$ISSUER/device/auth" -d client_id=qlam-cli --data-urlencode "scope=openid offline_access email profile organization:test" "$@" >"$out"
}
poll() { # poll DEVICE_JSON OUT
  "${C[@]}" "$ISSUER/token" -d client_id=qlam-cli -d "grant_type=$DEVGT" --data-urlencode "device_code=$(j "$1" d.device_code)" >"$2"
}
device_auth "$T/da.json" -d audience=$API
expect "$T/da.json" "d.interval === 1 && d.user_code && d.device_code && d.verification_uri === '$ISSUER/device' && d.verification_uri_complete.includes('user_code=')" "device authorization answer has interval 1 and verification URIs"
poll "$T/da.json" "$T/p1.json"
expect "$T/p1.json" "d.error === 'authorization_pending'" "first poll: authorization_pending"
node "$HERE/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user alice --password alice-pw --uri "$(j "$T/da.json" d.verification_uri_complete)" >/dev/null \
  || die "approve.mjs --uri as alice"
ok "approve.mjs approves through verification_uri_complete"
sleep 1.1
poll "$T/da.json" "$T/tok.json"
expect "$T/tok.json" "d.access_token && d.refresh_token && d.id_token && d.token_type === 'Bearer' && d.expires_in === 3600" "device poll after approval: access, refresh and ID token"
jwt_part "$T/tok.json" access_token 0 >"$T/at.h.json"
jwt_part "$T/tok.json" access_token 1 >"$T/at.json"
expect "$T/at.h.json" "d.typ === 'at+jwt' && d.alg === 'ES256'" "access token is an RFC 9068 JWT (at+jwt, ES256)"
expect "$T/at.json" "d.aud === '$API' && d.sub === 'alice' && d.iss === '$ISSUER' && d.client_id === 'qlam-cli' && d.scope.split(' ').includes('organization:test')" "access token: aud $API, sub alice, organization:test scope"
jwt_part "$T/tok.json" id_token 1 >"$T/idt.json"
expect "$T/idt.json" "d.sub === 'alice' && d.email === 'alice@example.org' && d.aud === 'qlam-cli'" "ID token claims"
"${C[@]}" "$ISSUER/me" -H "Authorization: Bearer $(j "$T/tok.json" d.access_token)" >"$T/me.json"
expect "$T/me.json" "d.sub === 'alice' && d.email === 'alice@example.org' && d.name === 'Alice'" "userinfo answers for the API JWT"

# Polling faster than the interval.
device_auth "$T/db.json"
poll "$T/db.json" "$T/pb1.json"
poll "$T/db.json" "$T/pb2.json"
expect "$T/pb1.json" "d.error === 'authorization_pending'" "poll B1: authorization_pending"
expect "$T/pb2.json" "d.error === 'slow_down'" "immediate poll B2: slow_down"

# Denial, wrong password, unknown code.
device_auth "$T/dc.json"
if node "$HERE/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user alice --password wrong --user-code "$(j "$T/dc.json" d.user_code)" 2>"$T/approve.err"; then
  die "approve.mjs with a wrong password must fail"
fi
grep -q "Invalid username or password" "$T/approve.err" || die "wrong password message: $(cat "$T/approve.err")"
ok "approve.mjs with a wrong password fails"
if node "$HERE/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user alice --password alice-pw --user-code BCDF-GHJK 2>"$T/approve.err"; then
  die "approve.mjs with an unknown code must fail"
fi
ok "approve.mjs with an unknown user code fails ($(cat "$T/approve.err"))"
# (a code whose login was started stays "in use": deny on a fresh one)
device_auth "$T/dc.json"
node "$HERE/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user alice --password alice-pw --user-code "$(j "$T/dc.json" d.user_code)" --deny >/dev/null \
  || die "approve.mjs --deny"
poll "$T/dc.json" "$T/pc.json"
expect "$T/pc.json" "d.error === 'access_denied'" "approve.mjs --deny: poll gives access_denied"

# ---------------------------------------------------------------------------------------------
echo "== refresh rotation and reuse detection"
refresh() { # refresh RT OUT [extra]
  local rt="$1" out="$2"; shift 2
  "${C[@]}" "$ISSUER/token" -d client_id=qlam-cli -d grant_type=refresh_token --data-urlencode "refresh_token=$rt" "$@" >"$out"
}
RT1="$(j "$T/tok.json" d.refresh_token)"
refresh "$RT1" "$T/r2.json" -d organization=test
expect "$T/r2.json" "d.access_token && d.refresh_token && d.refresh_token !== '$RT1'" "refresh returns a new refresh token"
jwt_part "$T/r2.json" access_token 1 >"$T/at2.json"
expect "$T/at2.json" "d.aud === '$API' && d.sub === 'alice'" "refreshed access token is a JWT for the API"
RT2="$(j "$T/r2.json" d.refresh_token)"
refresh "$RT2" "$T/r3.json" -d audience=$API
expect "$T/r3.json" "d.refresh_token && d.refresh_token !== '$RT2'" "refresh with audience= rotates again"
RT3="$(j "$T/r3.json" d.refresh_token)"
refresh "$RT2" "$T/replay.json"
expect "$T/replay.json" "d.error === 'invalid_grant'" "replaying a spent refresh token: invalid_grant"
refresh "$RT3" "$T/after.json"
expect "$T/after.json" "d.error === 'invalid_grant'" "after the replay the newest refresh token is refused too (grant revoked)"

# ---------------------------------------------------------------------------------------------
echo "== client credentials"
"${C[@]}" -u qlam-m2m:m2m-secret "$ISSUER/token" -d grant_type=client_credentials -d audience=$API >"$T/cc1.json"
expect "$T/cc1.json" "d.access_token && d.expires_in === 3600 && !d.refresh_token" "client_secret_basic + audience: token, no refresh token"
jwt_part "$T/cc1.json" access_token 1 >"$T/cc1.at.json"
expect "$T/cc1.at.json" "d.aud === '$API' && d.sub === 'qlam-m2m' && d.client_id === 'qlam-m2m'" "client-credentials token is a JWT for the API"
"${C[@]}" "$ISSUER/token" -d grant_type=client_credentials -d client_id=qlam-m2m-post -d client_secret=m2m-post-secret -d audience=$API >"$T/cc2.json"
jwt_part "$T/cc2.json" access_token 1 >"$T/cc2.at.json"
expect "$T/cc2.at.json" "d.aud === '$API' && d.sub === 'qlam-m2m-post'" "client_secret_post + audience: JWT for the API"
"${C[@]}" -u qlam-m2m:m2m-secret "$ISSUER/token" -d grant_type=client_credentials -d audience=https://other.example/api >"$T/cc3.json"
expect "$T/cc3.json" "d.error === 'invalid_target'" "unknown audience: invalid_target"
"${C[@]}" -u qlam-m2m:wrong "$ISSUER/token" -d grant_type=client_credentials >"$T/cc4.json"
expect "$T/cc4.json" "d.error === 'invalid_client'" "wrong client secret: invalid_client"

# ---------------------------------------------------------------------------------------------
echo "== authorization code + PKCE (loopback redirect on a random port)"
node -e '
  const http = require("http"); const fs = require("fs");
  const s = http.createServer((req, res) => {
    fs.writeFileSync(process.argv[1] + ".url", req.url); res.end("ok"); s.close();
  });
  s.listen(0, "127.0.0.1", () => fs.writeFileSync(process.argv[1] + ".port", String(s.address().port)));
  setTimeout(() => process.exit(1), 30000).unref();
' "$T/cb" &
LISTENER_PID=$!
for _ in $(seq 50); do [ -s "$T/cb.port" ] && break; sleep 0.1; done
PORT="$(cat "$T/cb.port")"
REDIRECT="http://127.0.0.1:$PORT/callback"
VERIFIER="$(openssl rand -hex 32)"
CHALLENGE="$(printf %s "$VERIFIER" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=')"
AUTH_URL="$ISSUER/auth?client_id=qlam-cli&response_type=code&scope=openid%20email%20profile%20offline_access&redirect_uri=$REDIRECT&code_challenge=$CHALLENGE&code_challenge_method=S256&state=st4te&audience=https%3A%2F%2Fslurm.example%2Fapi"
node "$HERE/authorize.mjs" --ca "$CA" --user bob --password bob-pw --url "$AUTH_URL" >"$T/redirect.txt" || die "authorize.mjs as bob"
wait "$LISTENER_PID" || die "loopback listener"
LISTENER_PID=
grep -q "^http://127.0.0.1:$PORT/callback?code=" "$T/redirect.txt" || die "redirect URL: $(cat "$T/redirect.txt")"
grep -q "state=st4te" "$T/cb.url" || die "listener got the redirect: $(cat "$T/cb.url")"
ok "authorize.mjs delivered the code to the loopback listener on port $PORT"
CODE="$(node -e 'console.log(new URL(process.argv[1], "http://x").searchParams.get("code"))' "$(cat "$T/cb.url")")"
"${C[@]}" "$ISSUER/token" -d client_id=qlam-cli -d grant_type=authorization_code --data-urlencode "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT" -d "code_verifier=$(openssl rand -hex 32)" >"$T/ac-bad.json"
expect "$T/ac-bad.json" "d.error === 'invalid_grant'" "wrong code_verifier: invalid_grant"
# (a failed PKCE check does not consume the code in oidc-provider; exchange it properly now)
"${C[@]}" "$ISSUER/token" -d client_id=qlam-cli -d grant_type=authorization_code --data-urlencode "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT" -d "code_verifier=$VERIFIER" >"$T/ac.json"
expect "$T/ac.json" "d.access_token && d.refresh_token && d.id_token && d.scope.split(' ').includes('offline_access')" "code exchange with the right verifier: tokens incl. refresh token"
jwt_part "$T/ac.json" access_token 1 >"$T/ac.at.json"
expect "$T/ac.at.json" "d.aud === '$API' && d.sub === 'bob'" "authorization-code access token: JWT for the API, sub bob"
"${C[@]}" -o /dev/null -w '%{redirect_url}' "$ISSUER/auth?client_id=qlam-cli&response_type=code&scope=openid&redirect_uri=$REDIRECT" >"$T/nopkce.txt"
grep -q "error=invalid_request" "$T/nopkce.txt" || die "authorization without PKCE must be refused: $(cat "$T/nopkce.txt")"
ok "authorization request without PKCE: invalid_request"

# ---------------------------------------------------------------------------------------------
echo "== introspection and revocation"
BOB_RT="$(j "$T/ac.json" d.refresh_token)"
"${C[@]}" -u qlam-introspect:introspect-secret "$ISSUER/token/introspection" --data-urlencode "token=$BOB_RT" >"$T/i1.json"
expect "$T/i1.json" "d.active === true && d.sub === 'bob' && d.client_id === 'qlam-cli'" "qlam-introspect: refresh token active, sub bob"
"${C[@]}" -u qlam-introspect:wrong "$ISSUER/token/introspection" --data-urlencode "token=$BOB_RT" >"$T/i2.json"
expect "$T/i2.json" "d.error === 'invalid_client'" "introspection with a wrong secret: invalid_client"
STATUS="$("${C[@]}" -o "$T/rev.out" -w '%{http_code}' "$ISSUER/token/revocation" -d client_id=qlam-cli --data-urlencode "token=$BOB_RT" -d token_type_hint=refresh_token)"
[ "$STATUS" = 200 ] || die "revocation status $STATUS"
ok "revocation endpoint: 200"
"${C[@]}" -u qlam-introspect:introspect-secret "$ISSUER/token/introspection" --data-urlencode "token=$BOB_RT" >"$T/i3.json"
expect "$T/i3.json" "d.active === false" "revoked refresh token: inactive"
refresh "$BOB_RT" "$T/r-revoked.json"
expect "$T/r-revoked.json" "d.error === 'invalid_grant'" "revoked refresh token: invalid_grant"

# ---------------------------------------------------------------------------------------------
echo "== /_test/revoke"
device_auth "$T/dd.json"
node "$HERE/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user carol --password carol-pw --user-code "$(j "$T/dd.json" d.user_code)" >/dev/null \
  || die "approve.mjs as carol"
poll "$T/dd.json" "$T/carol.json"
expect "$T/carol.json" "!!d.refresh_token" "carol logged in through the device flow"
"${C[@]}" -X POST "$ISSUER/_test/revoke" -H 'content-type: application/json' -d '{"sub":"carol"}' >"$T/tr.json"
expect "$T/tr.json" "d.ok === true && d.revoked_grants >= 1" "/_test/revoke revokes carol's grants"
refresh "$(j "$T/carol.json" d.refresh_token)" "$T/carol-r.json"
expect "$T/carol-r.json" "d.error === 'invalid_grant'" "carol's refresh token: invalid_grant"

echo "== device code redeemed twice"
device_auth "$T/de.json"
node "$HERE/approve.mjs" --issuer "$ISSUER" --ca "$CA" --user dave --password dave-pw --user-code "$(j "$T/de.json" d.user_code)" >/dev/null \
  || die "approve.mjs as dave"
poll "$T/de.json" "$T/dave.json"
expect "$T/dave.json" "!!d.refresh_token" "dave logged in through the device flow"
poll "$T/de.json" "$T/dave2.json"
expect "$T/dave2.json" "d.error === 'invalid_grant'" "redeeming the device code again: invalid_grant"
refresh "$(j "$T/dave.json" d.refresh_token)" "$T/dave-r.json"
expect "$T/dave-r.json" "d.error === 'invalid_grant'" "... and it revoked the grant: dave's refresh token is invalid_grant"

# ---------------------------------------------------------------------------------------------
echo "== /_test/stats"
"${C[@]}" "$ISSUER/_test/stats" >"$T/stats.json"
expect "$T/stats.json" "d.token_requests.refresh_token === 7 && d.successes.refresh_token === 2 && d.errors_by_grant.refresh_token.invalid_grant === 5" "stats: 7 refresh requests, 2 ok, 5 invalid_grant"
expect "$T/stats.json" "d.token_requests.device_code === 8 && d.errors.slow_down === 1 && d.errors.access_denied === 1 && d.device_authorizations === 6" "stats: device polls, slow_down, access_denied, device authorizations"
expect "$T/stats.json" "d.token_requests.client_credentials === 4 && d.token_requests.authorization_code === 2 && d.errors.invalid_target === 1 && d.errors.invalid_client === 1" "stats: client credentials and authorization code"
"${C[@]}" -X POST "$ISSUER/_test/reset" >/dev/null
"${C[@]}" "$ISSUER/_test/stats" >"$T/stats0.json"
expect "$T/stats0.json" "d.token_requests_total === 0 && Object.keys(d.token_requests).length === 0 && d.device_authorizations === 0" "/_test/reset zeroes the counters"

# ---------------------------------------------------------------------------------------------
echo "== fault injection"
fault() { "${C[@]}" -X POST "$ISSUER/_test/fault" -H 'content-type: application/json' -d "$1" >/dev/null; }
cc() { "${C[@]}" -u qlam-m2m:m2m-secret "$ISSUER/token" -d grant_type=client_credentials "$@"; }
fault '{"mode":"status429","count":2,"retry_after":7}'
for i in 1 2; do
  cc -D "$T/h429.txt" -o "$T/b429.json" -w '%{http_code}' >"$T/s429.txt"
  [ "$(cat "$T/s429.txt")" = 429 ] && grep -qi '^retry-after: 7' "$T/h429.txt" || die "429 fault #$i"
done
cc -o "$T/b.json" -w '%{http_code}' >"$T/s.txt"
[ "$(cat "$T/s.txt")" = 200 ] || die "request after the faults must succeed"
ok "status429 x2 with Retry-After: 7, then 200"
fault '{"mode":"html"}'
cc -D "$T/hh.txt" -o "$T/bh.html" -w '%{http_code}' >"$T/sh.txt"
[ "$(cat "$T/sh.txt")" = 502 ] && grep -qi '^content-type: text/html' "$T/hh.txt" || die "html fault"
ok "html: 502 text/html"
fault '{"mode":"status500"}'
[ "$(cc -o /dev/null -w '%{http_code}')" = 500 ] || die "status500 fault"
ok "status500: 500"
fault '{"mode":"garbage"}'
cc -o "$T/bg.txt" -w '%{http_code}' >"$T/sg.txt"
if [ "$(cat "$T/sg.txt")" != 200 ] || node -e 'JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"))' "$T/bg.txt" 2>/dev/null; then
  die "garbage fault"
fi
ok "garbage: 200 with unparseable JSON"
fault '{"mode":"hang"}'
set +e
cc --max-time 2 -o /dev/null 2>/dev/null
RC=$?
set -e
[ "$RC" = 28 ] || die "hang fault: curl exit $RC, expected 28 (timeout)"
ok "hang: no answer (client timed out)"
[ "$(cc -o /dev/null -w '%{http_code}')" = 200 ] || die "after hang"
ok "server answers again after the hang"
"${C[@]}" "$ISSUER/_test/stats" >"$T/stats1.json"
expect "$T/stats1.json" "d.faults_injected.status429 === 2 && d.faults_injected.html === 1 && d.faults_injected.hang === 1 && d.pending_fault === null" "stats count injected faults"

# ---------------------------------------------------------------------------------------------
echo "== stop twice, knobs"
"$HERE/stop.sh" "$DIR"
"$HERE/stop.sh" "$DIR"
[ ! -e "$DIR/ready.json" ] || die "ready.json left after stop"
ok "stop.sh twice; ready.json removed"
ISSUER="$(IDP_CC_TTL=7 IDP_ACCESS_TOKEN_FORMAT=opaque "$HERE/start.sh" "$DIR")"
"${C[@]}" -u qlam-m2m:m2m-secret "$ISSUER/token" -d grant_type=client_credentials >"$T/cc-opaque.json"
expect "$T/cc-opaque.json" "d.expires_in === 7 && d.access_token.split('.').length === 1" "IDP_CC_TTL=7 and IDP_ACCESS_TOKEN_FORMAT=opaque"
"${C[@]}" -u qlam-introspect:introspect-secret "$ISSUER/token/introspection" --data-urlencode "token=$(j "$T/cc-opaque.json" d.access_token)" >"$T/i-opaque.json"
expect "$T/i-opaque.json" "d.active === true && d.aud === '$API' && d.client_id === 'qlam-m2m'" "opaque access token introspects as active for the API"
"$HERE/stop.sh" "$DIR"
ISSUER="$(IDP_TOKEN_EXCHANGE=off "$HERE/start.sh" "$DIR")"
"${C[@]}" "$ISSUER/.well-known/openid-configuration" >"$T/disc-nox.json"
expect "$T/disc-nox.json" "!d.grant_types_supported.includes('urn:ietf:params:oauth:grant-type:token-exchange')" "IDP_TOKEN_EXCHANGE=off: the grant is not in discovery"
"${C[@]}" "$ISSUER/token" -d client_id=qlam-cli -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token=x -d subject_token_type=urn:ietf:params:oauth:token-type:access_token >"$T/te-nox.json" || true
expect "$T/te-nox.json" "d.error === 'unsupported_grant_type'" "IDP_TOKEN_EXCHANGE=off: unsupported_grant_type"
"$HERE/stop.sh" "$DIR"

echo "$PASSED passed, 0 failed"
