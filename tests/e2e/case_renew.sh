# shellcheck shell=bash disable=SC2154  # sourced by run.sh (plug_args etc. are its)
# Case r of tests/e2e/run.sh: the job's token file stays valid while the job runs
# (`qlam-auth job-renewer`, started by the plugin in user_init), with access tokens of 60 s.
#
# Sourced by run.sh after the other cases (it uses run.sh's variables and helpers: ROOT, RUN,
# CA, TOKEN_DIR, JOBS, SECRETS, as_user, user_home, wait_job, job_out, login_user, t_begin/...).
# Three more test IdPs (same CA as the main one, so plugstack ca_bundle= covers them; their
# issuers are added to the site file's list): A (60 s tokens) for qa7 and qa9, B (60 s) for qa8,
# so that the refresh counts of r1 and r2 are read apart while both run at once, and C (300 s)
# for qa9 in r6.
#
#   r1  one job of ~150 s reads its token file every 15 s and calls userinfo with it: every call
#       succeeds; the IdP counts at most ceil(150 / 30) + 1 refreshes (renewal at half of 60 s)
#   r2  five such jobs of one user at once: at most one refresh more than r1's single job
#   r3  scancel in the middle: within 5 s no process of the user is left, the job is not
#       COMPLETING, its token directory is gone, the node is idle
#   r4  the login revoked in the middle: the job keeps running and sees the reason in
#       $QLAM_TOKEN_STATUS_FILE; slurmd's log has it; the node is idle (not drained)
#   r5  the IdP fails in the middle (two HTTP 500s) and comes back: the status file says
#       retrying, then ok again, and the token file works
#   r6  a 100-task array with an expired token, 5-minute tokens (IdP C) and plugstack
#       min_valid=600: one refresh for all, one token everywhere, the cap said in slurmd's log

R_TTL=60
R_DURATION=150
R_USERS=(qa7 qa8 qa9)

r_idp() { # NAME USERS [TTL]: start an IdP (default 60 s tokens) that shares the main IdP's CA
    local st=$RUN/idp-$1
    mkdir -p "$st"
    cp "$IDP_STATE"/{ca.pem,ca.key,server.pem,server.key} "$st/"
    IDP_ACCESS_TTL=${3:-$R_TTL} start_idp "$st" "$2"
}
r_control() { # ISSUER PATH JSON: the test IdP's control API (/_test/...)
    curl -sf --cacert "$CA" --max-time 10 -X POST -H 'content-type: application/json' \
        -d "$3" "$1/_test/$2" >/dev/null
}
r_wait_status() { # JOB: until the job's renewer has written its status file (at most 20 s)
    local i
    for i in $(seq 100); do
        [ -e "$TOKEN_DIR/$1/token.status" ] && return 0
        sleep 0.2
    done
    return 1
}
r_refreshes() { # ISSUER
    curl -sf --cacert "$CA" --max-time 10 "$1/_test/stats" | jq -r '.token_requests.refresh_token // 0'
}
r_submit() { # USER NAME SCRIPT [SBATCH ARGS...]
    printf '%s' "$3" | submit "$1" "$2" "${@:4}"
}
# r4/r5: submits SCRIPT as USER (job NAME), waits until its renewer has written the status file,
# disturbs the renewal with `r_control ISSUER PATH JSON` (WHAT names it), waits at most WAIT s for
# the job to complete, and shows its output. Sets R_ID and R_OUT.
r_disturbed_job() { # USER NAME SCRIPT WHAT ISSUER PATH JSON WAIT
    local u=$1 name=$2
    R_ID=$(r_submit "$u" "$name" "$3") || t_fail "sbatch $name failed"
    JOBS+=("$R_ID")
    r_wait_status "$R_ID" || t_fail "job $R_ID has no renewer status file"
    r_control "$5" "$6" "$7" || t_fail "$4 failed"
    assert_eq "COMPLETED 0:0" "$(wait_job "$R_ID" "$8" || true)" "job $R_ID state"
    R_OUT=$(job_out "$u" "$name" "$R_ID")
    indent "$R_OUT"
}
# The job of r1/r2: check the token file against ISSUER's userinfo every 15 s for DURATION s.
r_reader() { # ISSUER DURATION
    cat <<EOF
#!/bin/bash
end=\$((SECONDS + $2)); n=0; bad=0; seen=
while [ \$SECONDS -lt \$end ]; do
    t=\$(tr -d '[:space:]' < "\$BEARER_TOKEN_FILE")
    code=\$(curl -s -o /dev/null -w '%{http_code}' --cacert $CA --max-time 10 -H "Authorization: Bearer \$t" $1/me)
    n=\$((n + 1)); [ "\$code" = 200 ] || bad=\$((bad + 1))
    f=\$(printf %s "\$t" | sha256sum | cut -c1-12)
    case " \$seen " in *" \$f "*) ;; *) seen="\$seen \$f" ;; esac
    echo "check \$n t=\$SECONDS userinfo=\$code token=\$f"
    sleep 15
done
echo "checks=\$n failed=\$bad tokens=\$(wc -w <<<"\$seen")"
echo "status_file=\$QLAM_TOKEN_STATUS_FILE"
jq -c '{state, failures, last_error}' "\$QLAM_TOKEN_STATUS_FILE"
EOF
}

say "r: renewal while jobs run (short-lived access tokens; users ${R_USERS[*]})"
t_begin "r: setup: three more IdPs (60 s, 60 s and 300 s tokens), ${R_USERS[*]} logged in"
ISSUER_MAIN=$ISSUER
R_ISSUER_A=$(r_idp a "qa7:qa7-pw,qa9:qa9-pw") || t_fail "IdP A did not start"
R_ISSUER_B=$(r_idp b "qa8:qa8-pw") || t_fail "IdP B did not start"
R_ISSUER_C=$(r_idp c "qa9:qa9-pw" 300) || t_fail "IdP C did not start"
# The plugin reads the site file in every hook: allow the three issuers of this case too.
printf '{"issuers": ["%s", "%s", "%s", "%s"]}\n' "$ISSUER" "$R_ISSUER_A" "$R_ISSUER_B" "$R_ISSUER_C" \
    >"$SITE_FILE.tmp" && chmod 0644 "$SITE_FILE.tmp" && mv -f "$SITE_FILE.tmp" "$SITE_FILE"
bash "$ROOT/tests/slurm/users.sh" "${R_USERS[@]}"
for u in "${R_USERS[@]}"; do
    iss=$R_ISSUER_A
    [ "$u" = qa8 ] && iss=$R_ISSUER_B
    h=$(user_home "$u")
    rm -rf "$h/.qsh" "$h/e2e"
    install -d -o "$u" -g "$(id -g "$u")" -m 0700 "$h/e2e"
    as_user "$u" qlam-auth config init --issuer "$iss" --client-id qlam-cli \
        --audience https://slurm.example/api --tenant e2e >/dev/null 2>&1 ||
        t_fail "$u: config init failed"
    ISSUER=$iss login_user "$u" "$RUN/logins/$u.out" --device --no-qr || t_fail "$u: login failed"
    remember_store "$u"
done
ISSUER=$ISSUER_MAIN
t_ok && t_pass

if t_ok; then
    # --- r1 and r2 at once ---------------------------------------------------------------------
    t_begin "r1: a ${R_DURATION} s job with ${R_TTL} s tokens: every userinfo call with its token file succeeds; refreshes within the bound"
    a0=$(r_refreshes "$R_ISSUER_A")
    b0=$(r_refreshes "$R_ISSUER_B")
    id_r1=$(r_submit qa7 r1 "$(r_reader "$R_ISSUER_A" "$R_DURATION")") || t_fail "sbatch r1 failed"
    ids_r2=()
    for i in 1 2 3 4 5; do
        id=$(r_submit qa8 "r2-$i" "$(r_reader "$R_ISSUER_B" "$R_DURATION")") || t_fail "sbatch r2-$i failed"
        ids_r2+=("$id")
    done
    JOBS+=("$id_r1" "${ids_r2[@]}")
    assert_eq "COMPLETED 0:0" "$(wait_job "$id_r1" $((R_DURATION + 120)) || true)" "job $id_r1 state"
    for id in "${ids_r2[@]}"; do
        assert_eq "COMPLETED 0:0" "$(wait_job "$id" 120 || true)" "job $id state"
    done
    r1_refreshes=$(($(r_refreshes "$R_ISSUER_A") - a0))
    r2_refreshes=$(($(r_refreshes "$R_ISSUER_B") - b0))
    out=$(job_out qa7 r1 "$id_r1")
    indent "$(tail -n 4 <<<"$out")"
    checks=$(sed -n 's/^checks=\([0-9]*\).*/\1/p' <<<"$out")
    [ "${checks:-0}" -ge 9 ] || t_fail "the job made only ${checks:-0} checks"
    assert_contains "$out" "failed=0" "every userinfo call with the token file succeeded"
    ntok=$(sed -n 's/.*tokens=\([0-9]*\).*/\1/p' <<<"$out")
    [ "${ntok:-0}" -ge 3 ] || t_fail "the token file was renewed too rarely (${ntok:-0} tokens seen)"
    assert_contains "$out" '"state":"ok"' "the status file says ok"
    bound=$(((R_DURATION + R_TTL / 2 - 1) / (R_TTL / 2) + 1))
    echo "  r1: $r1_refreshes refresh request(s) for one ${R_DURATION} s job (bound $bound); tokens seen: $ntok"
    [ "$r1_refreshes" -ge 1 ] && [ "$r1_refreshes" -le "$bound" ] ||
        t_fail "r1: $r1_refreshes refreshes, expected 1..$bound"
    t_pass

    t_begin "r2: five such jobs of one user at once cost at most one refresh more than one job"
    for i in 1 2 3 4 5; do
        o=$(job_out qa8 "r2-$i" "${ids_r2[$((i - 1))]}")
        assert_contains "$o" "failed=0" "r2-$i: every userinfo call succeeded"
    done
    echo "  r2: $r2_refreshes refresh request(s) for five jobs (r1: $r1_refreshes for one)"
    [ "$r2_refreshes" -le $((r1_refreshes + 1)) ] ||
        t_fail "five jobs made $r2_refreshes refreshes, one job $r1_refreshes"
    t_pass

    # --- r3: scancel in the middle --------------------------------------------------------------
    t_begin "r3: scancel in the middle: no process of the user within 5 s, not COMPLETING, token directory gone, node idle"
    id_r3=$(r_submit qa9 r3 $'#!/bin/bash\nsleep 600\n') || t_fail "sbatch r3 failed"
    JOBS+=("$id_r3")
    for _ in $(seq 100); do   # up to 20 s for the job to start and its renewer to appear
        pgrep -u qa9 -f 'qlam-auth job-renewer' >/dev/null && break
        sleep 0.2
    done
    pgrep -u qa9 -f "qlam-auth job-renewer --job $id_r3" >/dev/null ||
        t_fail "no renewer of job $id_r3 is running"
    assert_eq 1 "$(pgrep -u qa9 -fc "qlam-auth job-renewer --job $id_r3")" "one renewer for the job"
    scancel "$id_r3"
    gone=no
    for _ in $(seq 50); do    # 5 s
        if ! pgrep -u qa9 >/dev/null && [ ! -e "$TOKEN_DIR/$id_r3" ]; then gone=yes; break; fi
        sleep 0.1
    done
    assert_eq yes "$gone" "after scancel: no process of qa9 and no token directory within 5 s"
    [ "$gone" = yes ] || indent "$(ps -u qa9 -o pid,etimes,args 2>&1; ls -la "$TOKEN_DIR/$id_r3" 2>&1)"
    st=$(wait_job "$id_r3" 30 || true)
    assert_contains "$st" "CANCELLED" "job $id_r3 state"
    assert_eq idle "$(settled_node_state)" "node state"
    t_pass

    # --- r4: the login revoked in the middle ----------------------------------------------------
    t_begin "r4: the login revoked mid-job: the job runs on, the reason is in its status file and slurmd's log, no drain"
    # shellcheck disable=SC2016  # expanded by the job
    r4_script='#!/bin/bash
for i in $(seq 120); do
    s=$(jq -r .state "$QLAM_TOKEN_STATUS_FILE" 2>/dev/null)
    [ "$s" = retrying ] && break
    sleep 1
done
echo "still running after $SECONDS s"
jq -c "{state, failures, last_error}" "$QLAM_TOKEN_STATUS_FILE"
'
    r_disturbed_job qa9 r4 "$r4_script" "revoking qa9" "$R_ISSUER_A" revoke '{"sub":"qa9"}' 180
    id_r4=$R_ID out=$R_OUT
    assert_contains "$out" '"state":"retrying"' "the status file says the renewal is failing"
    assert_contains "$out" "qlam-auth login" "the status file says how to fix it"
    assert_contains "$(slurmd_log)" "job=$id_r4 step=batch: renewal of the token file is failing" \
        "slurmd's log has the reason"
    assert_eq idle "$(settled_node_state)" "node state (not drained)"
    t_pass
    # --- r5: the IdP down in the middle, and back ------------------------------------------------
    t_begin "r5: the IdP fails mid-job and comes back: the job runs on, the status file says retrying, then ok again"
    # shellcheck disable=SC2016  # expanded by the job
    r5_script='#!/bin/bash
seen=no
for i in $(seq 200); do
    s=$(jq -r .state "$QLAM_TOKEN_STATUS_FILE" 2>/dev/null)
    [ "$s" = retrying ] && [ $seen = no ] && { seen=yes; jq -c "{state, failures, last_error}" "$QLAM_TOKEN_STATUS_FILE"; }
    [ "$s" = ok ] && [ $seen = yes ] && break
    sleep 1
done
jq -c "{state, failures, last_error}" "$QLAM_TOKEN_STATUS_FILE"
t=$(tr -d "[:space:]" < "$BEARER_TOKEN_FILE")
echo "userinfo=$(curl -s -o /dev/null -w "%{http_code}" --cacert '"$CA"' --max-time 10 -H "Authorization: Bearer $t" '"$R_ISSUER_B"'/me)"
'
    # The next two token requests get HTTP 500 (the IdP is "down"), then it answers again.
    r_disturbed_job qa8 r5 "$r5_script" "fault injection" "$R_ISSUER_B" fault '{"mode":"status500","count":2}' 240
    out=$R_OUT
    assert_contains "$out" '"state":"retrying"' "the status file said the renewal was failing"
    assert_contains "$(tail -n 2 <<<"$out" | head -n 1)" '"state":"ok"' "then ok again: renewal resumed"
    assert_contains "$out" "userinfo=200" "the token file works after the IdP came back"
    assert_eq idle "$(settled_node_state)" "node state"
    r_control "$R_ISSUER_B" fault '{"mode":"status500","count":0}' || true
    t_pass

    # --- r6: a 100-task array, 5-minute tokens, min_valid=600 ----------------------------------
    t_begin "r6: a 100-task array with an expired token, 5-minute tokens and plugstack min_valid=600: one refresh"
    h=$(user_home qa9)
    rm -rf "$h/.qsh"
    as_user qa9 qlam-auth config init --issuer "$R_ISSUER_C" --client-id qlam-cli \
        --audience https://slurm.example/api --tenant e2e >/dev/null 2>&1 || t_fail "qa9: config init failed"
    ISSUER=$R_ISSUER_C login_user qa9 "$RUN/logins/qa9-c.out" --device --no-qr || t_fail "qa9: login failed"
    ISSUER=$ISSUER_MAIN
    remember_store qa9
    bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" \
        "$plug_args min_valid=600" --state "$SLURM_STATE" >/dev/null
    as_user qa9 /usr/bin/python3 "$here/store_tool.py" expire "$(store_file qa9)"
    c0=$(r_refreshes "$R_ISSUER_C")
    # shellcheck disable=SC2016  # expanded by the job
    id_r6=$(printf '%s\n' '#!/bin/bash' 'tr -d "[:space:]" < "$QLAM_TOKEN_FILE" | sha256sum | cut -c1-64' |
        as_user qa9 sbatch --parsable --qlam-auth -J r6 -D "$h" -o "$h/e2e/r6-%A_%a.out" --array=1-100) ||
        t_fail "sbatch r6 failed"
    id_r6=${id_r6%%;*}
    JOBS+=("$id_r6")
    res=$(wait_job "$id_r6" 240 || true)
    assert_eq 100 "$(grep -c '^COMPLETED 0:0$' <<<"$res" || true)" "COMPLETED tasks"
    mapfile -t r6_ids < <(scontrol -o show job "$id_r6" | grep -o '^JobId=[0-9]*' | cut -d= -f2)
    JOBS+=("${r6_ids[@]}")
    n=$(($(r_refreshes "$R_ISSUER_C") - c0))
    echo "  r6: $n refresh request(s) for 100 tasks; $(cat "$h"/e2e/r6-"$id_r6"_*.out | sort -u | wc -l) distinct token(s)"
    assert_eq 1 "$n" "refresh requests at the IdP for the whole array"
    assert_eq 1 "$(cat "$h"/e2e/r6-"$id_r6"_*.out | sort -u | wc -l)" "distinct tokens among the tasks"
    assert_contains "$(slurmd_log)" "min_valid_capped_from_s=600" "slurmd's log says min_valid was capped"
    bash "$ROOT/tests/slurm/install-plugin.sh" "$ROOT/target/release/libqlam_spank.so" \
        "$plug_args" --state "$SLURM_STATE" >/dev/null
    t_pass
fi
for st in a b c; do bash "$ROOT/tests/idp/stop.sh" "$RUN/idp-$st" >/dev/null 2>&1 || true; done
