// The operator console: plain JavaScript speaking graphql-transport-ws through graphql-ws's browser build.
// Everything (queries and mutations too) goes over one socket, authenticated by the key in connection_init.
// Nothing the server sends is ever parsed as HTML: every value reaches the page through textContent.
(function () {
  "use strict";
  var WS_URL = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
  var EVENTS_SHOWN = 200; // on opening a session: its last 200 events, then everything new

  var SESSION_FIELDS = "id title status totalCostUsd lastSeq updatedAt archived";
  var SESSIONS = "query ConsoleSessions { sessions(first: 100) { edges { node { " + SESSION_FIELDS + " } } } }";
  var SESSION_CHANGES = "subscription ConsoleSessionChanges { sessionChanges { kind session { " + SESSION_FIELDS + " } } }";
  var RUNS =
    "query ConsoleRuns($id: ID!) { session(id: $id) { " + SESSION_FIELDS +
    " runs(first: 50) { edges { node { id status prompt costUsd checkpointId createdAt error } } } } }";
  var PENDING =
    "query ConsolePending($sessionId: ID!) { permissionRequests(sessionId: $sessionId, status: PENDING) " +
    "{ id runId toolName input status } }";
  var DECIDE =
    "mutation ConsoleDecide($input: DecidePermissionInput!) { decidePermission(input: $input) { __typename " +
    "... on DecidePermissionSuccess { request { id status } } ... on Error { code message } } }";
  var INTERRUPT =
    "mutation ConsoleInterrupt($runId: ID!) { interruptRun(runId: $runId) { __typename " +
    "... on InterruptRunSuccess { outcome run { id status } } ... on Error { code message } } }";
  var REWIND_PREVIEW =
    "mutation ConsoleRewindPreview($input: RewindFilesInput!) { rewindFiles(input: $input) { __typename " +
    "... on RewindFilesSuccess { filesChanged insertions deletions applied } ... on Error { code message } } }";
  var EVENTS =
    "subscription ConsoleEvents($sessionId: ID!, $afterSeq: Int!) { sessionEvents(sessionId: $sessionId, afterSeq: $afterSeq) {" +
    " seq ephemeral runId createdAt payload { __typename" +
    " ... on AssistantMessage { content { __typename ... on TextBlock { text } ... on ToolUseBlock { name input } } }" +
    " ... on UserMessage { text content { __typename ... on ToolResultBlock { content isError } } }" +
    " ... on SystemMessage { subtype }" +
    " ... on ResultMessage { subtype result totalCostUsd isError }" +
    " ... on RunStatusChanged { status error }" +
    " ... on PermissionRequested { request { id toolName status } }" +
    " ... on PermissionDecided { request { id toolName status } }" +
    " ... on FilesRewound { filesChanged conversation }" +
    " ... on HookFired { hookEvent toolName } } } }";

  var client = null;
  var sessions = new Map();
  var selected = null; // { id, stopEvents, lastSeq }
  var stopChanges = null;

  // ---- small helpers -------------------------------------------------------------------------------
  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      var value = attributes[name];
      if (value === undefined || value === null) return;
      if (name === "text") node.textContent = value;
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value);
    });
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function usd(value) {
    return value === null || value === undefined ? "–" : "$" + Number(value).toFixed(4);
  }

  function short(value, length) {
    var text = typeof value === "string" ? value : JSON.stringify(value);
    if (text === undefined || text === null) return "";
    return text.length > length ? text.slice(0, length) + "…" : text;
  }

  function describe(error) {
    if (!error) return "unknown error";
    if (Array.isArray(error)) return error.map(describe).join("; ");
    if (error.message) return error.message;
    if (error.code) return "socket closed " + error.code + (error.reason ? ": " + error.reason : "");
    return String(error);
  }

  function setConnection(text) {
    document.getElementById("connection").textContent = text;
  }

  // One query or mutation over the socket; resolves to its data, rejects with its errors.
  function request(query, variables) {
    return new Promise(function (resolve, reject) {
      var result = null;
      client.subscribe(
        { query: query, variables: variables || {} },
        {
          next: function (value) {
            result = value;
          },
          error: function (error) {
            reject(new Error(describe(error)));
          },
          complete: function () {
            if (result && result.errors && result.errors.length) reject(new Error(describe(result.errors)));
            else resolve(result ? result.data : null);
          },
        }
      );
    });
  }

  // ---- sessions ------------------------------------------------------------------------------------
  function upsertSession(session) {
    var known = sessions.get(session.id);
    if (known && known.updatedAt > session.updatedAt) return;
    sessions.set(session.id, session);
  }

  function renderSessions() {
    var list = document.getElementById("sessions");
    list.textContent = "";
    var ordered = Array.from(sessions.values()).sort(function (a, b) {
      return a.updatedAt < b.updatedAt ? 1 : a.updatedAt > b.updatedAt ? -1 : 0;
    });
    if (!ordered.length) list.appendChild(el("p", { class: "empty", text: "No sessions yet." }));
    ordered.forEach(function (session) {
      list.appendChild(
        el(
          "button",
          {
            type: "button",
            class: "session-item" + (selected && selected.id === session.id ? " selected" : ""),
            "data-session-id": session.id,
            onclick: function () {
              select(session.id);
            },
          },
          [
            el("span", { class: "title", text: session.title || "(untitled)" }),
            el("span", { class: "meta" }, [
              el("span", { class: "status " + session.status, text: session.status }),
              " " + usd(session.totalCostUsd) + " · " + session.id.slice(0, 8),
            ]),
          ]
        )
      );
    });
  }

  function watchSessions() {
    stopChanges = client.subscribe(
      { query: SESSION_CHANGES },
      {
        next: function (result) {
          if (!result.data) return;
          var change = result.data.sessionChanges;
          if (change.kind === "DELETED") sessions.delete(change.session.id);
          else upsertSession(change.session);
          renderSessions();
          if (selected && selected.id === change.session.id) {
            if (change.kind === "DELETED") clearDetail("The session was deleted.");
            else loadRuns();
          }
        },
        error: function (error) {
          setConnection("session feed: " + describe(error));
        },
        complete: function () {},
      }
    );
    // Subscribed first, then listed: a change between the two is not lost (the newer copy wins).
    return request(SESSIONS).then(function (data) {
      data.sessions.edges.forEach(function (edge) {
        upsertSession(edge.node);
      });
      renderSessions();
    });
  }

  // ---- one session -------------------------------------------------------------------------------
  function clearDetail(message) {
    if (selected && selected.stopEvents) selected.stopEvents();
    selected = null;
    var detail = document.getElementById("detail");
    detail.textContent = "";
    detail.appendChild(el("p", { class: "empty", text: message }));
    renderSessions();
  }

  function select(sessionId) {
    if (selected && selected.stopEvents) selected.stopEvents();
    var session = sessions.get(sessionId);
    selected = { id: sessionId, stopEvents: null, lastSeq: 0 };
    renderSessions();
    var detail = document.getElementById("detail");
    detail.textContent = "";
    detail.appendChild(el("h2", { text: "Session" }));
    detail.appendChild(el("div", { id: "session-header" }));
    detail.appendChild(el("h2", { text: "Pending permission requests" }));
    detail.appendChild(el("div", { id: "permissions" }, [el("p", { class: "empty", text: "Loading…" })]));
    detail.appendChild(el("h2", { text: "Runs" }));
    detail.appendChild(el("div", { id: "runs" }));
    detail.appendChild(el("div", { id: "rewind-preview", class: "rewind", hidden: "hidden" }));
    detail.appendChild(el("h2", { text: "Events" }));
    detail.appendChild(el("div", { id: "events", class: "events" }));
    var afterSeq = Math.max(0, ((session && session.lastSeq) || 0) - EVENTS_SHOWN);
    if (afterSeq > 0) {
      document.getElementById("events").appendChild(el("p", { class: "empty", text: "Events up to #" + afterSeq + " are not shown." }));
    }
    watchEvents(sessionId, afterSeq);
    loadRuns();
    loadPermissions();
  }

  function renderHeader(session) {
    var header = document.getElementById("session-header");
    if (!header) return;
    header.textContent = "";
    header.appendChild(
      el("table", {}, [
        el("tr", {}, [el("th", { text: "Title" }), el("td", { text: session.title || "(untitled)" })]),
        el("tr", {}, [el("th", { text: "Id" }), el("td", { class: "mono", text: session.id })]),
        el("tr", {}, [el("th", { text: "Status" }), el("td", {}, [el("span", { id: "session-status", class: "status " + session.status, text: session.status })])]),
        el("tr", {}, [el("th", { text: "Total cost" }), el("td", { id: "session-cost", text: usd(session.totalCostUsd) })]),
      ])
    );
  }

  function loadRuns() {
    if (!selected) return;
    var sessionId = selected.id;
    request(RUNS, { id: sessionId }).then(
      function (data) {
        if (!selected || selected.id !== sessionId || !data.session) return;
        upsertSession(data.session);
        renderSessions();
        renderHeader(data.session);
        renderRuns(
          sessionId,
          data.session.runs.edges.map(function (edge) {
            return edge.node;
          })
        );
      },
      function (error) {
        showProblem("runs", "Could not load the runs: " + describe(error));
      }
    );
  }

  function renderRuns(sessionId, runs) {
    var box = document.getElementById("runs");
    if (!box) return;
    box.textContent = "";
    if (!runs.length) {
      box.appendChild(el("p", { class: "empty", text: "No runs." }));
      return;
    }
    var rows = runs.map(function (run) {
      var actions = el("td", {});
      if (run.status === "RUNNING" || run.status === "QUEUED") {
        actions.appendChild(el("button", { type: "button", class: "interrupt", "data-run-id": run.id, text: "Interrupt", onclick: function (event) { interrupt(run.id, event.target); } }));
      }
      if (run.checkpointId) {
        actions.appendChild(
          el("button", { type: "button", class: "rewind-preview", "data-run-id": run.id, text: "Preview rewind", onclick: function () { previewRewind(sessionId, run); } })
        );
      }
      return el("tr", { "data-run-id": run.id }, [
        el("td", { class: "mono", text: run.id.slice(0, 8) }),
        el("td", {}, [el("span", { class: "status run-status " + run.status, text: run.status })]),
        el("td", { text: short(run.prompt, 80) + (run.error ? " — " + run.error : "") }),
        el("td", { class: "run-cost", text: usd(run.costUsd) }),
        actions,
      ]);
    });
    box.appendChild(
      el("table", { id: "runs-table" }, [
        el("tr", {}, [el("th", { text: "Run" }), el("th", { text: "Status" }), el("th", { text: "Prompt" }), el("th", { text: "Cost (USD)" }), el("th", { text: "" })]),
      ].concat(rows))
    );
  }

  function showProblem(boxId, message) {
    var box = document.getElementById(boxId);
    if (box) box.appendChild(el("p", { class: "error", text: message }));
  }

  function interrupt(runId, button) {
    button.disabled = true;
    request(INTERRUPT, { runId: runId }).then(
      function (data) {
        var result = data.interruptRun;
        if (result.__typename !== "InterruptRunSuccess") showProblem("runs", result.message);
        loadRuns();
      },
      function (error) {
        button.disabled = false;
        showProblem("runs", "Interrupt failed: " + describe(error));
      }
    );
  }

  function previewRewind(sessionId, run) {
    var box = document.getElementById("rewind-preview");
    box.hidden = false;
    box.textContent = "Asking what a rewind to before run " + run.id.slice(0, 8) + " would change…";
    var input = { sessionId: sessionId, checkpointId: run.checkpointId, dryRun: true };
    request(REWIND_PREVIEW, { input: input }).then(
      function (data) {
        var result = data.rewindFiles;
        box.textContent = "";
        if (result.__typename !== "RewindFilesSuccess") {
          box.appendChild(el("p", { class: "error", text: "No rewind: " + result.message }));
          return;
        }
        box.appendChild(
          el("p", {
            text:
              "Rewinding to before run " + run.id.slice(0, 8) + " (\u201c" + short(run.prompt, 60) + "\u201d) would change " +
              result.filesChanged.length + " file(s), +" + result.insertions + " −" + result.deletions + " lines. Nothing was changed (preview).",
          })
        );
        var list = el("ul", { id: "rewind-files" });
        result.filesChanged.forEach(function (name) {
          list.appendChild(el("li", { class: "mono", text: name }));
        });
        box.appendChild(list);
      },
      function (error) {
        box.textContent = "Rewind preview failed: " + describe(error);
      }
    );
  }

  function loadPermissions() {
    if (!selected) return;
    var sessionId = selected.id;
    request(PENDING, { sessionId: sessionId }).then(
      function (data) {
        if (!selected || selected.id !== sessionId) return;
        renderPermissions(data.permissionRequests);
      },
      function (error) {
        showProblem("permissions", "Could not load the permission requests: " + describe(error));
      }
    );
  }

  function renderPermissions(requests) {
    var box = document.getElementById("permissions");
    if (!box) return;
    box.textContent = "";
    if (!requests.length) box.appendChild(el("p", { class: "empty", text: "None." }));
    requests.forEach(function (pending) {
      var approve = el("button", { type: "button", class: "approve", "data-request-id": pending.id, text: "Approve" });
      var deny = el("button", { type: "button", class: "deny", "data-request-id": pending.id, text: "Deny" });
      var note = el("span", { class: "error" });
      function decide(decision) {
        approve.disabled = true;
        deny.disabled = true;
        var input = { requestId: pending.id, decision: decision };
        if (decision === "DENY") input.message = "Denied by an operator in the console.";
        request(DECIDE, { input: input }).then(
          function (data) {
            var result = data.decidePermission;
            if (result.__typename !== "DecidePermissionSuccess") note.textContent = result.message;
            loadPermissions();
          },
          function (error) {
            approve.disabled = false;
            deny.disabled = false;
            note.textContent = describe(error);
          }
        );
      }
      approve.addEventListener("click", function () { decide("ALLOW"); });
      deny.addEventListener("click", function () { decide("DENY"); });
      box.appendChild(
        el("div", { class: "permission", "data-request-id": pending.id }, [
          el("strong", { text: pending.toolName }),
          " wants to run (run " + (pending.runId || "–").slice(0, 8) + ")",
          el("pre", { text: JSON.stringify(pending.input, null, 2) }),
          el("div", { class: "actions" }, [approve, deny, note]),
        ])
      );
    });
  }

  // ---- events ----------------------------------------------------------------------------------------
  function summary(payload) {
    switch (payload.__typename) {
      case "AssistantMessage":
        return payload.content
          .map(function (block) {
            if (block.__typename === "TextBlock") return block.text;
            if (block.__typename === "ToolUseBlock") return "→ " + block.name + " " + short(block.input, 200);
            return "(" + block.__typename + ")";
          })
          .join("\n");
      case "UserMessage":
        if (payload.text) return payload.text;
        return payload.content
          .map(function (block) {
            return block.__typename === "ToolResultBlock" ? (block.isError ? "tool error: " : "tool result: ") + short(block.content, 200) : "(" + block.__typename + ")";
          })
          .join("\n");
      case "SystemMessage":
        return payload.subtype;
      case "ResultMessage":
        return payload.subtype + (payload.isError ? " (error)" : "") + " · " + usd(payload.totalCostUsd) + (payload.result ? "\n" + payload.result : "");
      case "RunStatusChanged":
        return payload.status + (payload.error ? ": " + payload.error : "");
      case "PermissionRequested":
      case "PermissionDecided":
        return payload.request.toolName + " · " + payload.request.status;
      case "FilesRewound":
        return payload.filesChanged.join(", ") + (payload.conversation ? " (and the conversation)" : "");
      case "HookFired":
        return payload.hookEvent + (payload.toolName ? " · " + payload.toolName : "");
      default:
        return "";
    }
  }

  function appendEvent(event) {
    var box = document.getElementById("events");
    if (!box) return;
    var stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.appendChild(
      el("div", { class: "event", "data-seq": event.seq, "data-kind": event.payload.__typename }, [
        el("span", { class: "seq mono", text: event.ephemeral ? "·" : "#" + event.seq }),
        el("span", { class: "kind", text: event.payload.__typename }),
        el("span", { class: "text", text: summary(event.payload) }),
      ])
    );
    if (stick) box.scrollTop = box.scrollHeight;
  }

  function watchEvents(sessionId, afterSeq) {
    var watching = selected;
    watching.lastSeq = afterSeq;
    watching.stopEvents = client.subscribe(
      { query: EVENTS, variables: { sessionId: sessionId, afterSeq: afterSeq } },
      {
        next: function (result) {
          if (selected !== watching) return;
          if (!result.data) {
            showProblem("events", describe(result.errors));
            return;
          }
          var event = result.data.sessionEvents;
          // After a reconnect graphql-ws subscribes again from the first afterSeq: skip what was shown.
          if (!event.ephemeral && event.seq <= watching.lastSeq) return;
          if (!event.ephemeral) watching.lastSeq = event.seq;
          appendEvent(event);
          var kind = event.payload.__typename;
          if (kind === "PermissionRequested" || kind === "PermissionDecided") loadPermissions();
          if (kind === "RunStatusChanged" || kind === "ResultMessage" || kind === "FilesRewound") loadRuns();
        },
        error: function (error) {
          showProblem("events", "The event stream stopped: " + describe(error));
        },
        complete: function () {},
      }
    );
  }

  // ---- start and stop --------------------------------------------------------------------------------
  function start(key) {
    document.getElementById("key-label").textContent =
      "key " + AgentKey.label(key) + (AgentKey.remembered() ? " (remembered in this browser)" : " (this tab only)");
    document.getElementById("bar").hidden = false;
    document.getElementById("console").hidden = false;
    var connectedBefore = false;
    client = graphqlWs.createClient({
      url: WS_URL,
      retryAttempts: 1000,
      shouldRetry: function (closed) {
        return !(closed && closed.code === 4403);
      },
      connectionParams: function () {
        return { Authorization: "Bearer " + key };
      },
      on: {
        connected: function () {
          setConnection("connected");
          // After a reconnect the subscriptions resume by themselves; the lists are read again for
          // what changed while the socket was down.
          if (connectedBefore) {
            request(SESSIONS).then(function (data) {
              data.sessions.edges.forEach(function (edge) {
                upsertSession(edge.node);
              });
              renderSessions();
            });
            loadRuns();
            loadPermissions();
          }
          connectedBefore = true;
        },
        closed: function (event) {
          if (event && event.code === 4403) {
            stop("The server refused the key on the socket (revoked?). Enter another.");
            return;
          }
          setConnection("disconnected" + (event && event.code ? " (" + event.code + ")" : "") + "; reconnecting…");
        },
      },
    });
    watchSessions().catch(function (error) {
      setConnection("could not list the sessions: " + describe(error));
    });
  }

  function stop(error) {
    AgentKey.forget();
    if (selected && selected.stopEvents) selected.stopEvents();
    if (stopChanges) stopChanges();
    if (client) client.dispose();
    client = null;
    selected = null;
    stopChanges = null;
    sessions = new Map();
    document.getElementById("detail").textContent = "";
    document.getElementById("bar").hidden = true;
    document.getElementById("console").hidden = true;
    AgentKey.showForm(document.getElementById("key"), { title: "Operator console", onKey: start, error: error });
  }

  document.getElementById("forget-key").addEventListener("click", function () {
    stop();
  });

  var key = AgentKey.get();
  if (!key) stop();
  else
    AgentKey.check(key).then(function (problem) {
      if (!problem) return start(key);
      stop(problem);
    });
})();
