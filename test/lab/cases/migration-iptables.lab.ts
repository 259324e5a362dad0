// A node moves from kube-proxy's iptables mode to kube-ipvs and back without dropping traffic (support/migration.ts).
import { migrationCase } from '../support/migration.ts';

migrationCase('iptables', 30101);
