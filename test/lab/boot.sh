#!/usr/bin/env bash
# Boots the IPVS lab VM once and runs a command inside it, from the repository root:
#   test/lab/boot.sh 'node test/lab/cases/run.ts'
# The command's stdout is printed on stdout when the VM is done; everything else goes to stderr.
# Exit status: the command's, or 90+ when the VM itself failed.
# The whole script is one function, read before it runs: editing this file while a VM is up
# cannot change what the running copy does next.
set -euo pipefail
main() {
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
eval "$(bash "$here/prepare.sh")"
results=$(mktemp -d /var/tmp/kipvs-lab.XXXXXX)
# LAB_KEEP=DIR keeps what the guest wrote under /lab-results (profiles, logs) in DIR.
trap 'if [ -n "${LAB_KEEP:-}" ]; then mkdir -p "$LAB_KEEP" && cp -r "$results"/. "$LAB_KEEP"/; fi; rm -rf "$results"' EXIT
printf '%s\n' "$1" > "$results/cmd.sh"
# LAB_HOST_PORT=N: the guest reaches the host's 127.0.0.1:N at 10.0.2.100:6443 (an API server), one
# busybox nc per connection (a tcp: chardev would carry only one connection at a time);
# user networking is restricted otherwise, so the guest reaches nothing else.
# LAB_SHARE=DIR: files the guest should find under /lab-results (an API server's kubeconfig...).
if [ -n "${LAB_SHARE:-}" ]; then cp -r "$LAB_SHARE"/. "$results"/; fi
echo "$repo" > "$results/repo"
# The VM dies with whoever started this script (a test file killed by its timeout runs no
# teardown): setpriv's parent-death signal makes timeout die with this shell, and qemu with timeout.
pd=()
if command -v setpriv >/dev/null; then pd=(setpriv --pdeathsig KILL --); fi
# CPU model: Nehalem (SSE4.2, no AVX). With -cpu max, Node processes in the guest crashed now and
# then (SIGSEGV, V8 check failures) under TCG; none were seen with Nehalem. LAB_CPU overrides.
# TCG, not KVM: this host's KVM is PVM, which boots only PVM guest kernels (CONTRIBUTING.md, "The IPVS lab").
"${pd[@]}" timeout "${LAB_TIMEOUT:-1500}" "${pd[@]}" qemu-system-x86_64 \
  -accel tcg -cpu "${LAB_CPU:-Nehalem}" -smp "${LAB_CPUS:-2}" -m "${LAB_MEM:-3072}" \
  -kernel "$VMLINUZ" -initrd "$INITRD" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 kipvs.moddir=$MODDIR kipvs.guest=$here/guest.sh" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$results,mount_tag=results,security_model=none,multidevs=remap" \
  -nic "user,model=virtio-net-pci,restrict=on${LAB_HOST_PORT:+,guestfwd=tcp:10.0.2.100:6443-cmd:busybox nc 127.0.0.1 $LAB_HOST_PORT}" \
  -nographic -no-reboot >"$results/console.txt" 2>&1 || true
if [ ! -f "$results/status" ]; then
  # What the guest got through before it stopped (the TAP so far says which case was running).
  cat "$results/err.txt" >&2 2>/dev/null || true
  cat "$results/out.txt" 2>/dev/null || true
  echo "lab: the VM did not finish within ${LAB_TIMEOUT:-1500} s (LAB_TIMEOUT), or crashed; console:" >&2
  tail -n 40 "$results/console.txt" >&2
  exit 90
fi
cat "$results/err.txt" >&2
cat "$results/out.txt"
exit "$(cat "$results/status")"
}
main "$@"
exit
