// The IPVS lab: boots a Debian kernel under qemu (TCG) and runs every test/lab/cases/*.lab.ts
// inside it as one TAP stream, which tap folds in here as a subtest. Needs root and what the test
// set-up prepared (test/setup.ts: qemu, the kernel, the initramfs); skipped with the set-up's
// reason otherwise. LAB=0 leaves it out; LAB_CASES="file ..." runs only those cases.
// When the upstream binaries were built (test/k8s/), a real kube-apiserver runs on the host for
// the guest's Kubernetes case, reached through qemu's guestfwd only.
// One VM, its cases one after the other: the heavy ones keep both of a 2-core host's cores busy (its -smp 2 under
// multi-threaded TCG). Tried: two VMs at once, the API server's cases in one and the rest in the other; the image
// case took 262 s instead of 102 s and a migration case's kube-ipvs did not sync beside kube-proxy within 240 s.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ApiServer, k8sBinaries } from './support/apiserver.ts';
import { owned } from './support/owned.ts';
import { imageBuilt, labPrepared } from './support/setup-state.ts';

/**
 * The VM's own limit (boot.sh's LAB_TIMEOUT) for every case (the three migration cases take ~7 min each under TCG);
 * this file's is a little longer so the VM's report comes first.
 */
const VM_SECONDS = Number(process.env.LAB_TIMEOUT ?? 3000);

const prepared = labPrepared();
if ('why' in prepared) {
  t.plan(0, `IPVS lab skipped: ${prepared.why}`);
} else {
  t.setTimeout((VM_SECONDS + 120) * 1000);
  const env: Record<string, string> = { ...(process.env as Record<string, string>), LAB_TIMEOUT: String(VM_SECONDS) };
  const built = k8sBinaries();
  let api: ApiServer | null = null;
  const share = mkdtempSync(join(tmpdir(), 'kipvs-lab-share-'));
  t.teardown(() => rmSync(share, { recursive: true, force: true }));
  env.LAB_SHARE = share;
  // The image case runs kube-ipvs from the container image's root (built by the set-up when root).
  const image = imageBuilt();
  if ('env' in image)
    writeFileSync(
      join(share, 'image.env'),
      Object.entries(image.env)
        .map(([k, v]) => `${k}=${v}`)
        .join('\n') + '\n',
    );
  else writeFileSync(join(share, 'image.why'), image.why);
  if ('bin' in built) {
    api = new ApiServer(built.bin);
    await api.start();
    const kc = readFileSync(api.kubeconfig(), 'utf8').replace(api.url, 'https://10.0.2.100:6443');
    writeFileSync(join(share, 'kubeconfig'), kc);
    // The migration cases run the kube-proxy built beside it (the guest sees the host's root read-only).
    writeFileSync(join(share, 'k8s-bin'), built.bin);
    env.LAB_HOST_PORT = String(api.apiPort);
  } else {
    t.comment(`no API server for the lab's Kubernetes case: ${built.why}`);
  }
  t.teardown(() => api?.stop());
  // boot.sh (and the qemu under it) die with this process, however it ends.
  const [cmd, args] = owned('bash', ['test/lab/boot.sh', `sh test/lab/run-cases.sh ${process.env.LAB_CASES ?? ''}`]);
  await t.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], env }, 'IPVS lab VM');
}
