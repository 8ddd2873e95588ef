"""dschat: the chat client of the dsd cluster (protocol: docs/chat-api.md)."""
