// A transform in JavaScript: maps CRM contacts to another system's field
// names (rename, nested too; drop; default), as a pipeline `transform` and
// as a `map` action for one record. The same mapping as the Rust benchmark
// guest (tests/guests/bench-transform) and plugins/record-mapper-py, which
// the benchmark suite compares it with.
import * as sy from "switchyard-connector";

const RENAMES = [
  [["first_name"], "firstName"],
  [["last_name"], "lastName"],
  [["address", "city"], "city"],
  [["address", "postal_code"], "postalCode"],
  [["company", "name"], "companyName"],
  [["metadata", "crm_id"], "crmId"],
];
const DROPS = ["ssn", "internal_notes"];
const DEFAULTS = [["tier", "free"], ["source", "crm"]];

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Removes and returns the value at `path`, or undefined.
function take(record, path) {
  const last = path[path.length - 1];
  for (const key of path.slice(0, -1)) {
    record = record[key];
    if (!isObject(record)) return undefined;
  }
  if (!Object.hasOwn(record, last)) return undefined;
  const value = record[last];
  delete record[last];
  return value;
}

export function mapRecord(record) {
  if (!isObject(record)) throw new sy.InvalidInput("expected a JSON object");
  for (const [path, to] of RENAMES) {
    const value = take(record, path);
    if (value !== undefined && value !== null) record[to] = value;
  }
  for (const field of DROPS) delete record[field];
  for (const [field, value] of DEFAULTS) {
    if (!Object.hasOwn(record, field)) record[field] = value;
  }
  return record;
}

class RecordMapper extends sy.Connector {
  static info = {
    name: "record-mapper-js",
    version: "0.1.0",
    description: "Maps CRM contacts to another system's field names (JavaScript)",
  };
  static actions = { map: "Maps one JSON record" };

  map(input) {
    return mapRecord(input);
  }

  transform(messages) {
    return messages.map((m) => {
      let record;
      try {
        record = JSON.parse(sy.text(m.payload));
      } catch (error) {
        throw new sy.InvalidInput(`message ${m.id} is not JSON: ${error.message}`);
      }
      return sy.message(m.id, m.stream, mapRecord(record), {
        key: m.key,
        headers: m.headers,
        timestampMs: m.timestampMs,
      });
    });
  }
}

export const connector = sy.exportConnector(RecordMapper);
