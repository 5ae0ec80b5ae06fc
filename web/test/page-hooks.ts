// Module hooks for the example page test: the page imports the package as `/dist/index.js`
// (its URL on the RP backend); in Node that is web/dist/index.js.
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { REPO_ROOT } from './util.js';

type Next = (specifier: string, context: unknown) => Promise<{ url: string }>;

export async function resolve(specifier: string, context: unknown, next: Next) {
  if (specifier === '/dist/index.js') {
    return { url: pathToFileURL(join(REPO_ROOT, 'web', 'dist', 'index.js')).href, shortCircuit: true };
  }
  return next(specifier, context);
}
