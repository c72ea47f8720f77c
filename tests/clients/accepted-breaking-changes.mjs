// A graphql-inspector diff rule: the breaking changes listed in docs/schema/accepted-breaking-changes.txt
// were made on purpose, so they count as dangerous (reported, not failing). Anything else still fails.

import { readFileSync } from 'node:fs';

// ACCEPTED_BREAKING_CHANGES names another list (the tests use it to show the rule works).
const LIST = process.env.ACCEPTED_BREAKING_CHANGES
  ?? new URL('../../docs/schema/accepted-breaking-changes.txt', import.meta.url);

// The CLI prints a change's message with its quotes turned into bold type; compare without them.
const plain = (message) => message.replaceAll("'", '');

function accepted() {
  return new Set(
    readFileSync(LIST, 'utf8')
      .split('\n')
      .map((line) => plain(line.trim()))
      .filter((line) => line && !line.startsWith('#')),
  );
}

export default function acceptListedBreakingChanges({ changes }) {
  const listed = accepted();
  return changes.map((change) =>
    change.criticality.level === 'BREAKING' && listed.has(plain(change.message))
      ? { ...change, criticality: { ...change.criticality, level: 'DANGEROUS', reason: 'accepted on purpose' } }
      : change,
  );
}
