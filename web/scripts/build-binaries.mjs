// pretest: builds the Rust binaries the end-to-end test runs (localcert: issuer and RP backend;
// localcert-device: the device engine's stdio bridge). With LOCALCERT_BIN_DIR set, the binaries
// there are used as they are. A failed build fails `npm test`.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

if (process.env.LOCALCERT_BIN_DIR) {
  console.log(`using the binaries in ${process.env.LOCALCERT_BIN_DIR}`);
} else {
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  console.log('cargo build -p localcert -p localcert-device (for the end-to-end test)');
  const r = spawnSync('cargo', ['build', '-q', '-p', 'localcert', '-p', 'localcert-device'], { cwd: root, stdio: 'inherit' });
  if (r.error) {
    console.error(`cannot run cargo: ${r.error.message}`);
    process.exit(1);
  }
  process.exit(r.status ?? 1);
}
