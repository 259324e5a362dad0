#!/usr/bin/env bash
# Prepares the IPVS lab on the host: Debian packages, the Debian kernel (downloaded and unpacked,
# never installed) and a busybox initramfs. Idempotent; everything goes under test/lab/.cache/.
# Prints the paths it made as KEY=VALUE lines on stdout; progress goes to stderr.
# Run by the test set-up (test/setup.ts). --check: install and download nothing; exit 0 (and print
# the paths) only when everything is in place and the initramfs is up to date, else 4.
set -euo pipefail
# The test set-up runs this script and others in parallel; apt refuses a second apt-get while one holds its lock,
# so every apt-get of ours that takes it waits its turn on one lock of ours.
apt_locked() { mkdir -p /run/lock && flock -w 900 /run/lock/kube-ipvs-apt.lock apt-get "$@"; }
here=$(cd "$(dirname "$0")" && pwd)
# LAB_CACHE_DIR moves the cache (.ci/run FRESH=1 points it at an empty folder).
cache="${LAB_CACHE_DIR:-$here/.cache}"
log() { echo "lab: $*" >&2; }
check=0
if [ "${1:-}" = "--check" ]; then check=1; fi
not_ready() { log "not prepared: $*"; exit 4; }
[ "$check" = 1 ] || mkdir -p "$cache"

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx switch_root || need_pkgs+=(busybox-static)
command -v ipvsadm >/dev/null || need_pkgs+=(ipvsadm)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v ipset >/dev/null || need_pkgs+=(ipset)
command -v conntrack >/dev/null || need_pkgs+=(conntrack)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v modprobe >/dev/null || need_pkgs+=(kmod)
command -v capsh >/dev/null || need_pkgs+=(libcap2-bin)  # the image case: the chart's capabilities only
command -v nft >/dev/null || need_pkgs+=(nftables)  # kube-proxy's nftables mode (the migration case)
if [ ${#need_pkgs[@]} -gt 0 ] && [ "$check" = 1 ]; then not_ready "missing ${need_pkgs[*]}"; fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_locked update -qq >&2
  apt_locked install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi

# The kernel: the version linux-image-amd64 points at, unpacked into the cache.
if [ ! -f "$cache/kernel.ready" ] && [ "$check" = 1 ]; then not_ready "no kernel in $cache"; fi
if [ ! -f "$cache/kernel.ready" ]; then
  cd "$cache"
  rm -rf kernel debs && mkdir -p kernel debs
  ( cd debs && apt-get download linux-image-amd64 >&2 2>/dev/null ) || { apt_locked update -qq >&2; ( cd debs && apt-get download linux-image-amd64 >&2 ); }
  pkg=$(dpkg-deb -f debs/linux-image-amd64_*.deb Depends | tr ',' '\n' | grep -o 'linux-image-[0-9][^ ]*' | head -n1)
  [ -n "$pkg" ] || { log "cannot tell which kernel linux-image-amd64 depends on"; exit 1; }
  log "downloading $pkg"
  ( cd debs && apt-get download "$pkg" >&2 )
  dpkg-deb -x debs/"$pkg"_*.deb kernel
  rm -rf debs
  # The package's postinst would run depmod; we unpack only, so run it here.
  depmod -b "$cache/kernel" "$(ls kernel/lib/modules | head -n1)"
  touch kernel.ready
fi
kver=$(ls "$cache/kernel/lib/modules" | head -n1)
vmlinuz="$cache/kernel/boot/vmlinuz-$kver"
moddir="$cache/kernel/lib/modules/$kver"

# The initramfs: busybox, the few modules needed to reach the host root over 9p, and init.
initrd="$cache/initrd-$kver.cpio.gz"
if { [ ! -f "$initrd" ] || [ "$here/initramfs-init.sh" -nt "$initrd" ]; } && [ "$check" = 1 ]; then not_ready "initramfs missing or older than initramfs-init.sh"; fi
if [ ! -f "$initrd" ] || [ "$here/initramfs-init.sh" -nt "$initrd" ]; then
  log "building initramfs for $kver"
  root="$cache/initramfs"
  rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,lower,upper,newroot,modules}
  cp /bin/busybox "$root/bin/busybox"
  for m in virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
    f=$(find "$moddir/kernel" -name "$m.ko*" | head -n1)
    [ -n "$f" ] && cp "$f" "$root/modules/"
  done
  cp "$here/initramfs-init.sh" "$root/init"
  chmod +x "$root/init"
  # Decompress modules here so the busybox insmod needs no xz/zstd support.
  for f in "$root"/modules/*.ko.xz; do [ -e "$f" ] && xz -d "$f"; done
  for f in "$root"/modules/*.ko.zst; do [ -e "$f" ] && zstd -q -d --rm "$f"; done
  ( cd "$root" && find . | cpio -o -H newc --quiet | gzip -1 ) > "$initrd"
fi
echo "KVER=$kver"
echo "VMLINUZ=$vmlinuz"
echo "INITRD=$initrd"
echo "MODDIR=$moddir"
