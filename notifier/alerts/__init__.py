"""Events, routing, the outbox sender and the message templates."""
