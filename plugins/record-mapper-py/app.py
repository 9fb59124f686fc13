"""A transform in Python: maps CRM contacts to another system's field
names (rename, nested too; drop; default), as a pipeline `transform` and
as a `map` action for one record. The same mapping as the Rust benchmark
guest (tests/guests/bench-transform), which the benchmark suite compares
it with."""

import json

import switchyard_connector as sy

RENAMES = [
    (("first_name",), "firstName"),
    (("last_name",), "lastName"),
    (("address", "city"), "city"),
    (("address", "postal_code"), "postalCode"),
    (("company", "name"), "companyName"),
    (("metadata", "crm_id"), "crmId"),
]
DROPS = ("ssn", "internal_notes")
DEFAULTS = (("tier", "free"), ("source", "crm"))


def take(record, path):
    *parents, last = path
    for key in parents:
        record = record.get(key)
        if not isinstance(record, dict):
            return None
    return record.pop(last, None)


def map_record(record):
    if not isinstance(record, dict):
        raise sy.InvalidInput("expected a JSON object")
    for path, to in RENAMES:
        value = take(record, path)
        if value is not None:
            record[to] = value
    for field in DROPS:
        record.pop(field, None)
    for field, value in DEFAULTS:
        record.setdefault(field, value)
    return record


class RecordMapper(sy.Connector):
    name = "record-mapper-py"
    version = "0.1.0"
    description = "Maps CRM contacts to another system's field names (Python)"

    @sy.action("map", "Maps one JSON record")
    def map(self, input):
        return json.dumps(map_record(input), separators=(",", ":")).encode()

    def transform(self, messages):
        out = []
        for m in messages:
            try:
                record = json.loads(m.payload)
            except ValueError as error:
                raise sy.InvalidInput(f"message {m.id} is not JSON: {error}")
            out.append(sy.message(m.id, m.stream, map_record(record), key=m.key,
                                  headers=m.headers, timestamp_ms=m.timestamp_ms))
        return out


Connector = sy.export(RecordMapper)
