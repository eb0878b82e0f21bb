"""planfix-notifier: watches PlanFix tasks and alerts people when they change."""

__version__ = "0.1.0"
