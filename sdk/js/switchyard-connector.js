// Write a Switchyard connector in JavaScript. `switchyard plugin build`
// puts this module in front of your app.js (built with componentize-js),
// where `import * as sy from "switchyard-connector";` names it:
//
//   import * as sy from "switchyard-connector";
//
//   class Hello extends sy.Connector {
//     static info = { name: "hello", version: "0.1.0", description: "Says hello" };
//     static actions = { greet: "{name} -> {message}" };
//     greet(input) { return { message: `Hello, ${input.name}!` }; }
//   }
//
//   export const connector = sy.exportConnector(Hello);
//
// Errors: throw sy.Retryable, sy.Permanent, sy.RateLimited(msg, retryAfterMs)
// or sy.InvalidInput; anything else is permanent, with its message.
// Outbound HTTP is the global `fetch` (over wasi:http: the host's egress
// path); `sy.bearer(secretName)` gives an Authorization value whose
// placeholder the host swaps for the secret on the way out, and
// `sy.bearerOAuth(grant)` one the host swaps for an OAuth access token.
// A line ending in `// requires: X` is dropped by the build when the
// connector's manifest does not request X, so the component imports only
// what the manifest asks for.

import * as logImport from "switchyard:connector/log@0.1.1";
import * as configImport from "switchyard:connector/config@0.1.1";
import * as secretsImport from "switchyard:connector/secrets@0.1.1"; // requires: secrets
import * as stateImport from "switchyard:connector/state@0.1.1"; // requires: state
import * as rateLimitImport from "switchyard:connector/rate-limit@0.1.1"; // requires: rate_limits

const sy = (() => {
  const imported = {
    secrets: typeof secretsImport === "undefined" ? null : secretsImport,
    state: typeof stateImport === "undefined" ? null : stateImport,
    rateLimit: typeof rateLimitImport === "undefined" ? null : rateLimitImport,
  };

  class ConnectorError extends Error {
    constructor(tag, message, val) {
      super(message);
      this.payload = { tag, val: val ?? message };
    }
  }
  class Retryable extends ConnectorError {
    constructor(message) { super("retryable", message); }
  }
  class Permanent extends ConnectorError {
    constructor(message) { super("permanent", message); }
  }
  class InvalidInput extends ConnectorError {
    constructor(message) { super("invalid-input", message); }
  }
  class RateLimited extends ConnectorError {
    constructor(message, retryAfterMs) {
      super("rate-limited", message, {
        message,
        retryAfterMs: retryAfterMs == null ? undefined : BigInt(retryAfterMs),
      });
    }
  }

  function notInManifest(what, line) {
    return new Permanent(
      `${what} is not in this connector's manifest, so the build left it out: add \`${line}\` to <name>.manifest.toml and build again`,
    );
  }

  // A host error variant as the SDK's error.
  function fromHost(error, transientTag) {
    const payload = error && error.payload;
    if (payload && payload.tag === "exhausted") {
      return new RateLimited("rate limit exhausted", Number(payload.val));
    }
    if (payload && payload.tag === transientTag) return new Retryable(String(payload.val));
    return new Permanent(String(payload ? payload.val : error));
  }

  function hostCall(module, what, line, transientTag, call) {
    if (!module) throw notInManifest(what, line);
    try {
      return call(module);
    } catch (error) {
      throw fromHost(error, transientTag);
    }
  }

  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const bytes = (v) => (v == null ? undefined : typeof v === "string" ? enc.encode(v) : v);

  const log = Object.fromEntries(
    ["trace", "debug", "info", "warn", "error"].map((level) => [
      level,
      (message, fields = {}) =>
        logImport.log(level, String(message), Object.entries(fields).map(([k, v]) => [k, String(v)])),
    ]),
  );

  const config = {
    get: (key, fallback) => configImport.get(key) ?? fallback,
    require(key, example) {
      const value = configImport.get(key);
      if (value == null) throw new Permanent(`setting \`${key}\` is required${example ? `, e.g. ${example}` : ""}`);
      return value;
    },
    all: () => Object.fromEntries(configImport.getAll()),
  };

  const secrets = {
    placeholder: (name) =>
      hostCall(imported.secrets, "secrets", 'secrets = ["NAME"]', null, (s) => s.placeholder(name)),
    signHmacSha256: (name, message) =>
      hostCall(imported.secrets, "secrets", 'secrets = ["NAME"]', null, (s) => s.signHmacSha256(name, bytes(message))),
    verifyHmacSha256: (name, message, hex) =>
      hostCall(imported.secrets, "secrets", 'secrets = ["NAME"]', null, (s) => s.verifyHmacSha256(name, bytes(message), hex)),
  };

  const state = {
    get(key) {
      const v = hostCall(imported.state, "state", "state = true", "unavailable", (s) => s.get(key));
      return v == null ? null : v;
    },
    getText(key) {
      const v = state.get(key);
      return v == null ? null : dec.decode(v);
    },
    set: (key, value) =>
      hostCall(imported.state, "state", "state = true", "unavailable", (s) => s.set(key, bytes(value))),
    delete: (key) => hostCall(imported.state, "state", "state = true", "unavailable", (s) => s.delete(key)),
    compareAndSwap: (key, expected, next) =>
      hostCall(imported.state, "state", "state = true", "unavailable", (s) =>
        s.compareAndSwap(key, bytes(expected), bytes(next)),
      ),
    keys: (prefix = "", limit = 100) =>
      hostCall(imported.state, "state", "state = true", "unavailable", (s) => s.keys(prefix, limit)),
  };

  const rateLimit = {
    acquire: (bucket) =>
      hostCall(imported.rateLimit, "rate limits", 'rate_limits = ["NAME"]', null, (r) => r.acquire(bucket)),
  };

  const bearer = (secretName) => `Bearer ${secrets.placeholder(secretName)}`;
  // The host puts a current access token of OAuth grant `grant` in on the
  // way out (list it under `oauth` in the manifest); it never enters here.
  const bearerOAuth = (grant) => `Bearer {{oauth:${grant}}}`;

  // An HTTP status as the error kind the host acts on.
  function raiseForStatus(response) {
    if (response.status === 429) {
      const raw = response.headers.get("retry-after");
      const after = raw == null || raw.trim() === "" ? NaN : Number(raw);
      const bucket = response.headers.get("x-switchyard-rate-limited");
      const who = bucket ? `the host's rate limit \`${bucket}\`` : "the upstream";
      throw new RateLimited(`throttled by ${who} (429)`, Number.isFinite(after) && after >= 0 ? after * 1000 : undefined);
    }
    if (response.status >= 500) throw new Retryable(`upstream answered status ${response.status}`);
    if (response.status >= 400) throw new Permanent(`upstream answered status ${response.status}`);
    return response;
  }

  class Connector {}

  const json = (value) => enc.encode(JSON.stringify(value));

  function message(id, stream, payload, { key, headers, timestampMs } = {}) {
    if (!(payload instanceof Uint8Array)) {
      payload = json(payload);
      headers = headers && headers.length ? headers : [["content-type", "application/json"]];
    }
    return { id, stream, key, headers: headers ?? [], payload, timestampMs: BigInt(timestampMs ?? 0) };
  }

  function toHostError(error) {
    if (error instanceof ConnectorError) return error;
    const e = new Error(String(error));
    e.payload = { tag: "permanent", val: `unhandled ${error && error.name ? error.name : "error"}: ${error && error.message ? error.message : error}` };
    return e;
  }

  async function guard(call) {
    try {
      return await call();
    } catch (error) {
      throw toHostError(error);
    }
  }

  function exportConnector(Impl) {
    const instance = new Impl();
    const info = Impl.info ?? {};
    const actions = Impl.actions ?? {};
    const overrides = (m) => typeof instance[m] === "function";
    return {
      describe() {
        const roles = [];
        if (Object.keys(actions).length) roles.push("action");
        for (const [m, role] of [["handleWebhook", "webhook"], ["transform", "transform"], ["read", "source"], ["write", "sink"]]) {
          if (overrides(m)) roles.push(role);
        }
        return {
          name: info.name ?? "connector",
          version: info.version ?? "0.1.0",
          description: info.description ?? "",
          roles,
          actions: Object.entries(actions).sort().map(([name, description]) => ({ name, description })),
          streams: (info.streams ?? []).map(([name, description]) => ({ name, description })),
        };
      },
      callAction: (action, input) =>
        guard(async () => {
          if (!Object.hasOwn(actions, action) || typeof instance[action] !== "function") {
            throw new Permanent(`unknown action \`${action}\`; this connector has: ${Object.keys(actions).sort().join(", ") || "none"}`);
          }
          let parsed = null;
          if (input.length) {
            try {
              parsed = JSON.parse(dec.decode(input));
            } catch (error) {
              throw new InvalidInput(`input is not JSON: ${error.message}`);
            }
          }
          const out = await instance[action](parsed);
          return out instanceof Uint8Array ? out : json(out);
        }),
      handleWebhook: (request) =>
        guard(async () => {
          if (!overrides("handleWebhook")) throw new Permanent("this connector takes no webhooks");
          return instance.handleWebhook(request);
        }),
      transform: (messages) =>
        guard(async () => {
          if (!overrides("transform")) throw new Permanent("this connector does not transform");
          return instance.transform(messages);
        }),
      read: (request) =>
        guard(async () => {
          if (!overrides("read")) throw new Permanent("this connector is not a source");
          return instance.read(request);
        }),
      write: (messages) =>
        guard(async () => {
          if (!overrides("write")) throw new Permanent("this connector is not a sink");
          return instance.write(messages);
        }),
    };
  }

  const written = (id) => ({ id, outcome: { tag: "ok" } });
  const failed = (id, error) => ({ id, outcome: { tag: "err", val: toHostError(error).payload } });

  return {
    Connector, exportConnector, Retryable, Permanent, InvalidInput, RateLimited, ConnectorError,
    log, config, secrets, state, rateLimit, bearer, bearerOAuth, raiseForStatus, message, written, failed,
    text: (b) => dec.decode(b), json,
  };
})();
