#!/usr/bin/env bash
# Builds one oxloop wheel per CPython, installs each into a fresh venv of that
# version and runs scripts/wheel_smoke.py there (import, oxloop.run, a TCP echo
# over loopback, a subprocess). Then prints the matrix: version, tag, result.
#
#   bash scripts/wheels.sh                    # 3.9 3.10 3.11 3.12 3.13 3.14 3.15
#   bash scripts/wheels.sh 3.11 3.14          # only these
#   WHEELS_PROFILE=fast bash scripts/wheels.sh 3.12   # quicker build, same checks
#
# Wheels land in dist/ (one per version; an older one of the same tag is
# replaced). They are manylinux2014 (manylinux_2_17) wheels: maturin links
# with zig (PyPI's `ziglang`) against glibc 2.17's symbols, so the wheel loads
# on any x86_64 Linux with glibc >= 2.17, whatever glibc built it.
#
# Where the interpreters come from: 3.9-3.13 from pyenv (~/.pyenv/versions),
# 3.14 and 3.15 from the Debian sid chroot of ../shared/pythons (set up by its
# setup-sid.sh when missing; the build and the smoke test run inside it).
#
# What is cached (so a second run only rebuilds oxloop itself; see
# scripts/pythons.sh):
#   $OXLOOP_CACHE (default ~/.cache/oxloop)/wheel-tools   maturin + ziglang,
#       a venv keyed on their pinned versions and the interpreter
#   $OXLOOP_CACHE/wheel-target/cpXY    cargo's target dir, one per version
#       (pyo3 is built for one interpreter, so versions sharing a target dir
#       would rebuild it at every switch)
#   /opt/sid/opt/wheels-tools, /opt/sid/opt/wheels-target/cpXY: the same
#       inside the chroot
# The smoke venvs are made afresh at every run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
. scripts/pythons.sh
unset PYO3_PYTHON VIRTUAL_ENV  # maturin's --interpreter decides

TOOLS="maturin==1.16.0 ziglang==0.17.1"
TAG_PLATFORM="manylinux_2_17_x86_64"
profile="${WHEELS_PROFILE:-release}"
out="$root/dist"
say() { echo "wheels: $*" >&2; }

# tools_venv DIR PYTHON: a venv with $TOOLS, made again when they change.
tools_venv() {
    local dir="$1" py="$2" key
    key="$TOOLS $("$py" -c 'import sys; print(sys.version)')"
    if [ "$(cat "$dir/.tools-key" 2>/dev/null)" != "$key" ]; then
        say "installing $TOOLS into $dir"
        rm -rf "$dir"
        "$py" -m venv "$dir"
        "$dir/bin/python" -m pip install -q --disable-pip-version-check $TOOLS >&2
        echo "$key" > "$dir/.tools-key"
    fi
}

# build_and_smoke VERSION PYTHON TOOLS_DIR TARGET_DIR SMOKE_VENV: one version,
# start to end; prints "VERSION TAG RESULT BUILD_S SMOKE_S" on stdout.
build_and_smoke() {
    local ver="$1" py="$2" tools="$3" target="$4" venv="$5"
    local abi="cp${ver/./}" t0 t1 t2 wheel result=ok
    local tag="$abi-$abi-$TAG_PLATFORM"
    t0=$(date +%s)
    mkdir -p "$out"
    rm -f "$out"/oxloop-*-"$abi"-"$abi"-*.whl
    say "$ver: building ($profile) with $py"
    if ! PATH="$tools/bin:$PATH" CARGO_TARGET_DIR="$target" \
        "$tools/bin/maturin" build --profile "$profile" --zig --compatibility manylinux2014 \
        --interpreter "$py" --out "$out" --quiet >&2; then
        echo "$ver - build-failed $(( $(date +%s) - t0 )) 0"
        return
    fi
    t1=$(date +%s)
    wheel=""
    for f in "$out"/oxloop-*-"$abi"-"$abi"-*.whl; do [ -e "$f" ] && wheel="$f"; done
    if [ -z "$wheel" ]; then
        say "$ver: maturin made no $abi wheel in $out"
        echo "$ver - no-wheel $(( t1 - t0 )) 0"
        return
    fi
    say "$ver: $(basename "$wheel"); installing into a fresh venv $venv"
    rm -rf "$venv"
    # A venv without pip of its own (seconds faster); the tools venv's pip
    # installs into it.
    if ! "$py" -m venv --without-pip "$venv" >&2 ||
        ! "$tools/bin/python" -m pip --python "$venv/bin/python" install -q \
            --disable-pip-version-check --no-index --no-deps "$wheel" >&2; then
        result=install-failed
    elif ! (cd / && "$venv/bin/python" -W error "$root/scripts/wheel_smoke.py" --expect-tag "$tag") >&2; then
        result=smoke-failed
    fi
    t2=$(date +%s)
    echo "$ver $(basename "$wheel") $result $(( t1 - t0 )) $(( t2 - t1 ))"
}

# Inside the chroot (called through in-sid by the host part below).
if [ "${1:-}" = "--in-sid" ]; then
    shift
    tools_venv /opt/wheels-tools /usr/bin/python3.14
    for ver in "$@"; do
        build_and_smoke "$ver" "$(python_for "$ver")" /opt/wheels-tools \
            "/opt/wheels-target/cp${ver/./}" "/opt/wheels-smoke-cp${ver/./}"
    done
    exit 0
fi

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.9 3.10 3.11 3.12 3.13 3.14 3.15)
host=() chroot=()
for ver in "${versions[@]}"; do
    case "$ver" in
        3.9|3.10|3.11|3.12|3.13) host+=("$ver") ;;
        3.14|3.15) chroot+=("$ver") ;;
        *) say "unsupported version $ver (3.9-3.15)"; exit 2 ;;
    esac
done

results="$(mktemp)"
trap 'rm -f "$results"' EXIT

if [ ${#host[@]} -gt 0 ]; then
    tools_venv "$OXLOOP_CACHE/wheel-tools" python3
    for ver in "${host[@]}"; do
        py="$(python_for "$ver")"
        if [ -z "$py" ]; then
            say "$ver: no CPython $ver in ~/.pyenv/versions"
            echo "$ver - no-interpreter 0 0" >> "$results"
            continue
        fi
        build_and_smoke "$ver" "$py" "$OXLOOP_CACHE/wheel-tools" \
            "$OXLOOP_CACHE/wheel-target/cp${ver/./}" "$OXLOOP_CACHE/wheel-smoke/cp${ver/./}" >> "$results"
    done
fi

if [ ${#chroot[@]} -gt 0 ]; then
    ensure_sid "$root"
    if ! in_sid "$root" env WHEELS_PROFILE="$profile" bash scripts/wheels.sh --in-sid "${chroot[@]}" >> "$results"; then
        for ver in "${chroot[@]}"; do
            grep -q "^$ver " "$results" || echo "$ver - chroot-failed 0 0" >> "$results"
        done
    fi
fi

echo
echo "wheel matrix ($profile build; seconds)"
printf '%-6s %-74s %-14s %6s %6s\n' python wheel result build smoke
status=0
while read -r ver wheel result tbuild tsmoke; do
    printf '%-6s %-74s %-14s %6s %6s\n' "$ver" "$wheel" "$result" "$tbuild" "$tsmoke"
    [ "$result" = ok ] || status=1
done < "$results"
[ "$(wc -l < "$results")" -eq ${#versions[@]} ] || { say "a version gave no result"; status=1; }
exit "$status"
