//! Placeholder: the shared multiplexer for message-stream transports.
