"""The Telegram bot: people subscribe to tasks from the chat."""
