#!/bin/bash
# livereduce.sh - systemd ExecStart wrapper of the live reduction daemon (installed as /usr/bin/livereduce.sh).
#
#   livereduce.sh [OPTIONS] [CONFIG]
#
# Chooses the environment named in the configuration file and starts livereduce.py (the file next to this
# script's real path) in it, passing all arguments through unchanged. Upstream's behaviour and messages, with
# its bugs fixed (docs: upstream-livereduce.md section 4 and 13.10):
#
# * The configuration file is the first positional argument (options such as --check may precede it; all
#   options of livereduce.py are flags without a value), else /etc/livereduce.conf. LIVEREDUCE_CONFIG replaces
#   that default path (for tests; livereduce.py itself still reads /etc/livereduce.conf then).
# * The environment name is read with jq only (upstream grepped the text, which yielded the name "null" for a
#   file merely mentioning PIXI_ENV, and an empty name for invalid JSON), with the rule of
#   livereduce.config.Config.env_name: a non-empty string PIXI_ENV verbatim, else a non-empty string CONDA_ENV
#   with a trailing -dev/-qa mapped to _dev/_qa (any other CONDA_ENV verbatim; upstream silently fell back to
#   the default), else mantid_dev. A missing, unreadable or invalid file, a JSON value that is not an object,
#   or a non-string value of the key used gives one warning line on stderr and the default mantid_dev.
# * Launcher, first that applies (upstream knew only the first and failed without it):
#     nsd-app-wrap.sh on PATH  -> source it, pixi_launch <env> python <app> ARGS...
#     pixi on PATH and manifest ${LIVEREDUCE_PIXI_ROOT:-/usr/local/pixi}/<env>
#                              -> exec pixi run --frozen --manifest-path <manifest> python <app> ARGS...
#     conda on PATH            -> exec conda run --no-capture-output -n <env> python <app> ARGS...
#     otherwise                -> exec python3 <app> ARGS...  (with a warning)
#   pixi_launch is a shell function and cannot be exec'd, so it is the last command and bash stays the unit's
#   main process (as upstream); the exit status is pixi_launch's. This is harmless under systemd: with the
#   default KillMode=control-group, "systemctl stop" sends SIGTERM to every process of the unit's cgroup, so
#   Python gets the signal directly and not only through bash.
#
# Messages go to stdout (the journal), warnings to stderr.
set -euo pipefail

DEFAULT_ENV="mantid_dev"
PROG="livereduce.sh"

warn() {
    printf '%s: warning: %s\n' "${PROG}" "$*" >&2
}

# launching LAUNCHER COMMAND...: print "Launching with LAUNCHER: COMMAND" (words shell-quoted where needed)
launching() {
    local launcher="$1"
    shift
    printf 'Launching with %s:' "${launcher}"
    printf ' %q' "$@"
    printf '\n'
}

echo "ARGS $*"

# --- configuration file: the first positional argument, as livereduce.py's argument parser sees it -----------
CONFIG_FILE=""
only_positional=false
for arg in "$@"; do
    if [[ "${only_positional}" == false && "${arg}" == "--" ]]; then
        only_positional=true
    elif [[ "${only_positional}" == true || "${arg}" != -?* ]]; then
        CONFIG_FILE="${arg}"
        break
    fi
done
if [[ -z "${CONFIG_FILE}" ]]; then
    CONFIG_FILE="${LIVEREDUCE_CONFIG:-/etc/livereduce.conf}"
fi

# --- environment name ---------------------------------------------------------------------------------------
# One jq run over the whole file (slurped, so that a second JSON value or an empty file is noticed). It prints
# "<key>" and the value on the next line (key PIXI_ENV, CONDA_ENV or "none"), or "warning" and the text.
# null and "" count as absent, as in Config.env_name.
# shellcheck disable=SC2016  # $k is a jq variable
JQ_PROGRAM='
def pick($k):
  .[$k] as $v
  | if $v == null or $v == "" then empty
    elif ($v | type) == "string" then "\($k)\n\($v)"
    else "warning\n\($k) in \"\($file)\" is a \($v | type) (\($v | tojson | .[:40])), not a string"
    end;
if length == 0 then "warning\n\"\($file)\" is empty, not a JSON object"
elif length != 1 then "warning\n\"\($file)\" holds \(length) JSON values, not one object"
elif (.[0] | type) != "object" then "warning\n\"\($file)\" holds a JSON \(.[0] | type), not an object"
else .[0] | first(pick("PIXI_ENV"), pick("CONDA_ENV"), "none\n")
end'

# jq_env FILE: run JQ_PROGRAM on FILE (on stdin, so that a name starting with a dash is no option); jq's
# messages on stdout too
jq_env() {
    # shellcheck disable=SC2094  # the name is passed as a string (--arg), the file is only read
    jq --raw-output --slurp --arg file "$1" "${JQ_PROGRAM}" 2>&1 <"$1"
}

ENV_NAME="${DEFAULT_ENV}"
env_problem=""
if [[ ! -e "${CONFIG_FILE}" ]]; then
    env_problem="configuration file \"${CONFIG_FILE}\" not found"
elif [[ -d "${CONFIG_FILE}" ]]; then
    env_problem="configuration file \"${CONFIG_FILE}\" is a directory"
elif [[ ! -r "${CONFIG_FILE}" ]]; then
    env_problem="configuration file \"${CONFIG_FILE}\" is not readable"
elif ! command -v jq >/dev/null 2>&1; then
    env_problem="jq not found, cannot read the environment from \"${CONFIG_FILE}\""
elif ! jq_out="$(jq_env "${CONFIG_FILE}")"; then
    jq_out="${jq_out//$'\n'/ }"
    env_problem="cannot read \"${CONFIG_FILE}\" as JSON (${jq_out})"
else
    key="${jq_out%%$'\n'*}"
    value="${jq_out#*$'\n'}"
    case "${key}" in
        PIXI_ENV)
            echo "Determine pixi environment from \"${CONFIG_FILE}\""
            ENV_NAME="${value}"
            ;;
        CONDA_ENV)  # backward compatibility: substitute an underscore for the dash of a dev/qa suffix
            echo "Determine pixi environment from CONDA_ENV entry in \"${CONFIG_FILE}\""
            case "${value}" in
                *-dev) ENV_NAME="${value%-dev}_dev" ;;
                *-qa) ENV_NAME="${value%-qa}_qa" ;;
                *) ENV_NAME="${value}" ;;
            esac
            ;;
        none) ;;
        warning) env_problem="${value}" ;;
        *) env_problem="unexpected output of jq for \"${CONFIG_FILE}\"" ;;
    esac
fi
if [[ -n "${env_problem}" ]]; then
    warn "${env_problem}; using the default environment ${DEFAULT_ENV}"
fi
echo "Using environment ${ENV_NAME}"

# --- remove the font cache to side step a startup speed issue (upstream) --------------------------------------
if [[ -n "${HOME:-}" ]]; then
    rm -f "${HOME}"/.cache/fontconfig/* 2>/dev/null || true
fi

# --- the application: livereduce.py next to this script's real path -----------------------------------------
THISFILE="$(readlink -f "$0")"
INSTALLDIR="$(dirname "${THISFILE}")"
APPLICATION="${INSTALLDIR}/livereduce.py"

# --- launch ---------------------------------------------------------------------------------------------------
PIXI_ROOT="${LIVEREDUCE_PIXI_ROOT:-/usr/local/pixi}"
if NSD_APP_WRAP="$(command -v nsd-app-wrap.sh)"; then
    # nsd-app-wrap.sh is not ours: the command is fixed before it may set variables of ours, and it is sourced
    # (it defines the function pixi_launch) without our strict modes
    livereduce_launch=(pixi_launch "${ENV_NAME}" python "${APPLICATION}" "$@")
    launching "${NSD_APP_WRAP}" "${livereduce_launch[@]}"
    set +euo pipefail
    # shellcheck source=/dev/null
    . "${NSD_APP_WRAP}"
    if ! declare -F pixi_launch >/dev/null; then
        printf '%s: error: %s does not define the function pixi_launch\n' "${PROG}" "${NSD_APP_WRAP}" >&2
        exit 1
    fi
    # Not exec'd (a function); the last command, so the wrapper's exit status is pixi_launch's. See the header.
    "${livereduce_launch[@]}"
elif command -v pixi >/dev/null 2>&1 && [[ -e "${PIXI_ROOT}/${ENV_NAME}" ]]; then
    MANIFEST="${PIXI_ROOT}/${ENV_NAME}"
    launching pixi pixi run --frozen --manifest-path "${MANIFEST}" python "${APPLICATION}" "$@"
    exec pixi run --frozen --manifest-path "${MANIFEST}" python "${APPLICATION}" "$@"
elif command -v conda >/dev/null 2>&1; then
    if command -v pixi >/dev/null 2>&1; then
        echo "No pixi manifest ${PIXI_ROOT}/${ENV_NAME}, trying conda"
    fi
    launching conda conda run --no-capture-output -n "${ENV_NAME}" python "${APPLICATION}" "$@"
    exec conda run --no-capture-output -n "${ENV_NAME}" python "${APPLICATION}" "$@"
else
    if command -v pixi >/dev/null 2>&1; then
        warn "no environment manager found (nsd-app-wrap.sh, conda; pixi without the manifest" \
            "${PIXI_ROOT}/${ENV_NAME}); running python3 from PATH, not environment ${ENV_NAME}"
    else
        warn "no environment manager found (nsd-app-wrap.sh, pixi, conda);" \
            "running python3 from PATH, not environment ${ENV_NAME}"
    fi
    launching python3 python3 "${APPLICATION}" "$@"
    exec python3 "${APPLICATION}" "$@"
fi
