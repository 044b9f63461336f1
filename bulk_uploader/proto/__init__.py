"""Generated protobuf and gRPC code for yandex.cloud.speechsense.v1 (do not edit; see protos/generate.py)."""
