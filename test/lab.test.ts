// The IPVS lab: boots a Debian kernel under qemu (TCG) and runs every test/lab/cases/*.lab.ts
// inside it as one TAP stream, which tap folds in here as a subtest. Needs root (qemu, apt-get,
// namespaces in the guest). LAB=0 leaves it out; LAB_CASES="file ..." runs only those cases.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';

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
  await t.spawn('bash', ['test/lab/boot.sh', `sh test/lab/run-cases.sh ${process.env.LAB_CASES ?? ''}`], { stdio: ['ignore', 'pipe', 'inherit'] }, 'IPVS lab VM');
}
