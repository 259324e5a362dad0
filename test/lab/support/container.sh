#!/usr/bin/env bash
# Runs a command from an image's root the way a container runtime runs the Helm chart's pod, inside
# the lab VM (no runtime there): a private mount namespace; the root bind-mounted read-only
# (readOnlyRootFilesystem); /proc with /proc/sys read-only, as runc mounts it; sysfs read-only;
# /dev, tmpfs on /run and /tmp; the chart's hostPath volumes; then chroot and the capability
# bounding set cut down to CAPS (uid 0 keeps only those: as `capabilities: {drop: [ALL], add: CAPS}`).
#
#   container.sh ROOT CAPS [--bind SRC:DST[:ro|:file]]... -- /ABSOLUTE/COMMAND [ARG]...   (capsh runs it by path)
#   CAPS: comma-separated, e.g. cap_net_admin,cap_net_raw,cap_sys_module ("none" for no capability)
# `:file` creates a missing source file (hostPath FileOrCreate: /run/xtables.lock).
# The environment is only PATH and what KIPVS_ENV_* names (KIPVS_ENV_NODE_NAME=x -> NODE_NAME=x).
set -euo pipefail
if [ -z "${KIPVS_IN_MOUNT_NS:-}" ]; then
  KIPVS_IN_MOUNT_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
root=$1 caps=$2
shift 2
binds=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  [ "$1" = --bind ] || { echo "container.sh: expected --bind or --, got $1" >&2; exit 2; }
  binds+=("$2")
  shift 2
done
[ "${1:-}" = -- ] || { echo "container.sh: no command" >&2; exit 2; }
shift
m=$(mktemp -d /run/kipvs-ctr.XXXXXX)
mount --bind "$root" "$m"
mount -t proc proc "$m/proc"
mount --bind "$m/proc/sys" "$m/proc/sys"
mount -o remount,bind,ro "$m/proc/sys"
mount -t sysfs -o ro sysfs "$m/sys"
mount --rbind /dev "$m/dev"
mount -t tmpfs tmpfs "$m/run"
mount -t tmpfs tmpfs "$m/tmp"
for b in "${binds[@]}"; do
  IFS=: read -r src dst mode <<<"$b"
  # hostPath types: FileOrCreate (mode "file"), else the source must be there (Directory, File).
  if [ "${mode:-}" = file ] && [ ! -e "$src" ]; then touch "$src"; fi
  [ -e "$src" ] || { echo "container.sh: $src does not exist" >&2; exit 2; }
  if [ -d "$src" ]; then mkdir -p "$m$dst"; else mkdir -p "$(dirname "$m$dst")"; touch "$m$dst"; fi
  mount --rbind "$src" "$m$dst"
  if [ "${mode:-}" = ro ]; then mount -o remount,bind,ro "$m$dst"; fi
done
mount -o remount,bind,ro "$m"
# Every capability this kernel knows, less the ones kept.
all=$(capsh --print | sed -n 's/^Bounding set =//p')
# (No process substitution: the lab guest has no /dev/fd.)
drop=""
IFS=, read -ra every <<<"$all"
for c in "${every[@]}"; do
  case ",$caps," in *",$c,"*) ;; *) drop+="${drop:+,}$c" ;; esac
done
envs=(PATH=/usr/sbin:/usr/bin:/sbin:/bin)
for k in "${!KIPVS_ENV_@}"; do envs+=("${k#KIPVS_ENV_}=${!k}"); done
exec env -i "${envs[@]}" capsh --chroot="$m" --drop="$drop" --shell="$1" -- "${@:2}"
