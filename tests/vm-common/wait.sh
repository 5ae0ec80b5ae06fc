# tests/vm-common/wait.sh: sourced by the VM suites, on the host and in the guest.

wait_for() { # wait_for FILE PATTERN SECONDS: until FILE contains PATTERN (fixed string)
    local t=$SECONDS
    while [ $((SECONDS - t)) -lt "$3" ]; do
        grep -qF -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}
