# Sourced by scripts/wheels.sh and scripts/pytest_on.sh: where each CPython
# lives and where the machine-wide caches go.
#
#   3.9-3.13   pyenv, ~/.pyenv/versions/X.Y.*/bin/pythonX.Y (the newest patch)
#   3.14 3.15  Debian sid's, in the chroot that ../shared/pythons/setup-sid.sh
#              builds at /opt/sid (made here when missing; idempotent); run
#              there through ../shared/pythons/in-sid
#
# Caches outlive the clone (CI clones afresh each run, on the same machine):
# $OXLOOP_CACHE (default ~/.cache/oxloop) on the host, /opt/sid/opt/wheels-*
# inside the chroot.

OXLOOP_CACHE="${OXLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oxloop}"
SID_ROOT="${SID_ROOT:-/opt/sid}"
export SID_ROOT

# in_chroot X.Y: true for the versions that live in the sid chroot.
in_chroot() {
    case "$1" in 3.14|3.15) return 0 ;; *) return 1 ;; esac
}

# python_for X.Y: the interpreter's path (inside the chroot for 3.14/3.15);
# empty if pyenv has none.
python_for() {
    if in_chroot "$1"; then
        echo "/usr/bin/python$1"
    else
        ls -d "$HOME"/.pyenv/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -V | tail -n 1
    fi
}

# shared_dir ROOT: ../shared beside the clone; a git worktree finds it beside
# the main checkout.
shared_dir() {
    local root="$1"
    if [ -d "$root/../shared/pythons" ]; then
        (cd "$root/../shared" && pwd)
    else
        echo "$(cd "$(git -C "$root" rev-parse --git-common-dir)/../.." && pwd)/shared"
    fi
}

# ensure_sid ROOT: the chroot with 3.14 and 3.15, built if missing.
ensure_sid() {
    if [ ! -x "$SID_ROOT/usr/bin/python3.14" ] || [ ! -x "$SID_ROOT/usr/bin/python3.15" ]; then
        echo "pythons: no sid chroot at $SID_ROOT: running setup-sid.sh (a few minutes)" >&2
        bash "$(shared_dir "$1")/pythons/setup-sid.sh" >&2
    fi
}

# in_sid ROOT CMD...: runs CMD in the chroot, in ROOT, with pip's and zig's
# caches shared with the host (the same paths inside).
in_sid() {
    local root="$1"
    shift
    mkdir -p "$HOME/.cache/pip" "$HOME/.cache/zig"
    (cd "$root" && bash "$(shared_dir "$root")/pythons/in-sid" \
        -w "$HOME/.cache/pip" -w "$HOME/.cache/zig" "$@")
}
