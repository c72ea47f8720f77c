// The API key of the pages this server serves (GraphiQL and the console), shared by both.
// It stays in this tab (sessionStorage, or memory where storage is refused) unless the user ticks
// "Remember in this browser", which keeps it in localStorage until "Forget key".
(function () {
  "use strict";
  var NAME = "claude-agent-api.key";
  var inMemory = null;

  function store(kind) {
    try {
      return kind === "local" ? window.localStorage : window.sessionStorage;
    } catch (e) {
      return null;
    }
  }

  function get() {
    var session = store("session");
    var local = store("local");
    return (session && session.getItem(NAME)) || (local && local.getItem(NAME)) || inMemory;
  }

  function forget() {
    inMemory = null;
    [store("session"), store("local")].forEach(function (s) {
      if (s) s.removeItem(NAME);
    });
  }

  function save(key, remember) {
    forget();
    var target = store(remember ? "local" : "session");
    try {
      if (target) {
        target.setItem(NAME, key);
        return;
      }
    } catch (e) {
      // Storage full or refused: memory only.
    }
    inMemory = key;
  }

  function remembered() {
    var local = store("local");
    return Boolean(local && local.getItem(NAME));
  }

  // Resolves to null when the server accepts the key, else to the reason it does not.
  function check(key) {
    return fetch("/graphql", {
      method: "POST",
      credentials: "omit",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + key },
      body: JSON.stringify({ query: "{ __typename }" }),
    }).then(
      function (response) {
        if (response.ok) return null;
        if (response.status === 401) return "The server refused this key (unknown, revoked or mistyped).";
        return "The server answered HTTP " + response.status + "; try again.";
      },
      function (error) {
        return "The server could not be reached: " + error;
      }
    );
  }

  function el(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      if (name === "text") node.textContent = attributes[name];
      else node.setAttribute(name, attributes[name]);
    });
    (children || []).forEach(function (child) {
      node.appendChild(child);
    });
    return node;
  }

  // Shows the key form in `container`; calls onKey(key) once the server accepted a key.
  function showForm(container, options) {
    container.textContent = "";
    container.hidden = false;
    var input = el("input", {
      id: "api-key",
      name: "api-key",
      type: "password",
      autocomplete: "off",
      spellcheck: "false",
      placeholder: "cak_…",
      required: "required",
    });
    var remember = el("input", { id: "remember-key", type: "checkbox" });
    var error = el("p", { id: "key-error", class: "error", role: "alert" });
    if (options.error) error.textContent = options.error;
    var button = el("button", { id: "use-key", type: "submit", text: "Use this key" });
    var form = el("form", { id: "key-form", class: "key-form" }, [
      el("h1", { text: options.title }),
      el("p", {
        text:
          "Enter an API key of this server (claude-agent-api keys create --tenant NAME). Nothing is sent " +
          "to the server before you do.",
      }),
      el("label", { for: "api-key", text: "API key" }),
      input,
      el("label", { class: "check" }, [
        remember,
        document.createTextNode(" Remember in this browser (otherwise it is forgotten when this tab closes)"),
      ]),
      button,
      error,
    ]);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var key = input.value.trim();
      if (!key) return;
      button.disabled = true;
      error.textContent = "Checking the key…";
      check(key).then(function (problem) {
        button.disabled = false;
        if (problem) {
          error.textContent = problem;
          return;
        }
        error.textContent = "";
        save(key, remember.checked);
        container.hidden = true;
        container.textContent = "";
        options.onKey(key);
      });
    });
    container.appendChild(form);
    input.focus();
  }

  // "cak_abc…": enough to tell keys apart, never the secret.
  function label(key) {
    var parts = String(key).split("_");
    return parts.length >= 3 ? parts[0] + "_" + parts[1] + "_…" : String(key).slice(0, 6) + "…";
  }

  window.AgentKey = { get: get, save: save, forget: forget, check: check, showForm: showForm, label: label, remembered: remembered };
})();
