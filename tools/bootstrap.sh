#!/usr/bin/env bash
# `make setup`: install the project into .venv with Poetry, from poetry.lock.
#
#   1. If .venv works and was installed from the current pyproject.toml + poetry.lock
#      (stamp .venv/.setup-stamp), stop: nothing to do.
#   2. Pick Poetry: `poetry` >= 2 on PATH, else a pinned Poetry installed into .tools/venv.
#   3. Create .venv from a CPython 3.12/3.13 found by tools/find-python.sh, if needed.
#   4. `poetry install`. Stock Poetry needs PyPI's per-release JSON API; where the index
#      serves only the simple API it fails with "Package X not found". The .tools Poetry runs
#      through tools/poetry_simple_index.py, which falls back to the simple index in that case;
#      a PATH Poetry that fails is retried that way.
#   5. Precompile every module to bytecode (see there why).
#
# `tools/bootstrap.sh poetry` does steps 2 and 3 only (for `make lock`).
#
# Environment: PYTHON (interpreter to use), POETRY (a Poetry to use as is),
# POETRY_VERSION (version installed into .tools), POETRY_INSTALL_ARGS (extra install args).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

POETRY_VERSION="${POETRY_VERSION:-2.5.1}"
POETRY_INSTALL_ARGS="${POETRY_INSTALL_ARGS:-}"
venv="$root/.venv"
tools="$root/.tools"
stamp="$venv/.setup-stamp"

unset VIRTUAL_ENV
export POETRY_VIRTUALENVS_IN_PROJECT=true
export POETRY_VIRTUALENVS_CREATE=true
export PYTHON_KEYRING_BACKEND="${PYTHON_KEYRING_BACKEND:-keyring.backends.null.Keyring}"

log() { echo "setup: $*" >&2; }

venv_ok() {
    [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c \
        'import sys; sys.exit(0 if (3, 12) <= sys.version_info[:2] < (3, 14) else 1)' 2>/dev/null
}

stamp_key() {
    {
        cat pyproject.toml poetry.lock
        "$venv/bin/python" -c 'import sys; print(sys.version)'
        echo "args=$POETRY_INSTALL_ARGS"
    } | sha256sum | cut -d' ' -f1
}

only_poetry=false
[[ "${1:-}" == poetry ]] && only_poetry=true

up_to_date() {
    ! $only_poetry && venv_ok && [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$(stamp_key)" ]]
}

# 1. Up to date?
if up_to_date; then
    exit 0
fi

# Several `make` runs may share one work tree: one installs at a time, the others wait and
# then find the stamp current.
mkdir -p "$tools"
# Keep .tools out of git without touching the repository's .gitignore.
[[ -f "$tools/.gitignore" ]] || printf '*\n' >"$tools/.gitignore"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$tools/setup.lock"
    flock 9
    if up_to_date; then
        exit 0
    fi
fi

PY=""
find_python() {
    if [[ -z "$PY" ]]; then
        PY="$("$root/tools/find-python.sh")"
        log "using Python $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
    fi
}

poetry_major() {  # prints the major version of the Poetry command given, or nothing
    "$@" --version 2>/dev/null | sed -nE 's/.*version ([0-9]+)\..*/\1/p' | head -n1
}

install_tools_poetry() {
    if [[ -x "$tools/venv/bin/poetry" ]] &&
        [[ "$("$tools/venv/bin/poetry" --version 2>/dev/null)" == *"version $POETRY_VERSION)"* ]]; then
        return 0
    fi
    find_python
    log "installing Poetry $POETRY_VERSION into .tools/venv"
    rm -rf "$tools/venv"
    "$PY" -m venv "$tools/venv"
    if ! "$tools/venv/bin/python" -m pip install --disable-pip-version-check \
        "poetry==$POETRY_VERSION" >"$tools/pip-install.log" 2>&1; then
        cat "$tools/pip-install.log" >&2
        log "installing Poetry failed (log: .tools/pip-install.log)"
        rm -rf "$tools/venv"
        exit 1
    fi
}

# 2. Which Poetry.
if [[ -n "${POETRY:-}" ]]; then
    mode=given
elif [[ -x "$tools/venv/bin/poetry" ]]; then
    mode=tools
elif command -v poetry >/dev/null 2>&1 && [[ "$(poetry_major poetry)" -ge 2 ]] 2>/dev/null; then
    mode=path
else
    mode=tools
fi
[[ "$mode" == tools ]] && install_tools_poetry

# 3. The project's virtualenv.
if ! venv_ok; then
    if [[ -e "$venv" ]]; then
        log ".venv is broken or has the wrong Python; recreating it"
        rm -rf "$venv"
    fi
    find_python
    "$root/tools/poetry" env use --no-interaction "$PY" >&2
fi

$only_poetry && exit 0

# 4. Install.
# shellcheck disable=SC2086  # POETRY_INSTALL_ARGS is a word list on purpose
if [[ "$mode" == path ]]; then
    stock_log="$(mktemp)"
    trap 'rm -f "$stock_log"' EXIT
    if poetry install --no-interaction $POETRY_INSTALL_ARGS >"$stock_log" 2>&1; then
        cat "$stock_log"
    else
        grep -E 'not found|Unable to find|Error|error' "$stock_log" | head -n 3 | sed 's/^/    /' >&2 || true
        log "stock 'poetry install' failed (above); retrying with the project Poetry and the simple-index fallback"
        install_tools_poetry
        "$root/tools/poetry" install --no-interaction $POETRY_INSTALL_ARGS
    fi
else
    "$root/tools/poetry" install --no-interaction $POETRY_INSTALL_ARGS
fi

# 5. Bytecode for every module, once. Poetry does not compile by default, and where
# PYTHONDONTWRITEBYTECODE is set (this project's machines set it) nothing ever writes a .pyc:
# each connector process (a test's, the bench's, the chaos matrix's) would then compile its
# whole import tree again, about 0.6 s of every start. A stale .pyc is only ignored, never wrong.
"$venv/bin/python" -m compileall -q -j 0 "$venv/lib" source_bulk_export tests >/dev/null 2>&1 ||
    log "some modules could not be precompiled (harmless: they compile when imported)"

stamp_key >"$stamp"
log "done ($("$venv/bin/python" -c 'import platform; print(platform.python_version())') in .venv)"
