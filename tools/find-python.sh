#!/usr/bin/env bash
# Print the path of a Python interpreter that the project can use: CPython >= 3.12, < 3.14,
# that actually runs and can create virtual environments (venv + ensurepip).
#
# Order: $PYTHON if set; then for 3.12, then 3.13: the command on PATH (pyenv shims that
# fail because no version is selected are skipped), pyenv with that version selected,
# pyenv's and uv's version directories, /usr/local/bin and /usr/bin; then python3 / python.
# Exits 1, listing what it tried, when nothing fits.
set -uo pipefail

MINORS=(12 13)
tried=()

usable() {
    local cand="$1"
    [[ -n "$cand" ]] || return 1
    "$cand" - <<'EOF' >/dev/null 2>&1
import sys
if not ((3, 12) <= sys.version_info[:2] < (3, 14)):
    sys.exit(1)
import ensurepip, venv  # noqa: F401  (Debian splits these into python3.X-venv)
EOF
}

# Print the absolute path of the interpreter (not of a shim or a symlink chain).
resolve() {
    "$1" -c 'import sys; print(sys.executable)'
}

try() {
    local cand="$1"
    tried+=("$cand")
    if usable "$cand"; then
        resolve "$cand"
        exit 0
    fi
}

if [[ -n "${PYTHON:-}" ]]; then
    try "$PYTHON"
    echo "find-python: \$PYTHON=$PYTHON is not a usable CPython 3.12/3.13 with venv" >&2
    exit 1
fi

pyenv_root=""
if command -v pyenv >/dev/null 2>&1; then
    pyenv_root="$(pyenv root 2>/dev/null || true)"
fi
pyenv_root="${pyenv_root:-${PYENV_ROOT:-$HOME/.pyenv}}"

for minor in "${MINORS[@]}"; do
    exe="python3.$minor"

    # 1. On PATH, if it runs (a pyenv shim with no version selected fails here).
    if p="$(command -v "$exe" 2>/dev/null)"; then
        try "$p"
    fi

    # 2. pyenv: select an installed 3.<minor>.x explicitly.
    if [[ -d "$pyenv_root/versions" ]]; then
        while IFS= read -r d; do
            [[ "${d##*/}" =~ ^3\.$minor\.[0-9]+$ ]] && try "$d/bin/$exe"
        done < <(printf '%s\n' "$pyenv_root/versions/3.$minor".* | sort -rV)
    fi

    # 3. uv-managed interpreters.
    while IFS= read -r p; do
        [[ -x "$p" ]] && try "$p"
    done < <(printf '%s\n' "$HOME/.local/share/uv/python/cpython-3.$minor".*/bin/"$exe" | sort -rV)

    # 4. Distribution / hand-built interpreters.
    for p in "/usr/local/bin/$exe" "/usr/bin/$exe"; do
        [[ -x "$p" ]] && try "$p"
    done
done

# 5. Whatever python3 / python is, if its version fits.
for exe in python3 python; do
    if p="$(command -v "$exe" 2>/dev/null)"; then
        try "$p"
    fi
done

{
    echo "find-python: no usable CPython >= 3.12, < 3.14 (with the venv module) found."
    echo "  tried: ${tried[*]:-nothing}"
    echo "  Install one (e.g. 'pyenv install 3.12', or on Debian 'apt-get install python3.13 python3.13-venv'),"
    echo "  or point PYTHON=/path/to/python3.12 at one."
} >&2
exit 1
