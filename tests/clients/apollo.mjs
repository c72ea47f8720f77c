// Apollo Client 4 as a frontend sets it up: HttpLink for queries and mutations (queries as GET with
// automatic persisted queries), GraphQLWsLink (graphql-ws) for subscriptions. See scenario.mjs.

import { createHash } from 'node:crypto';
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { emit, journey, operations, recordingFetch, run, settings } from './scenario.mjs';

run(async () => {
  const { httpUrl, wsUrl, key } = settings();
  const ops = operations();
  const requests = [];
  let connections = 0;

  // retryAttempts 0: a dropped socket errors the subscription, and the journey resumes it itself with
  // afterSeq (graphql-ws's own retry would re-send the old variables).
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    retryAttempts: 0,
    on: { connected: () => { connections += 1; } },
  });
  const http = ApolloLink.from([
    new PersistedQueryLink({
      sha256: (query) => createHash('sha256').update(query).digest('hex'),
      useGETForHashedQueries: true,
    }),
    new HttpLink({ uri: httpUrl, headers: { Authorization: `Bearer ${key}` }, fetch: recordingFetch(requests) }),
  ]);
  const link = ApolloLink.split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
    },
    new GraphQLWsLink(wsClient),
    http,
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });

  const result = await journey('apollo', {
    async startRun(input) {
      const { data } = await client.mutate({ mutation: ops.StartRun, variables: { input }, fetchPolicy: 'no-cache' });
      return data.startRun;
    },
    async decide(input) {
      const { data } = await client.mutate({
        mutation: ops.DecidePermission, variables: { input }, fetchPolicy: 'no-cache',
      });
      return { typename: data.decidePermission.__typename, status: data.decidePermission.request?.status };
    },
    async pending(sessionId) {
      const { data } = await client.query({ query: ops.PendingPermissions, variables: { sessionId }, fetchPolicy: 'network-only' });
      return data.permissionRequests;
    },
    async summary(id) {
      const { data } = await client.query({ query: ops.SessionSummary, variables: { id }, fetchPolicy: 'network-only' });
      return data.session;
    },
    subscribe(variables, sink) {
      const subscription = client
        .subscribe({ query: ops.SessionEvents, variables, fetchPolicy: 'no-cache' })
        .subscribe({
          next: ({ data, error }) => (error ? sink.error(error) : sink.next(data.sessionEvents)),
          error: (error) => sink.error(error),
        });
      return () => subscription.unsubscribe();
    },
    async forceReconnect(stop) {
      // An abrupt close, as a network drop looks to the client (close code 4499).
      wsClient.terminate();
      stop();
    },
  });
  // Asked again: the server has the document by now, so the hash alone goes, as a GET.
  const { data: again } = await client.query({
    query: ops.SessionSummary, variables: { id: result.sessionId }, fetchPolicy: 'network-only',
  });
  await wsClient.dispose();
  emit({ ...result, repeatedSummary: again.session, connections, requests });
});
