#!/bin/busybox sh
# PID 1 of the IPVS lab VM: reach the host's root over 9p (read-only), put a tmpfs overlay on it,
# bind the unpacked kernel's modules in, and switch_root into it to run test/lab/guest.sh.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Dependency order matters: virtio_ring before virtio, 9pnet before its transport.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay; do
  [ -f /modules/$m.ko ] && insmod /modules/$m.ko 2>/dev/null
done
arg() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
# cache=loose: the guest keeps what it looked up and read of the host's files instead of asking qemu
# again each time (every Node process here opens hundreds of files; a migration case took 213 s with
# it against 255 s without, run alone). The host's files must not change while a VM runs, which the
# overlay below asks anyway; the results share (read and written by both) stays uncached.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower || { echo "lab: cannot mount host root"; poweroff -f; }
mount -t tmpfs -o size=2g tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || { echo "lab: overlay failed"; poweroff -f; }
kver=$(uname -r)
mkdir -p /newroot/lib/modules/$kver
mount --bind "/newroot$(arg kipvs.moddir)" /newroot/lib/modules/$kver
mkdir -p /newroot/lab-results
mount -t 9p -o trans=virtio,version=9p2000.L,rw results /newroot/lab-results || echo "lab: no results share"
guest=$(arg kipvs.guest)
umount /proc /sys 2>/dev/null
exec switch_root /newroot /bin/sh "$guest"
