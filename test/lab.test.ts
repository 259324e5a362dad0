// The IPVS lab: boots a Debian kernel under qemu (TCG) and runs every test/lab/cases/*.lab.ts
// inside it as one TAP stream, which tap folds in here as a subtest. Needs root (qemu, apt-get,
// namespaces in the guest). LAB=0 leaves it out; LAB_CASES="file ..." runs only those cases.
// When the upstream binaries build (test/k8s/), a real kube-apiserver runs on the host for the
// guest's Kubernetes case, reached through qemu's guestfwd only.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { ApiServer, buildBinaries } from './support/apiserver.ts';

async function whyNot(): Promise<string | null> {
  if (process.env.LAB === '0') return 'LAB=0 set';
  if (process.getuid?.() !== 0) return 'not root: the lab installs qemu from Debian packages and boots a VM';
  try {
    // Packages, kernel and initramfs; all idempotent and cached under test/lab/.cache/.
    await promisify(execFile)('bash', ['test/lab/prepare.sh'], { maxBuffer: 16 << 20 });
    return null;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    return `could not prepare qemu and the kernel: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' | ')}`;
  }
}

const why = await whyNot();
if (why) {
  t.plan(0, `IPVS lab skipped: ${why}`);
} else {
  t.setTimeout(30 * 60_000);
  const env: Record<string, string> = { ...(process.env as Record<string, string>) };
  const built = process.env.K8S === '0' ? { why: 'K8S=0 set' } : await buildBinaries();
  let api: ApiServer | null = null;
  if ('bin' in built) {
    api = new ApiServer(built.bin);
    await api.start();
    const share = mkdtempSync(join(tmpdir(), 'kipvs-lab-share-'));
    const kc = readFileSync(api.kubeconfig(), 'utf8').replace(api.url, 'https://10.0.2.100:6443');
    writeFileSync(join(share, 'kubeconfig'), kc);
    env.LAB_SHARE = share;
    env.LAB_HOST_PORT = String(api.apiPort);
  } else {
    t.comment(`no API server for the lab's Kubernetes case: ${built.why}`);
  }
  t.teardown(() => api?.stop());
  await t.spawn('bash', ['test/lab/boot.sh', `sh test/lab/run-cases.sh ${process.env.LAB_CASES ?? ''}`], { stdio: ['ignore', 'pipe', 'inherit'], env }, 'IPVS lab VM');
}
