# Sourced by scripts/demo and scripts/test: install what a fresh Debian / Raspberry Pi OS
# machine lacks, then make (or reuse) the project's virtual environment in .venv.
# Usage inside a script:  . "$(dirname "$0")/bootstrap.sh"; bootstrap "extra-debian-pkgs" ".[extras]"

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

# $1: Debian packages that must be present (space separated), as "command:package" pairs;
# a command starting with / is a file that must exist (a server in /usr/sbin, a module).
# $2 = "no-start": the packages hold servers only the tests run (on loopback, on ports of
# their own): their services are not started by the install (policy-rc.d, invoke-rc.d(8)).
need_debs() {
    local missing=() pair what
    for pair in $1; do
        what=${pair%%:*}
        if [[ $what == /* ]]; then [ -e "$what" ] && continue
        else command -v "$what" >/dev/null 2>&1 && continue; fi
        missing+=("${pair#*:}")
    done
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}" >&2
        local policy=/usr/sbin/policy-rc.d made=""
        if [ "${2:-}" = no-start ] && [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
            as_root chmod 755 "$policy"
            made=$policy
        fi
        local rc=0
        as_root apt-get update -qq &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
                >/dev/null || rc=$?
        if [ -n "$made" ]; then as_root rm -f "$made"; fi
        return $rc
    fi
}

# $1: the pip requirement for the project, e.g. "." or ".[test]"
make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$1")
}
