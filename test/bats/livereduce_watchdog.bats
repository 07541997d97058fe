#!/usr/bin/env bats
# Tests of scripts/livereduce_watchdog.sh (run: bats test/bats/livereduce_watchdog.bats).
#
# The real script runs with stubs first on PATH, in $BATS_TEST_TMPDIR/bin:
#   systemctl  records "systemctl <argv>" in $STUB_CALLS; "is-active" prints $STUB_IS_ACTIVE (default active);
#              "restart" prints $STUB_RESTART_STDERR on stderr and exits $STUB_RESTART_RC (default 0);
#              "status" prints two lines of a fake status.
#   sleep      records "sleep <argv>" and returns at once; advances the fake clock by its argument; with
#              $STUB_SLEEP_KILL_AFTER=N it sends SIGTERM to the script at its N-th call.
#   date       real date, but at the fake clock's time ($FAKE_CLOCK, epoch seconds) while that file exists.
# Log ages are set with touch -d @<epoch> relative to the fake clock. LIVEREDUCE_WATCHDOG_ONCE=1 (one check)
# is the default here; LIVEREDUCE_WATCHDOG_ITERATIONS=N runs N checks (throttling), sleeping through the stub.

# shellcheck disable=SC2030,SC2031 # bats runs each test in a subshell: exports are per test on purpose
bats_require_minimum_version 1.5.0

NOW=1767225600 # 2026-01-01T00:00:00Z: the fake clock's start
ISO=2026-01-01T00:00:00+00:00

setup() {
    SCRIPT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)/scripts/livereduce_watchdog.sh"
    BIN="$BATS_TEST_TMPDIR/bin"
    mkdir -p "$BIN"
    REAL_DATE="$(command -v date)"
    export REAL_DATE
    export STUB_CALLS="$BATS_TEST_TMPDIR/calls"
    export FAKE_CLOCK="$BATS_TEST_TMPDIR/clock"
    echo "$NOW" >"$FAKE_CLOCK"
    export TZ=UTC

    cat >"$BIN/systemctl" <<'EOF'
#!/bin/bash
echo "systemctl $*" >>"$STUB_CALLS"
case "$1" in
    is-active)
        state="${STUB_IS_ACTIVE-active}"
        echo "$state"
        [[ "$state" == active || "$state" == reloading ]] && exit 0
        exit 3
        ;;
    restart)
        if [[ -n "${STUB_RESTART_STDERR:-}" ]]; then echo "$STUB_RESTART_STDERR" >&2; fi
        exit "${STUB_RESTART_RC:-0}"
        ;;
    status)
        echo "* $2 - Live processing service"
        echo "     Active: active (running)"
        ;;
esac
exit 0
EOF
    cat >"$BIN/sleep" <<'EOF'
#!/bin/bash
echo "sleep $*" >>"$STUB_CALLS"
if [[ -f "$FAKE_CLOCK" ]]; then
    now="$(<"$FAKE_CLOCK")"
    echo "$(( now + $1 ))" >"$FAKE_CLOCK"
fi
if [[ -n "${STUB_SLEEP_KILL_AFTER:-}" ]]; then
    count=0
    while read -r line; do [[ "$line" == sleep* ]] && count=$(( count + 1 )); done <"$STUB_CALLS"
    if (( count >= STUB_SLEEP_KILL_AFTER )); then kill -TERM "$PPID"; fi
fi
exit 0
EOF
    cat >"$BIN/date" <<'EOF'
#!/bin/bash
if [[ -f "$FAKE_CLOCK" ]]; then
    exec "$REAL_DATE" -d "@$(<"$FAKE_CLOCK")" "$@"
fi
exec "$REAL_DATE" "$@"
EOF
    chmod +x "$BIN"/*
    export PATH="$BIN:$PATH"

    export LIVEREDUCE_LOG="$BATS_TEST_TMPDIR/livereduce.log"
    export LIVEREDUCE_WATCHDOG_LOG="$BATS_TEST_TMPDIR/livereduce_watchdog.log"
    export LIVEREDUCE_WATCHDOG_ONCE=1
    export LIVEREDUCE_WATCHDOG_SETTLE=0
    unset LIVEREDUCE_UNIT LIVEREDUCE_WATCHDOG_ITERATIONS
    unset STUB_IS_ACTIVE STUB_RESTART_RC STUB_RESTART_STDERR STUB_SLEEP_KILL_AFTER
    CONF="$BATS_TEST_TMPDIR/livereduce.conf"
    write_conf '{"instrument": "SNAP", "watchdog": {"interval": 60, "threshold": 300}}'
}

write_conf() {
    printf '%s\n' "$1" >"$CONF"
}

# write_log N: the target log with lines "line 1" .. "line N"
write_log() {
    local i
    for ((i = 1; i <= $1; i++)); do echo "line $i"; done >"$LIVEREDUCE_LOG"
}

# age_log SECONDS: last change of the target log SECONDS before the fake clock's start
age_log() {
    touch -d "@$((NOW - $1))" "$LIVEREDUCE_LOG"
}

# run the real script; WATCHDOG_PATH, if set, replaces PATH for it
run_watchdog() {
    run --separate-stderr env PATH="${WATCHDOG_PATH:-$PATH}" "$BASH" "$SCRIPT" "$@"
}

# the marker block as upstream writes it: expected_block AGE FIRST_LINE LAST_LINE [UNIT [ISO]]
expected_block() {
    local i
    echo
    printf '#%.0s' {1..77}
    echo
    echo "${5:-$ISO} No change for $1 s in $LIVEREDUCE_LOG"
    echo "---- Last 20 lines of $LIVEREDUCE_LOG before restart:"
    for ((i = $2; i <= $3; i++)); do echo "line $i"; done
    echo
    echo "restarting ${4:-livereduce.service}."
}

expected_status() {
    echo "* ${1:-livereduce.service} - Live processing service"
    echo "     Active: active (running)"
}

calls() {
    cat "$STUB_CALLS" 2>/dev/null || true
}

# number of "restart" calls of the stubs
restarts() {
    if [ -e "$STUB_CALLS" ]; then grep -cE '^(systemctl restart |service [^ ]+ restart$)' "$STUB_CALLS" || true; else echo 0; fi
}

assert_no_restart() {
    [ "$(restarts)" = 0 ]
    if [ -e "$LIVEREDUCE_WATCHDOG_LOG" ]; then
        [ "$(grep -c '^restarting ' "$LIVEREDUCE_WATCHDOG_LOG")" = 0 ]
    fi
}

# ---------------------------------------------------------------------------------------------------------

@test "the script is executable and shellcheck-clean" {
    [ -x "$SCRIPT" ]
    if ! command -v shellcheck >/dev/null; then skip "shellcheck not installed"; fi
    shellcheck -x "$SCRIPT"
}

@test "missing config file: ERROR on stderr, exit 1, nothing checked" {
    run_watchdog "$BATS_TEST_TMPDIR/missing.conf"
    [ "$status" -eq 1 ]
    [ "$output" = "ARGS $BATS_TEST_TMPDIR/missing.conf" ]
    [ "$stderr" = "ERROR: Config file '$BATS_TEST_TMPDIR/missing.conf' not found." ]
    [ ! -e "$LIVEREDUCE_WATCHDOG_LOG" ]
    [ -z "$(calls)" ]
}

@test "without an argument the config file is /etc/livereduce.conf" {
    if [ -e /etc/livereduce.conf ]; then skip "/etc/livereduce.conf exists here"; fi
    run_watchdog
    [ "$status" -eq 1 ]
    [ "$output" = "ARGS " ]
    [ "$stderr" = "ERROR: Config file '/etc/livereduce.conf' not found." ]
}

@test "restart after the threshold: exact marker block with the last 20 lines, restart, status" {
    write_log 25
    age_log 400
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$output" = "ARGS $CONF" ]
    [ -z "$stderr" ]
    { expected_block 400 6 25; expected_status; } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
    [ "$(calls)" = "$(printf '%s\n' 'systemctl is-active livereduce.service' \
        'systemctl restart livereduce.service' 'systemctl status livereduce.service')" ]
}

@test "the marker block is appended to an existing watchdog log" {
    echo "earlier entry" >"$LIVEREDUCE_WATCHDOG_LOG"
    write_log 3
    age_log 301
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    { echo "earlier entry"; expected_block 301 1 3; expected_status; } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
}

@test "a log of exactly the threshold's age is restarted (age >= threshold)" {
    write_log 20
    age_log 300
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    { expected_block 300 1 20; expected_status; } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
}

@test "no restart before the threshold: nothing logged, systemctl not called" {
    write_log 5
    age_log 299
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [ ! -e "$LIVEREDUCE_WATCHDOG_LOG" ]
    [ -z "$(calls)" ]
}

@test "LIVEREDUCE_WATCHDOG_ONCE=1 runs a single check and never sleeps" {
    write_log 5
    age_log 10
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ -z "$(calls)" ]
}

@test "throttling: at most one restart per threshold while the log stays unchanged" {
    write_log 25
    age_log 400
    export LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=3
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(restarts)" = 1 ]
    [ "$(grep -c '^sleep 60$' "$STUB_CALLS")" = 2 ] # no sleep after the last check
    { expected_block 400 6 25; expected_status; } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
}

@test "throttling: the next restart comes once the threshold has passed since the last one" {
    write_log 25
    age_log 400
    # checks at +0 s (restart), +60, +120, +180, +240 (throttled), +300 (restart), +360 (throttled)
    export LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=7
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(restarts)" = 2 ]
    [ "$(grep -c '^sleep 60$' "$STUB_CALLS")" = 6 ]
    {
        expected_block 400 6 25
        expected_status
        expected_block 700 6 25 livereduce.service 2026-01-01T00:05:00+00:00
        expected_status
    } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
}

@test "without ONCE or ITERATIONS the watchdog loops until it is stopped" {
    export LIVEREDUCE_WATCHDOG_ONCE='' STUB_SLEEP_KILL_AFTER=3
    run_watchdog "$CONF"
    [ "$status" -eq 143 ] # SIGTERM from the sleep stub at its 3rd call
    [ "$(grep -c "ERROR: '$LIVEREDUCE_LOG' not found.\$" "$LIVEREDUCE_WATCHDOG_LOG")" = 3 ]
}

@test "missing target log: one ERROR line per check, no restart" {
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ -z "$stderr" ]
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO ERROR: '$LIVEREDUCE_LOG' not found." ]
    [ -z "$(calls)" ]

    export LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=3
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$(printf '%s\n' \
        "$ISO ERROR: '$LIVEREDUCE_LOG' not found." \
        "$ISO ERROR: '$LIVEREDUCE_LOG' not found." \
        "2026-01-01T00:01:00+00:00 ERROR: '$LIVEREDUCE_LOG' not found." \
        "2026-01-01T00:02:00+00:00 ERROR: '$LIVEREDUCE_LOG' not found.")" ]
    assert_no_restart
}

@test "the default target log is /var/log/SNS_applications/livereduce.log" {
    if [ -e /var/log/SNS_applications/livereduce.log ]; then skip "the SNS log exists here"; fi
    unset LIVEREDUCE_LOG
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO ERROR: '/var/log/SNS_applications/livereduce.log' not found." ]
}

@test "without LIVEREDUCE_LOG the config's log_file is watched; LIVEREDUCE_LOG wins over it" {
    local own="$BATS_TEST_TMPDIR/own.log"
    write_conf "{\"log_file\": \"$own\", \"watchdog\": {\"threshold\": 300}}"
    unset LIVEREDUCE_LOG
    run_watchdog "$CONF"
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO ERROR: '$own' not found." ]

    rm "$LIVEREDUCE_WATCHDOG_LOG"
    export LIVEREDUCE_LOG="$BATS_TEST_TMPDIR/livereduce.log"
    run_watchdog "$CONF"
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO ERROR: '$LIVEREDUCE_LOG' not found." ]

    rm "$LIVEREDUCE_WATCHDOG_LOG"
    unset LIVEREDUCE_LOG
    write_conf '{"log_file": null}'
    run_watchdog "$CONF"
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO ERROR: '/var/log/SNS_applications/livereduce.log' not found." ] ||
        [ -e /var/log/SNS_applications/livereduce.log ]
}

@test "unit stopped on purpose (inactive, failed, deactivating): one line, no restart" {
    write_log 25
    age_log 400
    local state
    for state in inactive failed deactivating; do
        rm -f "$LIVEREDUCE_WATCHDOG_LOG" "$STUB_CALLS"
        export STUB_IS_ACTIVE="$state"
        run_watchdog "$CONF"
        [ "$status" -eq 0 ]
        [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO No change for 400 s in $LIVEREDUCE_LOG, but livereduce.service is '$state': not restarting it." ]
        [ "$(calls)" = "systemctl is-active livereduce.service" ]
    done
}

@test "an empty is-active answer counts as not running" {
    write_log 25
    age_log 400
    export STUB_IS_ACTIVE=''
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO No change for 400 s in $LIVEREDUCE_LOG, but livereduce.service is 'unknown': not restarting it." ]
    assert_no_restart
}

@test "a stopped unit is reported once per stale period, not at every check" {
    write_log 25
    age_log 400
    export STUB_IS_ACTIVE=inactive LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=4
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(wc -l <"$LIVEREDUCE_WATCHDOG_LOG")" = 1 ]
    assert_no_restart
}

@test "activating and reloading units are restarted" {
    write_log 25
    age_log 400
    local state
    for state in activating reloading; do
        rm -f "$LIVEREDUCE_WATCHDOG_LOG" "$STUB_CALLS"
        export STUB_IS_ACTIVE="$state"
        run_watchdog "$CONF"
        [ "$status" -eq 0 ]
        [ "$(restarts)" = 1 ]
        grep -qx 'restarting livereduce.service.' "$LIVEREDUCE_WATCHDOG_LOG"
    done
}

@test "restart failure: exit code and stderr in the watchdog log (and on stderr), status still appended" {
    write_log 25
    age_log 400
    export STUB_RESTART_RC=4
    export STUB_RESTART_STDERR="Failed to restart livereduce.service: Access denied"
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$stderr" = "Failed to restart livereduce.service: Access denied" ]
    {
        expected_block 400 6 25
        echo "$ISO ERROR: 'systemctl restart livereduce.service' failed with exit code 4:"
        echo "Failed to restart livereduce.service: Access denied"
        expected_status
    } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
}

@test "a failed restart is throttled like a successful one" {
    write_log 25
    age_log 400
    export STUB_RESTART_RC=1 LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=3
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(restarts)" = 1 ]
    [ "$(grep -c "failed with exit code 1:\$" "$LIVEREDUCE_WATCHDOG_LOG")" = 1 ]
}

@test "LIVEREDUCE_UNIT names the managed unit everywhere" {
    write_log 25
    age_log 400
    export LIVEREDUCE_UNIT=livereduce-test.service
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    { expected_block 400 6 25 livereduce-test.service; expected_status livereduce-test.service; } \
        >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
    [ "$(calls)" = "$(printf '%s\n' 'systemctl is-active livereduce-test.service' \
        'systemctl restart livereduce-test.service' 'systemctl status livereduce-test.service')" ]
}

@test "by default the watchdog waits 5 s between restart and status; LIVEREDUCE_WATCHDOG_SETTLE changes it" {
    write_log 25
    age_log 400
    unset LIVEREDUCE_WATCHDOG_SETTLE
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(calls)" = "$(printf '%s\n' 'systemctl is-active livereduce.service' \
        'systemctl restart livereduce.service' 'sleep 5' 'systemctl status livereduce.service')" ]

    rm "$STUB_CALLS" "$LIVEREDUCE_WATCHDOG_LOG"
    export LIVEREDUCE_WATCHDOG_SETTLE=2
    run_watchdog "$CONF"
    grep -qx 'sleep 2' "$STUB_CALLS"

    rm "$STUB_CALLS" "$LIVEREDUCE_WATCHDOG_LOG"
    export LIVEREDUCE_WATCHDOG_SETTLE=soon
    run_watchdog "$CONF"
    [ "$stderr" = "WARNING: Invalid LIVEREDUCE_WATCHDOG_SETTLE value 'soon'. Using default: 5" ]
    grep -qx 'sleep 5' "$STUB_CALLS"
}

@test "without systemctl the service command is used (upstream's fallback)" {
    local minbin="$BATS_TEST_TMPDIR/minbin" tool
    mkdir -p "$minbin"
    for tool in jq stat tail; do ln -s "$(command -v "$tool")" "$minbin/$tool"; done
    cp "$BIN/sleep" "$BIN/date" "$minbin/"
    cat >"$minbin/service" <<'EOF'
#!/bin/bash
echo "service $*" >>"$STUB_CALLS"
if [[ "$2" == status ]]; then
    echo "$1 is running"
    exit "${STUB_SERVICE_STATUS_RC:-0}"
fi
exit 0
EOF
    chmod +x "$minbin/service"
    write_log 25
    age_log 400
    WATCHDOG_PATH="$minbin" run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    { expected_block 400 6 25; echo "livereduce.service is running"; } >"$BATS_TEST_TMPDIR/expected"
    diff -u "$BATS_TEST_TMPDIR/expected" "$LIVEREDUCE_WATCHDOG_LOG"
    [ "$(calls)" = "$(printf '%s\n' 'service livereduce.service status' \
        'service livereduce.service restart' 'service livereduce.service status')" ]

    # LSB status 3 (not running): left alone
    rm "$STUB_CALLS" "$LIVEREDUCE_WATCHDOG_LOG"
    STUB_SERVICE_STATUS_RC=3 WATCHDOG_PATH="$minbin" run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(cat "$LIVEREDUCE_WATCHDOG_LOG")" = "$ISO No change for 400 s in $LIVEREDUCE_LOG, but livereduce.service is 'inactive': not restarting it." ]
    [ "$(calls)" = "service livereduce.service status" ]
}

@test "with the real clock: ISO-8601 timestamp and the log's real age" {
    rm "$FAKE_CLOCK"
    write_log 25
    touch -d "@$(($(date +%s) - 1000))" "$LIVEREDUCE_LOG"
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [ "$(restarts)" = 1 ]
    sed -n 3p "$LIVEREDUCE_WATCHDOG_LOG" |
        grep -Eqx "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\+00:00 No change for 10(00|01|02) s in $LIVEREDUCE_LOG"
}

# --- configuration values (jq '.watchdog.interval // 60' / '.watchdog.threshold // 300', then validation) ---

# interval_is JSON SECONDS [WARNING]: with this config the watchdog sleeps SECONDS between checks, and its
# stderr is exactly WARNING (empty: no warning)
interval_is() {
    write_conf "$1"
    rm -f "$STUB_CALLS" "$LIVEREDUCE_WATCHDOG_LOG"
    LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=2 run_watchdog "$CONF"
    [ "$status" -eq 0 ] || { echo "config $1: status $status"; return 1; }
    [ "$(grep '^sleep' "$STUB_CALLS")" = "sleep $2" ] || { echo "config $1: $(calls)"; return 1; }
    [ "$stderr" = "${3:-}" ] || { echo "config $1: stderr '$stderr'"; return 1; }
}

# threshold_is JSON SECONDS [WARNING]: a log SECONDS-1 old is left alone, one SECONDS old is restarted
threshold_is() {
    write_conf "$1"
    write_log 25
    rm -f "$STUB_CALLS" "$LIVEREDUCE_WATCHDOG_LOG"
    age_log $(($2 - 1))
    run_watchdog "$CONF"
    [ "$status" -eq 0 ] || { echo "config $1: status $status"; return 1; }
    [ "$(restarts)" = 0 ] || { echo "config $1: restarted at age $(($2 - 1))"; return 1; }
    [ "$stderr" = "${3:-}" ] || { echo "config $1: stderr '$stderr'"; return 1; }
    age_log "$2"
    run_watchdog "$CONF"
    [ "$(restarts)" = 1 ] || { echo "config $1: no restart at age $2"; return 1; }
}

@test "valid intervals, including jq's falsy defaults and numeric strings" {
    interval_is '{"watchdog": {"interval": 7}}' 7
    interval_is '{"watchdog": {"interval": "7"}}' 7
    interval_is '{"watchdog": {"interval": 1}}' 1
    interval_is '{"watchdog": {"interval": 1e1}}' 10
    interval_is '{"watchdog": {"interval": false}}' 60
    interval_is '{"watchdog": {"interval": null}}' 60
    interval_is '{"watchdog": {}}' 60
    interval_is '{"watchdog": null}' 60
    interval_is '{}' 60
}

@test "invalid intervals: WARNING on stderr and the default 60" {
    local value
    for value in 0 -5 1.5 true '"abc"' '""' '" 60"' '"007"' '"60s"' '[]' '{}'; do
        local shown
        shown="$(jq --raw-output . <<<"$value")"
        interval_is "{\"watchdog\": {\"interval\": $value}}" 60 \
            "WARNING: Invalid INTERVAL value '$shown'. Using default: 60"
    done
}

@test "valid thresholds, including the minimum 20, jq's falsy defaults and numeric strings" {
    threshold_is '{"watchdog": {"threshold": 20}}' 20
    threshold_is '{"watchdog": {"threshold": "20"}}' 20
    threshold_is '{"watchdog": {"threshold": 45}}' 45
    threshold_is '{"watchdog": {"threshold": 1.5e2}}' 150
    threshold_is '{"watchdog": {"threshold": false}}' 300
    threshold_is '{"watchdog": {"threshold": null}}' 300
    threshold_is '{"watchdog": {"interval": 5}}' 300
    threshold_is '{}' 300
}

@test "invalid thresholds (below 20, not a positive integer): WARNING on stderr and the default 300" {
    local value
    for value in 19 1 0 -300 299.5 true '"abc"' '""' '"0300"' '[]'; do
        local shown
        shown="$(jq --raw-output . <<<"$value")"
        threshold_is "{\"watchdog\": {\"threshold\": $value}}" 300 \
            "WARNING: Invalid THRESHOLD value '$shown'. Using default: 300"
    done
}

@test "both values invalid: both warnings, in order, and both defaults" {
    interval_is '{"watchdog": {"interval": "x", "threshold": 5}}' 60 "$(printf '%s\n' \
        "WARNING: Invalid INTERVAL value 'x'. Using default: 60" \
        "WARNING: Invalid THRESHOLD value '5'. Using default: 300")"
}

@test "a watchdog section that is not an object: jq's error, empty values, defaults" {
    write_conf '{"watchdog": 5}'
    write_log 25
    age_log 200 # 260 s at the second check: below the default 300
    LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=2 run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    grep -qx 'sleep 60' "$STUB_CALLS"
    [[ "$stderr" == *"WARNING: Invalid INTERVAL value ''. Using default: 60"* ]]
    [[ "$stderr" == *"WARNING: Invalid THRESHOLD value ''. Using default: 300"* ]]
    [[ "$stderr" == *"jq: error"* ]]
    assert_no_restart
}

@test "a config file that is not JSON: warnings and defaults, the watchdog keeps running" {
    write_conf 'this is { not json'
    write_log 25
    age_log 300
    run_watchdog "$CONF"
    [ "$status" -eq 0 ]
    [[ "$stderr" == *"WARNING: Invalid INTERVAL value ''. Using default: 60"* ]]
    [[ "$stderr" == *"WARNING: Invalid THRESHOLD value ''. Using default: 300"* ]]
    [ "$(restarts)" = 1 ]
}

@test "invalid LIVEREDUCE_WATCHDOG_ITERATIONS: WARNING, loops forever" {
    export LIVEREDUCE_WATCHDOG_ONCE='' LIVEREDUCE_WATCHDOG_ITERATIONS=two STUB_SLEEP_KILL_AFTER=3
    run_watchdog "$CONF"
    [ "$status" -eq 143 ]
    [ "$stderr" = "WARNING: Invalid LIVEREDUCE_WATCHDOG_ITERATIONS value 'two'. Using default: 0 (forever)" ]
    [ "$(wc -l <"$LIVEREDUCE_WATCHDOG_LOG")" = 3 ]
}
