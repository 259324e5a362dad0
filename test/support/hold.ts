// Holds the next full sync of a daemon under test in its first IPVS service dump (as one of 10 000
// Services would keep it busy), until the test releases it.
import type { FakeIpvs } from '../../src/dataplane/ipvs/fake.ts';

export function holdNextServiceDump(ipvs: FakeIpvs): {
  /** Whether a dump is being held (the sync reached it). */
  held: () => boolean;
  release: () => void;
  /** The kernel's services, read around the hold. */
  services: FakeIpvs['services'];
} {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const services = ipvs.services.bind(ipvs);
  let held = false;
  ipvs.services = async () => {
    if (!held) {
      held = true;
      await gate;
    }
    return services();
  };
  return { held: () => held, release, services };
}
