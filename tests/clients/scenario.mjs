// The journey every client takes against a running server, written once; apollo.mjs and urql.mjs supply
// the client. Start a run that needs a permission, follow it over a subscription, drop the socket when
// the permission request arrives, answer it while disconnected, resume with afterSeq and follow the run
// to its end. Prints one JSON line that tests/clients/test_clients.py checks (gaps, duplicates, order).

import { readFileSync } from 'node:fs';
import { parse, print } from 'graphql';

const TERMINAL = new Set(['COMPLETED', 'FAILED', 'INTERRUPTED']);
const TIMEOUT_MS = Number(process.env.CLIENT_TIMEOUT_MS ?? 120000);

export function settings() {
  const url = process.env.API_URL;
  const key = process.env.API_KEY;
  if (!url || !key) throw new Error('API_URL and API_KEY must be set');
  return { httpUrl: `${url}/graphql`, wsUrl: `${url.replace(/^http/, 'ws')}/graphql`, key };
}

/** Each operation of operations.graphql as its own document. */
export function operations() {
  const source = readFileSync(new URL('./operations.graphql', import.meta.url), 'utf8');
  const documents = {};
  for (const definition of parse(source).definitions) {
    documents[definition.name.value] = { kind: 'Document', definitions: [definition] };
  }
  return documents;
}

/** fetch that remembers the method, status and whether a persisted-query hash rode along. */
export function recordingFetch(log) {
  return async (input, init = {}) => {
    const response = await fetch(input, init);
    const url = String(input instanceof Request ? input.url : input);
    const body = typeof init.body === 'string' ? init.body : '';
    const operation = /operationName=([A-Za-z]+)/.exec(url)?.[1] ?? /"operationName":"([A-Za-z]+)"/.exec(body)?.[1];
    log.push({
      method: (init.method ?? 'GET').toUpperCase(),
      status: response.status,
      operation: operation ?? null,
      persisted: url.includes('persistedQuery') || body.includes('persistedQuery'),
      withQuery: url.includes('query=') || body.includes('"query"'),
      requestId: response.headers.get('x-request-id'),
    });
    return response;
  };
}

function deadline(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * Follows sessionEvents from afterSeq until `until(event)` is true; resolves with the events seen.
 * client.subscribe(variables, {next, error}) returns an unsubscribe function.
 */
function follow(client, variables, until, what) {
  const events = [];
  const timeout = deadline(TIMEOUT_MS, what);
  const done = new Promise((resolve, reject) => {
    let stop = () => {};
    let finished = false;
    stop = client.subscribe(variables, {
      next(event) {
        if (finished) return;
        events.push(event);
        if (until(event)) {
          finished = true;
          resolve({ events, stop });
        }
      },
      error(error) {
        if (!finished) reject(error instanceof Error ? error : new Error(JSON.stringify(error)));
      },
    });
  });
  return Promise.race([done, timeout.promise]).finally(timeout.cancel);
}

export async function journey(name, client) {
  const started = await client.startRun({ prompt: '[scenario:write-file]' });
  if (started.__typename !== 'StartRunSuccess') throw new Error(`startRun: ${JSON.stringify(started)}`);
  const sessionId = started.session.id;
  const runId = started.run.id;

  const first = await follow(
    client,
    { sessionId, afterSeq: 0 },
    (event) => event.payload.__typename === 'PermissionRequested',
    'the permission request',
  );
  const request = first.events.at(-1).payload.request;
  const lastSeen = first.events.at(-1).seq;

  // The socket drops under the subscription; the decision and the rest of the run happen while the
  // client is away, so only afterSeq can bring them back.
  await client.forceReconnect(first.stop);
  const pending = await client.pending(sessionId);
  const decided = await client.decide({ requestId: request.id, decision: 'ALLOW' });

  const second = await follow(
    client,
    { sessionId, afterSeq: lastSeen },
    (event) =>
      event.payload.__typename === 'RunStatusChanged' &&
      event.payload.runId === runId &&
      TERMINAL.has(event.payload.status),
    'the end of the run',
  );
  second.stop();
  const summary = await client.summary(sessionId);

  const seqs = (events) => events.map((event) => event.seq);
  return {
    client: name,
    sessionId,
    runId,
    beforeDrop: seqs(first.events),
    afterResume: seqs(second.events),
    kinds: [...first.events, ...second.events].map((event) => event.payload.__typename),
    permission: { id: request.id, toolName: request.toolName, status: request.status },
    pendingWhileAway: pending.map((item) => item.id),
    decision: decided,
    finalStatus: second.events.at(-1).payload.status,
    summary,
  };
}

export function emit(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

export function run(main) {
  main().then(
    () => process.exit(0),
    (error) => {
      process.stderr.write(`${error?.stack ?? error}\n`);
      process.exit(1);
    },
  );
}

export { print };
