"""The vendor SDK's half of the wire-compatibility test, run in its own process.

Our protos and the SDK's declare the same full names, so both cannot live in one
descriptor pool. Reads a JSON command on stdin and writes a JSON answer on stdout:

    {"op": "describe", "messages": [full names]}  -> {full name: descriptor summary}
    {"op": "parse", "items": [{"type": full name, "hex": bytes}]}
        -> [{"json": MessageToDict of the SDK's parse, "hex": the SDK's re-serialisation}]
"""

from __future__ import annotations

import json
import sys
from typing import Any

from descriptor_summary import describe_enum, describe_message  # beside this file
from google.protobuf import json_format, symbol_database

# Importing registers the vendor's definitions in the default pool.
from yandex.cloud.iam.v1 import iam_token_service_pb2  # noqa: F401
from yandex.cloud.speechsense.v1 import audio_pb2, search_pb2, talk_service_pb2, text_pb2  # noqa: F401

SERVICES = ("yandex.cloud.speechsense.v1.TalkService", "yandex.cloud.iam.v1.IamTokenService")


def main() -> None:
    command = json.load(sys.stdin)
    pool = symbol_database.Default().pool
    if command["op"] == "describe":
        out: Any = {}
        for name in command["messages"]:
            out[name] = describe_message(pool.FindMessageTypeByName(name))
        for name in command.get("enums", []):
            out[name] = describe_enum(pool.FindEnumTypeByName(name))
        rpcs = {}
        for service in map(pool.FindServiceByName, SERVICES):
            for m in service.methods:
                rpcs[m.full_name] = [m.input_type.full_name, m.output_type.full_name, m.client_streaming,
                                     m.server_streaming]
        out["__rpcs__"] = rpcs
    else:
        out = []
        for item in command["items"]:
            cls = symbol_database.Default().GetSymbol(item["type"])
            msg = cls.FromString(bytes.fromhex(item["hex"]))
            out.append({"json": json_format.MessageToDict(msg), "hex": msg.SerializeToString().hex()})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
