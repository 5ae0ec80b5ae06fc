# tests/vm-common/qemu.sh: the QEMU command line both VM suites boot (tests/bluez-vm,
# tests/webbluetooth-vm), sourced by their run.sh.
#
# vm_command OUT LOGS GUEST APPEND [QEMU ARG…]: sets the array VM_COMMAND. The VM boots Debian's
# kernel unpacked in OUT/kernel with OUT/initramfs.cpio.gz (tests/bluez-vm/run.sh setup), whose
# init mounts the host's / read-only over 9p under a tmpfs overlay and runs GUEST as PID 1; LOGS
# is a writable share the host keeps. APPEND goes on the kernel command line for GUEST.
# Env: ACCEL (kvm|tcg; default kvm only if the CPU shows vmx/svm and /dev/kvm is writable),
# MEM (MiB, 2048), SMP (2).
vm_command() {
    local out=$1 logs=$2 guest=$3 append=$4 accel=${ACCEL:-} cpu=max
    shift 4
    if [ -z "$accel" ]; then
        if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; then accel=kvm; else accel=tcg; fi
    fi
    [ "$accel" = kvm ] && cpu=host
    [ "$accel" = tcg ] && accel=tcg,thread=multi
    VM_COMMAND=(qemu-system-x86_64 -accel "$accel" -cpu "$cpu" -smp "${SMP:-2}" -m "${MEM:-2048}"
        -nographic -no-reboot
        -kernel "$(ls "$out"/kernel/boot/vmlinuz-*)" -initrd "$out/initramfs.cpio.gz"
        -append "console=ttyS0 panic=-1 quiet loglevel=3 guestinit=$guest $append"
        -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
        -virtfs "local,path=$logs,mount_tag=logs,security_model=none,multidevs=remap"
        "$@")
}

# unix_lines FILE: the serial console's CRLF line ends made plain.
unix_lines() { tr -d '\r' <"$1" >"$1.tmp" && mv "$1.tmp" "$1"; }
