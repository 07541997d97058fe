#!/bin/bash
# livereduce_watchdog.sh - restart livereduce.service when its log file stops changing.
#
# Usage: livereduce_watchdog.sh [CONFIG_FILE]        (default: /etc/livereduce.conf)
#
# Behaviour of upstream's watchdog (mantidproject/livereduce, scripts/livereduce_watchdog.sh):
#   * Prints "ARGS ..."; a missing CONFIG_FILE is "ERROR: Config file '<path>' not found." on stderr, exit 1.
#   * Reads once, at start, with jq from CONFIG_FILE:
#       .watchdog.interval  (default 60)  seconds between two checks; must match ^[1-9][0-9]*$
#       .watchdog.threshold (default 300) seconds without a change of the log before a restart; must match
#                                         ^[1-9][0-9]*$ and be >= 20
#     jq's "//" semantics apply: false and null mean the default, the string "60" is 60, 1e3 is 1000.
#     An invalid value is a WARNING on stderr and the default is used; it never aborts.
#   * Every interval: if the target log is missing, one "<ISO-8601> ERROR: '<target>' not found." line goes
#     to the watchdog log. If the log's mtime is >= threshold seconds old and the last restart (by this
#     process) is >= threshold seconds ago, a marker block with the last 20 lines of the log goes to the
#     watchdog log, then "systemctl restart <unit>", a pause of 5 s, and "systemctl status <unit>" appended
#     to the watchdog log. Without systemctl, "service <unit> restart|status" is used instead.
#
# Differences from upstream (fixes):
#   1. A unit that is not running on purpose is left alone: the restart happens only when
#      "systemctl is-active <unit>" prints active, activating or reloading. Otherwise (inactive, failed,
#      deactivating, ...) one line "<ISO-8601> No change for <age> s in <target>, but <unit> is '<state>':
#      not restarting it." goes to the watchdog log, once per stale period (repeated only after the log has
#      changed again). Without systemctl, "service <unit> status" exit status 3 (LSB "not running") counts
#      as stopped.
#   2. A failing restart is logged: "<ISO-8601> ERROR: 'systemctl restart <unit>' failed with exit code
#      <n>:" followed by its output (stderr), in the watchdog log (and still on stderr, i.e. the journal).
#   3. Paths and names can be overridden by environment variables (tests, non-SNS sites):
#        LIVEREDUCE_LOG            log file to watch. Default: the config's "log_file" if set (relative
#                                  paths are relative to the working directory, /tmp in both units), else
#                                  /var/log/SNS_applications/livereduce.log
#        LIVEREDUCE_WATCHDOG_LOG   the watchdog's own log.
#                                  Default: /var/log/SNS_applications/livereduce_watchdog.log
#        LIVEREDUCE_UNIT           the managed unit. Default: livereduce.service
#        LIVEREDUCE_WATCHDOG_SETTLE  seconds to wait after the restart before "status". Default: 5
#      and, for tests:
#        LIVEREDUCE_WATCHDOG_ONCE=1          run a single check and exit 0 (no sleep)
#        LIVEREDUCE_WATCHDOG_ITERATIONS=N    run N checks (sleeping interval between them) and exit 0;
#                                            ONCE=1 is ITERATIONS=1. Unset or 0: loop forever (service).
#      An invalid SETTLE or ITERATIONS value is a WARNING on stderr and the default is used.
#
# Limitations kept from upstream: liveness is "the log's mtime changed"; throttling state is per process
# (a restart of the watchdog forgets the last restart); no escalation if the restart itself hangs.

echo "ARGS $*"

# determine the configuration file
if [ $# -ge 1 ]; then
    CONFIG_FILE="${1}"
else
    CONFIG_FILE=/etc/livereduce.conf
fi

# Check if the configuration file exists
if [ ! -f "${CONFIG_FILE}" ]; then
    echo "ERROR: Config file '${CONFIG_FILE}' not found." >&2
    exit 1
fi

# --- CONFIG ---
DEFAULT_TARGET="/var/log/SNS_applications/livereduce.log"
if [[ -n "${LIVEREDUCE_LOG:-}" ]]; then
    WATCHDOG_TARGET="${LIVEREDUCE_LOG}"
else
    WATCHDOG_TARGET="$(jq --raw-output '.log_file // empty' "${CONFIG_FILE}" 2>/dev/null)"
    WATCHDOG_TARGET="${WATCHDOG_TARGET:-${DEFAULT_TARGET}}"
fi
MANAGED_SERVICE="${LIVEREDUCE_UNIT:-livereduce.service}"
WATCHDOG_LOG="${LIVEREDUCE_WATCHDOG_LOG:-/var/log/SNS_applications/livereduce_watchdog.log}"
# Default values
DEFAULT_INTERVAL=60
MINIMUM_THRESHOLD=20
DEFAULT_THRESHOLD=300
DEFAULT_SETTLE=5
# How often we check WATCHDOG_TARGET. Default is 60 seconds.
INTERVAL="$(jq --raw-output '.watchdog.interval // 60' "${CONFIG_FILE}")"
# Inactivity threshold. Default is 300 seconds.
THRESHOLD="$(jq --raw-output '.watchdog.threshold // 300' "${CONFIG_FILE}")"

# Validate INTERVAL is a positive integer, otherwise use default
if ! [[ "$INTERVAL" =~ ^[1-9][0-9]*$ ]]; then
    echo "WARNING: Invalid INTERVAL value '$INTERVAL'. Using default: $DEFAULT_INTERVAL" >&2
    INTERVAL=$DEFAULT_INTERVAL
fi
# Validate THRESHOLD is a positive integer of at least MINIMUM_THRESHOLD, otherwise use default
if ! [[ "$THRESHOLD" =~ ^[1-9][0-9]*$ ]] || (( THRESHOLD < MINIMUM_THRESHOLD )); then
    echo "WARNING: Invalid THRESHOLD value '$THRESHOLD'. Using default: $DEFAULT_THRESHOLD" >&2
    THRESHOLD=$DEFAULT_THRESHOLD
fi

SETTLE="${LIVEREDUCE_WATCHDOG_SETTLE:-$DEFAULT_SETTLE}"
if ! [[ "$SETTLE" =~ ^(0|[1-9][0-9]*)$ ]]; then
    echo "WARNING: Invalid LIVEREDUCE_WATCHDOG_SETTLE value '$SETTLE'. Using default: $DEFAULT_SETTLE" >&2
    SETTLE=$DEFAULT_SETTLE
fi

# Number of checks before exiting (0: forever)
ITERATIONS="${LIVEREDUCE_WATCHDOG_ITERATIONS:-0}"
if [[ "${LIVEREDUCE_WATCHDOG_ONCE:-}" == 1 ]]; then
    ITERATIONS=1
elif ! [[ "$ITERATIONS" =~ ^(0|[1-9][0-9]*)$ ]]; then
    echo "WARNING: Invalid LIVEREDUCE_WATCHDOG_ITERATIONS value '$ITERATIONS'. Using default: 0 (forever)" >&2
    ITERATIONS=0
fi

have_systemctl() {
    command -v systemctl &>/dev/null
}

# Print the unit's state: systemctl is-active's answer ("unknown" if it prints nothing); with service,
# "inactive" for LSB status 3 (not running), else "active".
unit_state() {
    local state rc
    if have_systemctl; then
        state="$(systemctl is-active "$MANAGED_SERVICE" 2>/dev/null)"
        echo "${state:-unknown}"
    else
        rc=0
        service "$MANAGED_SERVICE" status &>/dev/null || rc=$?
        if (( rc == 3 )); then echo inactive; else echo active; fi
    fi
}

# Write the marker block, restart the unit, log a failed restart, append the unit's status.
# $1: age of the target log in seconds
restart_service() {
    local age="$1" tool out rc
    {
        echo -e "\n#############################################################################"
        echo "$(date --iso-8601=seconds) No change for $age s in $WATCHDOG_TARGET"
        echo "---- Last 20 lines of $WATCHDOG_TARGET before restart:"
        tail -n 20 "$WATCHDOG_TARGET"
        echo -e "\nrestarting $MANAGED_SERVICE."
    } >> "$WATCHDOG_LOG"
    # Restart the service (use systemctl or service as appropriate)
    rc=0
    if have_systemctl; then
        tool="systemctl restart $MANAGED_SERVICE"
        out="$(systemctl restart "$MANAGED_SERVICE" 2>&1)" || rc=$?
    else
        tool="service $MANAGED_SERVICE restart"
        out="$(service "$MANAGED_SERVICE" restart 2>&1)" || rc=$?
    fi
    # what upstream let through to the journal still goes there
    if [[ -n "$out" ]]; then
        printf '%s\n' "$out" >&2
    fi
    if (( rc != 0 )); then
        {
            echo "$(date --iso-8601=seconds) ERROR: '$tool' failed with exit code $rc:"
            if [[ -n "$out" ]]; then
                printf '%s\n' "$out"
            fi
        } >> "$WATCHDOG_LOG"
    fi
    if (( SETTLE > 0 )); then
        sleep "$SETTLE" # give it a moment to start
    fi
    if have_systemctl; then
        systemctl status "$MANAGED_SERVICE" >> "$WATCHDOG_LOG"
    else
        service "$MANAGED_SERVICE" status >> "$WATCHDOG_LOG"
    fi
}

# Track when we last issued a restart so we don't keep restarting every loop
last_restart=0
# State of the unit already reported as "not restarting" during the current stale period
reported_state=""

# One check of the target log
check() {
    local last_mod now age since_restart state
    if [[ ! -e "$WATCHDOG_TARGET" ]] || ! last_mod="$(stat -c %Y "$WATCHDOG_TARGET" 2>/dev/null)"; then
        echo "$(date --iso-8601=seconds) ERROR: '$WATCHDOG_TARGET' not found." >> "$WATCHDOG_LOG"
        return
    fi
    now="$(date +%s)"
    age=$(( now - last_mod ))

    if (( age < THRESHOLD )); then
        reported_state=""
        return
    fi
    # Only restart if we haven't already done so in this inactivity window
    since_restart=$(( now - last_restart ))
    if (( since_restart < THRESHOLD )); then
        return
    fi
    state="$(unit_state)"
    case "$state" in
        active | activating | reloading)
            reported_state=""
            restart_service "$age"
            last_restart=$now
            ;;
        *)
            if [[ "$state" != "$reported_state" ]]; then
                echo "$(date --iso-8601=seconds) No change for $age s in $WATCHDOG_TARGET, but" \
                    "$MANAGED_SERVICE is '$state': not restarting it." >> "$WATCHDOG_LOG"
                reported_state="$state"
            fi
            ;;
    esac
}

iteration=0
while true; do
    check
    iteration=$(( iteration + 1 ))
    if (( ITERATIONS > 0 && iteration >= ITERATIONS )); then
        exit 0
    fi
    sleep "$INTERVAL"
done
