// A node moves from kube-proxy's nftables mode to kube-ipvs and back without dropping traffic (support/migration.ts).
import { migrationCase } from '../support/migration.ts';

migrationCase('nftables', 30103);
