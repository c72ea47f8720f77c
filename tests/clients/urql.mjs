// urql 6 with its default settings (so queries go as GET, mutations as POST) and graphql-ws for
// subscriptions, as urql's documentation sets it up. See scenario.mjs.

import { Client, cacheExchange, fetchExchange, subscriptionExchange } from '@urql/core';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { emit, journey, operations, recordingFetch, run, settings } from './scenario.mjs';

function unwrap(result, field) {
  if (result.error) throw result.error;
  return result.data[field];
}

run(async () => {
  const { httpUrl, wsUrl, key } = settings();
  const ops = operations();
  const requests = [];
  let connections = 0;

  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    retryAttempts: 0,
    on: { connected: () => { connections += 1; } },
  });
  const client = new Client({
    url: httpUrl,
    fetch: recordingFetch(requests),
    fetchOptions: { headers: { Authorization: `Bearer ${key}` } },
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return { subscribe: (sink) => ({ unsubscribe: wsClient.subscribe(input, sink) }) };
        },
      }),
    ],
  });

  const result = await journey('urql', {
    async startRun(input) {
      return unwrap(await client.mutation(ops.StartRun, { input }).toPromise(), 'startRun');
    },
    async decide(input) {
      const answer = unwrap(await client.mutation(ops.DecidePermission, { input }).toPromise(), 'decidePermission');
      return { typename: answer.__typename, status: answer.request?.status };
    },
    async pending(sessionId) {
      const result = await client.query(ops.PendingPermissions, { sessionId }, { requestPolicy: 'network-only' }).toPromise();
      return unwrap(result, 'permissionRequests');
    },
    async summary(id) {
      return unwrap(await client.query(ops.SessionSummary, { id }).toPromise(), 'session');
    },
    subscribe(variables, sink) {
      const { unsubscribe } = client.subscription(ops.SessionEvents, variables).subscribe((result) => {
        if (result.error) sink.error(result.error);
        else sink.next(result.data.sessionEvents);
      });
      return unsubscribe;
    },
    async forceReconnect(stop) {
      wsClient.terminate();
      stop();
    },
  });
  await wsClient.dispose();
  emit({ ...result, connections, requests });
});
