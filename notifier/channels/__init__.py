"""Where a message is sent: the channel interface and the built-in channels."""
