#!/bin/sh
# PID 1 inside the lab VM, after switch_root into the overlay of the host's root.
# Mounts what a node has, loads IPVS, runs /lab-results/cmd.sh from the repository and powers off.
# Its output goes to /lab-results/out.txt; the exit status to /lab-results/status.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /var/run/netns
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
# /tmp stays the overlay's (writable, and the repository may live under the host's /tmp).
mount -t tmpfs tmpfs /var/run/netns 2>/dev/null
ip link set lo up
# qemu user networking: the host's loopback is 10.0.2.2 (restrict=on: nothing beyond the host).
modprobe virtio_net 2>/dev/null
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
fi
for m in ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_mh ip_vs_sed ip_vs_nq ip_vs_dh ip_vs_lblc ip_vs_lblcr nf_conntrack dummy veth bridge; do
  modprobe "$m" 2>/dev/null || echo "lab: modprobe $m failed"
done
cd "$(cat /lab-results/repo)"
# Under TCG, Node spends seconds per process stripping types from the same .ts files (WebAssembly
# with --liftoff-only) and compiling them: V8's compile cache, kept for this boot, cuts a kube-ipvs
# command from ~10 s to ~4 s and a client from ~1.6 s to ~0.6 s after the first of each.
export NODE_COMPILE_CACHE=/var/cache/kipvs-node-compile
mkdir -p "$NODE_COMPILE_CACHE"
export PATH="$PWD/node_modules/.bin:$PATH"
sh /lab-results/cmd.sh > /lab-results/out.txt 2>/lab-results/err.txt
echo $? > /lab-results/status
sync
poweroff -f
