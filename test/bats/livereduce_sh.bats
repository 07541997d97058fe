#!/usr/bin/env bats
# Tests of scripts/livereduce.sh, the systemd ExecStart wrapper: environment selection and launcher.
#
#   bats test/bats/livereduce_sh.bats
#
# Runs the real script with PATH holding only $BATS_TEST_TMPDIR/bin: links to the few system tools the script
# needs (jq, readlink, dirname, rm) and, per test, stubs of nsd-app-wrap.sh, pixi, conda and python3 that
# record their argv (one argument a line) in $CALLS/<name>. HOME and the pixi root are temporary directories.

bats_require_minimum_version 1.5.0

setup() {
    SCRIPT="$(readlink -f "${BATS_TEST_DIRNAME}/../../scripts/livereduce.sh")"
    APP="$(dirname "${SCRIPT}")/livereduce.py"
    BIN="${BATS_TEST_TMPDIR}/bin"
    CALLS="${BATS_TEST_TMPDIR}/calls"
    CFG="${BATS_TEST_TMPDIR}/livereduce.conf"
    mkdir -p "${BIN}" "${CALLS}" "${BATS_TEST_TMPDIR}/home" "${BATS_TEST_TMPDIR}/pixi"
    local tool
    for tool in jq readlink dirname rm; do
        ln -s "$(command -v "${tool}")" "${BIN}/${tool}"
    done
    export CALLS
    export HOME="${BATS_TEST_TMPDIR}/home"
    export LIVEREDUCE_PIXI_ROOT="${BATS_TEST_TMPDIR}/pixi"
    unset LIVEREDUCE_CONFIG PIXI_LAUNCH_STATUS STUB_STATUS
}

# run_script ARGS...: run the real wrapper with PATH=$BIN; stdout in $output/$lines, stderr in $stderr.
run_script() {
    run --separate-stderr env PATH="${BIN}" "${SCRIPT}" "$@"
}

# stub NAME: an executable NAME on PATH recording its argv, then exiting with $STUB_STATUS (default 0).
# The second line records whether it replaced the wrapper ("exec") or is its child ("child").
stub() {
    cat >"${BIN}/$1" <<EOF
#!/bin/bash
how=exec
if [[ -r /proc/\$PPID/cmdline ]]; then
    mapfile -d '' parent </proc/\$PPID/cmdline
    [[ " \${parent[*]} " == *livereduce.sh* ]] && how=child
fi
printf '%s\n' "\${how}" >"\${CALLS}/$1.how"
printf '%s\n' "$1" "\$@" >"\${CALLS}/$1"
echo "stub $1 ran"
exit "\${STUB_STATUS:-0}"
EOF
    chmod +x "${BIN}/$1"
}

# stub_nsd_app_wrap: nsd-app-wrap.sh defining pixi_launch, which records its argv and returns
# $PIXI_LAUNCH_STATUS. It reads an unset variable and runs a failing command at the top level, as a script
# not written for `set -eu` may, and sets variables whose names the wrapper might use.
stub_nsd_app_wrap() {
    cat >"${BIN}/nsd-app-wrap.sh" <<'EOF'
#!/bin/bash
echo "nsd-app-wrap.sh sourced${NSD_STUB_UNSET_VARIABLE}"
false
ENV_NAME=clobbered APPLICATION=clobbered CONFIG_FILE=clobbered PROG=clobbered DEFAULT_ENV=clobbered
pixi_launch() {
    printf '%s\n' pixi_launch "$@" >"${CALLS}/pixi_launch"
    echo "pixi_launch ran"
    return "${PIXI_LAUNCH_STATUS:-0}"
}
EOF
    chmod +x "${BIN}/nsd-app-wrap.sh"
}

# config JSON: write the configuration file $CFG
config() {
    printf '%s\n' "$1" >"${CFG}"
}

# assert_called NAME ARGS...: NAME was called with exactly ARGS
assert_called() {
    local name="$1" expected actual
    shift
    [[ -f "${CALLS}/${name}" ]] || {
        echo "${name} was not called; output: ${output}; stderr: ${stderr}"
        return 1
    }
    expected="$(printf '%s\n' "${name}" "$@")"
    actual="$(<"${CALLS}/${name}")"
    if [[ "${actual}" != "${expected}" ]]; then
        printf 'expected argv of %s:\n%s\nactual:\n%s\n' "${name}" "${expected}" "${actual}"
        return 1
    fi
}

# assert_not_called NAME...
assert_not_called() {
    local name
    for name in "$@"; do
        if [[ -e "${CALLS}/${name}" ]]; then
            echo "${name} was called: $(<"${CALLS}/${name}")"
            return 1
        fi
    done
}

# assert_env NAME: launched (with the conda stub) in environment NAME, passing $CFG
assert_env() {
    [[ "${status}" -eq 0 ]] || {
        echo "status ${status}; output: ${output}; stderr: ${stderr}"
        return 1
    }
    assert_called conda run --no-capture-output -n "$1" python "${APP}" "${CFG}"
    assert_line "Using environment $1"
}

# assert_line TEXT: stdout holds the line TEXT
assert_line() {
    local line
    for line in "${lines[@]}"; do
        [[ "${line}" == "$1" ]] && return 0
    done
    printf 'no line "%s" in the output:\n%s\n' "$1" "${output}"
    return 1
}

# refute_output_matching PATTERN: no stdout line matches the glob PATTERN
refute_output_matching() {
    local line
    for line in "${lines[@]}"; do
        # shellcheck disable=SC2053  # a glob on purpose
        if [[ "${line}" == $1 ]]; then
            printf 'unexpected line "%s" in the output:\n%s\n' "${line}" "${output}"
            return 1
        fi
    done
}

# assert_default_with_warning TEXT: exactly one stderr line, a warning containing TEXT, and mantid_dev
assert_default_with_warning() {
    assert_env mantid_dev
    # shellcheck disable=SC2154  # set by bats' run --separate-stderr
    if [[ "${#stderr_lines[@]}" -ne 1 ]]; then
        printf 'expected one stderr line, got %d:\n%s\n' "${#stderr_lines[@]}" "${stderr}"
        return 1
    fi
    [[ "${stderr}" == "livereduce.sh: warning: "*"$1"*"; using the default environment mantid_dev" ]] || {
        echo "unexpected warning: ${stderr}"
        return 1
    }
    refute_output_matching "Determine pixi environment*"
}

# assert_no_warning: nothing on stderr
assert_no_warning() {
    [[ -z "${stderr}" ]] || {
        echo "unexpected stderr: ${stderr}"
        return 1
    }
}

# --- environment selection ------------------------------------------------------------------------------------

@test "PIXI_ENV is used verbatim" {
    stub conda
    config '{"instrument": "REF_L", "PIXI_ENV": "mr_reduction-qa"}'
    run_script "${CFG}"
    assert_env mr_reduction-qa
    assert_line "Determine pixi environment from \"${CFG}\""
    assert_no_warning
}

@test "CONDA_ENV with a -dev suffix maps to _dev" {
    stub conda
    config '{"CONDA_ENV": "mantid-dev"}'
    run_script "${CFG}"
    assert_env mantid_dev
    assert_line "Determine pixi environment from CONDA_ENV entry in \"${CFG}\""
    assert_no_warning
}

@test "CONDA_ENV with a -qa suffix maps to _qa" {
    stub conda
    config '{"CONDA_ENV": "sasview-qa"}'
    run_script "${CFG}"
    assert_env sasview_qa
    assert_line "Determine pixi environment from CONDA_ENV entry in \"${CFG}\""
}

@test "CONDA_ENV with another suffix is used verbatim (upstream fell back to mantid_dev)" {
    stub conda
    config '{"CONDA_ENV": "mantid-nightly"}'
    run_script "${CFG}"
    assert_env mantid-nightly
    assert_line "Determine pixi environment from CONDA_ENV entry in \"${CFG}\""
    assert_no_warning
}

@test "CONDA_ENV with -dev in the middle is not mapped" {
    stub conda
    config '{"CONDA_ENV": "my-dev-env"}'
    run_script "${CFG}"
    assert_env my-dev-env
}

@test "CONDA_ENV with -qa in the middle and an underscore suffix are not mapped" {
    stub conda
    config '{"CONDA_ENV": "x-qa-y_qa"}'
    run_script "${CFG}"
    assert_env x-qa-y_qa
}

@test "PIXI_ENV wins over CONDA_ENV" {
    stub conda
    config '{"CONDA_ENV": "sasview-qa", "PIXI_ENV": "pixi_env"}'
    run_script "${CFG}"
    assert_env pixi_env
    assert_line "Determine pixi environment from \"${CFG}\""
    refute_output_matching "*CONDA_ENV entry*"
}

@test "neither key: the default mantid_dev, no message, no warning" {
    stub conda
    config '{"instrument": "CG3", "update_every": 5}'
    run_script "${CFG}"
    assert_env mantid_dev
    refute_output_matching "Determine pixi environment*"
    assert_no_warning
}

@test "the text PIXI_ENV outside a top-level key is not a key (upstream launched env \"null\")" {
    stub conda
    config '{"instrument": "PIXI_ENV", "watchdog": {"PIXI_ENV": "nested"}, "script_dir": "/CONDA_ENV"}'
    run_script "${CFG}"
    assert_env mantid_dev
    refute_output_matching "*null*"
    assert_no_warning
}

@test "PIXI_ENV null counts as absent: CONDA_ENV applies" {
    stub conda
    config '{"PIXI_ENV": null, "CONDA_ENV": "mantid-qa"}'
    run_script "${CFG}"
    assert_env mantid_qa
    refute_output_matching "*null*"
}

@test "PIXI_ENV null alone: the default, never an env named null" {
    stub conda
    config '{"PIXI_ENV": null}'
    run_script "${CFG}"
    assert_env mantid_dev
    refute_output_matching "*null*"
    assert_no_warning
}

@test "empty PIXI_ENV counts as absent (Config.env_name): CONDA_ENV applies" {
    stub conda
    config '{"PIXI_ENV": "", "CONDA_ENV": "sasview-dev"}'
    run_script "${CFG}"
    assert_env sasview_dev
}

@test "empty PIXI_ENV and CONDA_ENV: the default, never an empty env name" {
    stub conda
    config '{"PIXI_ENV": "", "CONDA_ENV": ""}'
    run_script "${CFG}"
    assert_env mantid_dev
}

@test "PIXI_ENV a number: warning, default" {
    stub conda
    config '{"PIXI_ENV": 5, "CONDA_ENV": "other-qa"}'
    run_script "${CFG}"
    assert_default_with_warning "PIXI_ENV in \"${CFG}\" is a number (5), not a string"
}

@test "PIXI_ENV a boolean: warning, default" {
    stub conda
    config '{"PIXI_ENV": true}'
    run_script "${CFG}"
    assert_default_with_warning "PIXI_ENV in \"${CFG}\" is a boolean (true), not a string"
}

@test "CONDA_ENV an object: warning, default" {
    stub conda
    config '{"CONDA_ENV": {"name": "mantid-qa"}}'
    run_script "${CFG}"
    assert_default_with_warning "CONDA_ENV in \"${CFG}\" is a object"
}

@test "broken JSON: warning, default, never an empty env name" {
    stub conda
    config '{"PIXI_ENV": "x",'
    run_script "${CFG}"
    assert_default_with_warning "cannot read \"${CFG}\" as JSON (parse error:"
}

@test "a JSON array: warning, default" {
    stub conda
    config '[{"PIXI_ENV": "x"}]'
    run_script "${CFG}"
    assert_default_with_warning "\"${CFG}\" holds a JSON array, not an object"
}

@test "a JSON string: warning, default" {
    stub conda
    config '"PIXI_ENV"'
    run_script "${CFG}"
    assert_default_with_warning "holds a JSON string, not an object"
}

@test "an empty file: warning, default" {
    stub conda
    : >"${CFG}"
    run_script "${CFG}"
    assert_default_with_warning "\"${CFG}\" is empty, not a JSON object"
}

@test "two JSON objects in one file: warning, default" {
    stub conda
    config '{"PIXI_ENV": "a"} {"PIXI_ENV": "b"}'
    run_script "${CFG}"
    assert_default_with_warning "holds 2 JSON values, not one object"
}

@test "missing configuration file: warning, default; the argument is still passed on" {
    stub conda
    run_script "${CFG}"
    assert_default_with_warning "configuration file \"${CFG}\" not found"
}

@test "configuration path is a directory: warning, default" {
    stub conda
    mkdir "${CFG}"
    run_script "${CFG}"
    assert_default_with_warning "configuration file \"${CFG}\" is a directory"
}

@test "unreadable configuration file: warning, default" {
    [[ "$(id -u)" -ne 0 ]] || skip "root reads any file"
    stub conda
    config '{"PIXI_ENV": "secret"}'
    chmod 000 "${CFG}"
    run_script "${CFG}"
    assert_default_with_warning "configuration file \"${CFG}\" is not readable"
}

@test "jq not on PATH: warning, default" {
    stub conda
    rm "${BIN}/jq"
    config '{"PIXI_ENV": "x"}'
    run_script "${CFG}"
    assert_default_with_warning "jq not found"
}

@test "no argument: the default path, replaced by LIVEREDUCE_CONFIG" {
    stub conda
    config '{"PIXI_ENV": "from_default_path"}'
    LIVEREDUCE_CONFIG="${CFG}" run_script
    [[ "${status}" -eq 0 ]]
    assert_line "ARGS "
    assert_line "Determine pixi environment from \"${CFG}\""
    assert_called conda run --no-capture-output -n from_default_path python "${APP}"
}

@test "no argument and no LIVEREDUCE_CONFIG: /etc/livereduce.conf" {
    [[ ! -e /etc/livereduce.conf ]] || skip "/etc/livereduce.conf exists on this machine"
    stub conda
    run_script
    [[ "${status}" -eq 0 ]]
    [[ "${stderr}" == *'configuration file "/etc/livereduce.conf" not found'* ]]
    assert_called conda run --no-capture-output -n mantid_dev python "${APP}"
}

@test "an argument wins over LIVEREDUCE_CONFIG" {
    stub conda
    config '{"PIXI_ENV": "from_argument"}'
    printf '{"PIXI_ENV": "from_variable"}\n' >"${BATS_TEST_TMPDIR}/other.conf"
    LIVEREDUCE_CONFIG="${BATS_TEST_TMPDIR}/other.conf" run_script "${CFG}"
    assert_env from_argument
}

# shellcheck disable=SC2016  # a literal $HOME on purpose
@test "extra arguments are passed through exactly" {
    stub conda
    config '{"PIXI_ENV": "e"}'
    run_script "${CFG}" --check "two words" '*' '' '$HOME'
    [[ "${status}" -eq 0 ]]
    assert_line "ARGS ${CFG} --check two words *  \$HOME"
    assert_called conda run --no-capture-output -n e python "${APP}" "${CFG}" --check "two words" '*' '' '$HOME'
}

@test "options before the configuration file: the first positional argument is the file" {
    stub conda
    config '{"PIXI_ENV": "after_option"}'
    run_script --check "${CFG}"
    assert_line "Determine pixi environment from \"${CFG}\""
    assert_called conda run --no-capture-output -n after_option python "${APP}" --check "${CFG}"
    assert_no_warning
}

@test "after -- an argument starting with a dash is the configuration file" {
    stub conda
    mkdir "${BATS_TEST_TMPDIR}/d"
    printf '{"PIXI_ENV": "dashed"}\n' >"${BATS_TEST_TMPDIR}/d/-x.conf"
    cd "${BATS_TEST_TMPDIR}/d"
    run_script -- -x.conf
    assert_called conda run --no-capture-output -n dashed python "${APP}" -- -x.conf
}

@test "stdout: ARGS, the source, the environment, the launcher" {
    stub conda
    config '{"CONDA_ENV": "mantid-qa"}'
    run_script "${CFG}" --check
    [[ "${status}" -eq 0 ]]
    [[ "${#lines[@]}" -eq 5 ]]
    [[ "${lines[0]}" == "ARGS ${CFG} --check" ]]
    [[ "${lines[1]}" == "Determine pixi environment from CONDA_ENV entry in \"${CFG}\"" ]]
    [[ "${lines[2]}" == "Using environment mantid_qa" ]]
    [[ "${lines[3]}" == "Launching with conda: conda run --no-capture-output -n mantid_qa python ${APP} ${CFG} --check" ]]
    [[ "${lines[4]}" == "stub conda ran" ]]
}

# --- launcher -------------------------------------------------------------------------------------------------

@test "nsd-app-wrap.sh on PATH: sourced, pixi_launch gets env, python, the app and the arguments" {
    stub_nsd_app_wrap
    stub pixi
    stub conda
    stub python3
    mkdir "${LIVEREDUCE_PIXI_ROOT}/sasview_qa"
    config '{"CONDA_ENV": "sasview-qa"}'
    run_script "${CFG}" --check
    [[ "${status}" -eq 0 ]]
    assert_called pixi_launch sasview_qa python "${APP}" "${CFG}" --check
    assert_not_called pixi conda python3
    assert_line "Launching with ${BIN}/nsd-app-wrap.sh: pixi_launch sasview_qa python ${APP} ${CFG} --check"
    assert_line "nsd-app-wrap.sh sourced"
    assert_line "pixi_launch ran"
    assert_no_warning
}

@test "nsd-app-wrap.sh: the wrapper's exit status is pixi_launch's" {
    stub_nsd_app_wrap
    config '{}'
    PIXI_LAUNCH_STATUS=3 run_script "${CFG}"
    [[ "${status}" -eq 3 ]]
    assert_called pixi_launch mantid_dev python "${APP}" "${CFG}"
}

@test "nsd-app-wrap.sh without pixi_launch: error, exit 1" {
    printf '#!/bin/bash\ntrue\n' >"${BIN}/nsd-app-wrap.sh"
    chmod +x "${BIN}/nsd-app-wrap.sh"
    stub conda
    config '{}'
    run_script "${CFG}"
    [[ "${status}" -eq 1 ]]
    [[ "${stderr}" == *"does not define the function pixi_launch"* ]]
    assert_not_called conda
}

@test "pixi with the manifest directory: exec pixi run --frozen" {
    stub pixi
    stub conda
    stub python3
    mkdir "${LIVEREDUCE_PIXI_ROOT}/mantid_dev"
    config '{"CONDA_ENV": "mantid-dev"}'
    run_script "${CFG}" --check
    [[ "${status}" -eq 0 ]]
    assert_called pixi run --frozen --manifest-path "${LIVEREDUCE_PIXI_ROOT}/mantid_dev" python "${APP}" "${CFG}" --check
    assert_not_called conda python3
    assert_line "Launching with pixi: pixi run --frozen --manifest-path ${LIVEREDUCE_PIXI_ROOT}/mantid_dev python ${APP} ${CFG} --check"
    assert_no_warning
}

@test "pixi with a manifest file (not a directory) of the env's name" {
    stub pixi
    : >"${LIVEREDUCE_PIXI_ROOT}/single"
    config '{"PIXI_ENV": "single"}'
    run_script "${CFG}"
    assert_called pixi run --frozen --manifest-path "${LIVEREDUCE_PIXI_ROOT}/single" python "${APP}" "${CFG}"
}

@test "pixi without the manifest: conda" {
    stub pixi
    stub conda
    mkdir "${LIVEREDUCE_PIXI_ROOT}/other_env"
    config '{"PIXI_ENV": "wanted"}'
    run_script "${CFG}"
    assert_env wanted
    assert_not_called pixi
    assert_line "No pixi manifest ${LIVEREDUCE_PIXI_ROOT}/wanted, trying conda"
}

@test "pixi without the manifest and no conda: python3 with a warning naming the manifest" {
    stub pixi
    stub python3
    config '{"PIXI_ENV": "wanted"}'
    run_script "${CFG}"
    [[ "${status}" -eq 0 ]]
    assert_called python3 "${APP}" "${CFG}"
    assert_not_called pixi
    [[ "${stderr}" == *"pixi without the manifest ${LIVEREDUCE_PIXI_ROOT}/wanted"* ]]
}

@test "the pixi root defaults to /usr/local/pixi" {
    unset LIVEREDUCE_PIXI_ROOT
    local name="livereduce_bats_no_such_env_$$"
    [[ ! -e "/usr/local/pixi/${name}" ]] || skip "/usr/local/pixi/${name} exists"
    stub pixi
    stub conda
    config "{\"PIXI_ENV\": \"${name}\"}"
    run_script "${CFG}"
    assert_env "${name}"
    assert_line "No pixi manifest /usr/local/pixi/${name}, trying conda"
}

@test "conda: exec conda run --no-capture-output -n env" {
    stub conda
    stub python3
    config '{"CONDA_ENV": "sasview-qa"}'
    run_script "${CFG}" --print-config
    [[ "${status}" -eq 0 ]]
    assert_called conda run --no-capture-output -n sasview_qa python "${APP}" "${CFG}" --print-config
    assert_not_called python3
    assert_line "Launching with conda: conda run --no-capture-output -n sasview_qa python ${APP} ${CFG} --print-config"
    assert_no_warning
}

@test "no environment manager: exec python3 with a warning" {
    stub python3
    config '{"PIXI_ENV": "mantid_qa"}'
    run_script "${CFG}" --check
    [[ "${status}" -eq 0 ]]
    assert_called python3 "${APP}" "${CFG}" --check
    assert_line "Launching with python3: python3 ${APP} ${CFG} --check"
    # shellcheck disable=SC2154  # set by bats' run --separate-stderr
    [[ "${#stderr_lines[@]}" -eq 1 ]]
    [[ "${stderr}" == "livereduce.sh: warning: no environment manager found (nsd-app-wrap.sh, pixi, conda);"*"not environment mantid_qa" ]]
}

@test "pixi, conda and python3 replace the wrapper (exec); its exit status is theirs" {
    [[ -r /proc/self/cmdline ]] || skip "no /proc"
    local launcher
    config '{}'
    for launcher in python3 conda pixi; do
        stub "${launcher}"
        [[ "${launcher}" != pixi ]] || mkdir "${LIVEREDUCE_PIXI_ROOT}/mantid_dev"
        STUB_STATUS=7 run_script "${CFG}"
        [[ "${status}" -eq 7 ]]
        [[ "$(<"${CALLS}/${launcher}.how")" == exec ]]
    done
    # and the stub's child test itself works: a stub run by a livereduce.sh child reports "child"
    stub_nsd_app_wrap
    printf 'pixi_launch() { python3 "$@"; }\n' >>"${BIN}/nsd-app-wrap.sh"
    run_script "${CFG}"
    [[ "$(<"${CALLS}/python3.how")" == child ]]
}

@test "the application is livereduce.py next to the script's real path (symlinked wrapper)" {
    stub conda
    ln -s "${SCRIPT}" "${BIN}/livereduce.sh"
    config '{}'
    run --separate-stderr env PATH="${BIN}" livereduce.sh "${CFG}"
    [[ "${status}" -eq 0 ]]
    [[ "${APP}" == /* && -f "${APP}" ]]
    assert_called conda run --no-capture-output -n mantid_dev python "${APP}" "${CFG}"
}

# --- fontconfig cache -----------------------------------------------------------------------------------------

@test "the fontconfig cache is emptied, nothing else" {
    stub conda
    mkdir -p "${HOME}/.cache/fontconfig" "${HOME}/.cache/other"
    : >"${HOME}/.cache/fontconfig/a-le64.cache-9"
    : >"${HOME}/.cache/fontconfig/CACHEDIR.TAG"
    : >"${HOME}/.cache/other/keep"
    config '{}'
    run_script "${CFG}"
    [[ "${status}" -eq 0 ]]
    [[ -d "${HOME}/.cache/fontconfig" ]]
    [[ -z "$(ls -A "${HOME}/.cache/fontconfig")" ]]
    [[ -f "${HOME}/.cache/other/keep" ]]
}

@test "the fontconfig step never fails: no cache, a subdirectory in it, HOME unset" {
    stub conda
    config '{}'
    run_script "${CFG}"
    [[ "${status}" -eq 0 ]]
    mkdir -p "${HOME}/.cache/fontconfig/subdir"
    : >"${HOME}/.cache/fontconfig/x.cache-9"
    run_script "${CFG}"
    [[ "${status}" -eq 0 ]]
    [[ ! -e "${HOME}/.cache/fontconfig/x.cache-9" ]]
    [[ -d "${HOME}/.cache/fontconfig/subdir" ]]
    run --separate-stderr env -u HOME PATH="${BIN}" "${SCRIPT}" "${CFG}"
    [[ "${status}" -eq 0 ]]
    assert_called conda run --no-capture-output -n mantid_dev python "${APP}" "${CFG}"
}
