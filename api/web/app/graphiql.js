// GraphiQL, mounted only once a key is known, so its introspection query is the first request that
// needs one. Queries and mutations go over HTTP with the key (plus whatever the Headers tab adds);
// subscriptions over graphql-transport-ws with the key in connection_init.
(function () {
  "use strict";
  var WS_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
  var DEFAULT_QUERY =
    "# The key is sent for you; the Headers tab can add or override headers.\n" +
    "query Sessions {\n  sessions(first: 10) {\n    edges { node { id title status totalCostUsd } }\n  }\n}\n";
  var root = null;
  var wsClient = null;

  function isSubscription(params) {
    try {
      var doc = GraphiQL.GraphQL.parse(params.query);
      var operation = GraphiQL.GraphQL.getOperationAST(doc, params.operationName || undefined);
      return Boolean(operation && operation.operation === "subscription");
    } catch (e) {
      return false;
    }
  }

  function overHttp(key, params, headers) {
    var merged = { "Content-Type": "application/json", Accept: "application/json", Authorization: "Bearer " + key };
    Object.keys(headers || {}).forEach(function (name) {
      merged[name] = headers[name];
    });
    var body = { query: params.query, variables: params.variables, operationName: params.operationName };
    return fetch("/graphql", { method: "POST", credentials: "omit", headers: merged, body: JSON.stringify(body) }).then(
      function (response) {
        return response.text().then(function (text) {
          try {
            return JSON.parse(text);
          } catch (e) {
            return { errors: [{ message: "HTTP " + response.status + ": " + text }] };
          }
        });
      }
    );
  }

  function start(key) {
    document.getElementById("key-label").textContent =
      "key " + AgentKey.label(key) + (AgentKey.remembered() ? " (remembered in this browser)" : " (this tab only)");
    document.getElementById("bar").hidden = false;
    var container = document.getElementById("graphiql");
    container.hidden = false;
    wsClient = graphqlWs.createClient({
      url: WS_URL,
      lazy: true,
      retryAttempts: 3,
      connectionParams: function () {
        return { Authorization: "Bearer " + key };
      },
    });
    var fetcher = function (params, options) {
      if (isSubscription(params)) {
        return wsClient.iterate({ query: params.query, variables: params.variables, operationName: params.operationName });
      }
      return overHttp(key, params, options && options.headers);
    };
    root = ReactDOM.createRoot(container);
    root.render(
      React.createElement(GraphiQL, {
        fetcher: fetcher,
        defaultQuery: DEFAULT_QUERY,
        shouldPersistHeaders: false,
        defaultEditorToolsVisibility: true,
      })
    );
  }

  function askForKey(error) {
    document.getElementById("bar").hidden = true;
    document.getElementById("graphiql").hidden = true;
    AgentKey.showForm(document.getElementById("key"), { title: "GraphiQL", onKey: start, error: error });
  }

  document.getElementById("forget-key").addEventListener("click", function () {
    AgentKey.forget();
    if (root) root.unmount();
    if (wsClient) wsClient.dispose();
    root = null;
    wsClient = null;
    askForKey();
  });

  // A key kept from before is checked first: it may have been revoked since.
  var key = AgentKey.get();
  if (!key) askForKey();
  else
    AgentKey.check(key).then(function (problem) {
      if (!problem) return start(key);
      AgentKey.forget();
      askForKey(problem);
    });
})();
