#!/usr/bin/env bash
# tests/bluez-vm/run.sh: localcert's BLE backends over the real Linux Bluetooth stack.
#
# The host kernel here has no Bluetooth, so each case boots Debian's kernel in QEMU (the command
# line is tests/vm-common/qemu.sh, shared with tests/webbluetooth-vm) with a small initramfs that
# mounts the host's / read-only over 9p under a tmpfs overlay (the host's release
# binaries run unchanged inside) and hands over to guest.sh, which brings up dbus-daemon,
# bluetoothd and btvirt (two emulated LE controllers, hci0 and hci1, on one emulated air), the
# issuer on loopback, the reference daemon `localcert-device` on hci0 and `localcert ua provision`
# on hci1. See README.md beside this file.
#
# Usage:  tests/bluez-vm/run.sh [setup] [build] [CASE...]      (default: setup build + all cases)
#         cases: provision mtu23 disconnect manage eatt (the default set; eatt: BlueZ's default
#         EATT, several bearers that reorder fragments, see README.md);
#         shell (interactive VM, BlueZ up; not part of "all")
# Env:    LOCALCERT_BZVM_OUT  scratch directory (default tests/bluez-vm/out, gitignored)
#         ACCEL (kvm|tcg, default: kvm only if the CPU shows vmx/svm), MEM (MiB, 2048), SMP (2)
#         CASE_TIMEOUT (s per VM, default 240; manage gets 1.5 times it), SKIP_APT=1 (packages there)
# Needs:  root (apt-get), Debian 12, the Rust toolchain and a C compiler. No network in the VM.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${LOCALCERT_BZVM_OUT:-$HERE/out}
MEM=${MEM:-2048}
SMP=${SMP:-2}
CASE_TIMEOUT=${CASE_TIMEOUT:-240}
ALL_CASES="provision mtu23 disconnect manage eatt"
export DEBIAN_FRONTEND=noninteractive
say() { printf '=== [%(%H:%M:%S)T] %s\n' -1 "$*"; }
. "$REPO/tests/vm-common/qemu.sh"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

QEMU_PID=
cleanup() {
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

setup() {
    if [ -z "${SKIP_APT:-}" ]; then
        say "apt: qemu, bluez, btvirt (bluez-test-tools), busybox, python3"
        apt-get update -q
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 \
            qemu-system-x86 bluez bluez-test-tools dbus busybox-static kmod cpio gzip python3 openssl
    fi
    # Debian's kernel (Bluetooth, hci_vhci, 9p, overlay as modules), unpacked, never installed.
    local kpkg
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [ -n "$kpkg" ] || { echo "cannot find the Debian kernel package" >&2; exit 1; }
    if [ ! -e "$OUT/kernel/.unpacked-$kpkg" ]; then
        say "kernel: $kpkg (downloaded and unpacked, not installed)"
        mkdir -p "$OUT/debs"
        rm -f "$OUT"/debs/*.deb
        (cd "$OUT/debs" && apt-get download -o APT::Sandbox::User=root "$kpkg")
        rm -rf "$OUT/kernel"
        dpkg -x "$OUT"/debs/"$kpkg"_*.deb "$OUT/kernel"
        depmod -b "$OUT/kernel" "$(ls "$OUT/kernel/lib/modules")"
        touch "$OUT/kernel/.unpacked-$kpkg"
    fi
    make_initramfs
    # bluetoothd's LD_PRELOAD shim for the MTU-23 cases (see l2cap-mtu-shim.c).
    cc -shared -fPIC -O2 -Wall -o "$OUT/l2cap-mtu-shim.so" "$HERE/l2cap-mtu-shim.c" -ldl
}

make_initramfs() {
    local root="$OUT/initramfs" kv
    kv=$(ls "$OUT/kernel/lib/modules")
    rm -rf "$root" && mkdir -p "$root"/{bin,mods,proc,sys,dev,lower,upper,newroot}
    cp /bin/busybox "$root/bin/busybox"
    : >"$root/mods/order"
    for m in virtio_pci 9pnet_virtio 9p overlay; do
        modprobe -d "$OUT/kernel" -S "$kv" --show-depends "$m" | awk '$1=="insmod"{print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$root/mods/"
        basename "$ko" >>"$root/mods/order"
    done
    cp "$HERE/initramfs-init" "$root/init"
    chmod +x "$root/init"
    (cd "$root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$OUT/initramfs.cpio.gz"
    say "initramfs: $(du -h "$OUT/initramfs.cpio.gz" | cut -f1)"
}

build() {
    say "cargo build --release (localcert, localcert-device with bluez)"
    (cd "$REPO" && cargo build --release --locked -p localcert -p localcert-device \
        --features localcert-device/bluez)
    local target
    target=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    # The VM runs these copies, so another build in the shared target dir cannot swap them mid-run.
    mkdir -p "$OUT/bin"
    cp "$target/release/localcert" "$target/release/localcert-device" "$OUT/bin/"
}

# vm CASE: boots the VM for one case; the case's logs come back in $OUT/cases/CASE.
vm() {
    local case=$1
    local logs="$OUT/cases/$case" limit=$CASE_TIMEOUT
    # manage provisions twice, runs six UA commands and restarts the daemon twice.
    [ "$case" = manage ] && limit=$((CASE_TIMEOUT * 3 / 2))
    rm -rf "$logs" && mkdir -p "$logs"
    vm_command "$OUT" "$logs" "$HERE/guest.sh" "bzcase=$case bzrepo=$REPO bzout=$OUT bzlogs=$logs" -nic none
    if [ "$case" = shell ]; then
        "${VM_COMMAND[@]}"
        return 0
    fi
    "${VM_COMMAND[@]}" </dev/null >"$logs/console.log" 2>&1 &
    QEMU_PID=$!
    local waited=0
    while kill -0 "$QEMU_PID" 2>/dev/null && [ "$waited" -lt "$limit" ]; do
        sleep 1
        waited=$((waited + 1))
    done
    if kill -0 "$QEMU_PID" 2>/dev/null; then
        echo "case $case: VM still running after ${limit}s, stopping it" >>"$logs/console.log"
        kill "$QEMU_PID" 2>/dev/null || true
    fi
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
    unix_lines "$logs/console.log"
    local rc
    rc=$(cat "$logs/rc" 2>/dev/null || echo 99)
    return "$rc"
}

show_failure() {
    local logs="$OUT/cases/$1" f
    echo "----- case $1 failed: logs kept in $logs"
    for f in console.log result.txt ua.log ua.json ua-1.log device.log status.json issuer.log \
        bluetoothd.log btvirt.log dmesg.log; do
        [ -s "$logs/$f" ] || continue
        echo "----- $f (last 80 lines)"
        tail -n 80 "$logs/$f"
    done
    if [ -s "$logs/hci.btsnoop" ]; then
        echo "----- ATT decode of the btmon capture (hci.btsnoop; last 80 lines)"
        python3 "$HERE/btsnoop_att.py" "$logs/hci.btsnoop" | tail -n 80 || true
    fi
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(setup build $ALL_CASES)
failed=0
summary=()
T0=$SECONDS
for step in "${steps[@]}"; do
    case $step in
    setup) setup ;;
    build) build ;;
    shell) vm shell ;;
    provision | mtu23 | disconnect | eatt | manage)
        [ -x "$OUT/bin/localcert" ] || { echo "run the build step first" >&2; exit 2; }
        say "case $step"
        t=$SECONDS
        if vm "$step"; then
            line="PASS  $step  $((SECONDS - t)) s  $(head -n1 "$OUT/cases/$step/result.txt" 2>/dev/null)"
        else
            failed=1
            show_failure "$step"
            line="FAIL  $step  $((SECONDS - t)) s  $(head -n1 "$OUT/cases/$step/result.txt" 2>/dev/null)"
        fi
        echo "$line"
        summary+=("$line")
        ;;
    *) echo "unknown step $step (setup build provision mtu23 disconnect manage eatt shell)" >&2; exit 2 ;;
    esac
done
if [ ${#summary[@]} -gt 0 ]; then
    say "bluez-vm summary ($((SECONDS - T0)) s in all)"
    printf '%s\n' "${summary[@]}"
    passed=$(printf '%s\n' "${summary[@]}" | grep -c '^PASS' || true)
    echo "bluez-vm: $passed passed, $((${#summary[@]} - passed)) failed"
fi
exit "$failed"
