"""The wire format: protocol messages (one frozen dataclass per type, one encode/decode
pair) and the codec for task arguments and results. Pure data, no I/O: a client in any
language is written from this package's docs (docs/protocol.md)."""
