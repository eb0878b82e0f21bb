"""A small client for the emulator's JSON control API (tests, demo, bench)."""

from __future__ import annotations

from typing import Any

import httpx


class EmulatorControl:
    def __init__(self, base_url: str) -> None:
        self._http = httpx.Client(base_url=f"{base_url.rstrip('/')}/control", timeout=10)

    def close(self) -> None:
        self._http.close()

    def _call(self, verb: str, path: str, data: Any = None) -> Any:
        response = self._http.request(verb, path, json=data)
        if response.status_code >= 400:
            raise RuntimeError(f"emulator {verb} {path}: {response.text}")
        return response.json()

    def state(self) -> dict[str, Any]:
        return dict(self._call("GET", "/state"))

    def tasks(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/tasks"))

    def create_task(self, **fields: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/tasks", fields))

    def change_task(self, task_id: int, *, silent: bool = False, **changes: Any) -> dict[str, Any]:
        """``silent``: as PlanFix's API silent mode, no action and no new last-change date."""
        payload = {**changes, "silent": True} if silent else changes
        return dict(self._call("PATCH", f"/tasks/{task_id}", payload))

    def save_filter(self, filter_id: int, **conditions: Any) -> dict[str, Any]:
        """A saved task filter (``target`` of task.getList): project, status, worker, tasks."""
        return dict(self._call("POST", "/filters", {"id": filter_id, **conditions}))

    def delete_task(self, task_id: int) -> None:
        self._call("DELETE", f"/tasks/{task_id}")

    def advance_clock(self, seconds: float) -> str:
        return str(self._call("POST", "/clock", {"advance_s": seconds})["now"])

    def set_clock(self, iso: str, *, freeze: bool = False) -> str:
        return str(self._call("POST", "/clock", {"set": iso, "freeze": freeze})["now"])

    def inject(self, kind: str, **options: Any) -> None:
        self._call("POST", "/faults", {"kind": kind, **options})

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def expire_sessions(self) -> None:
        self._call("POST", "/sessions/expire")

    def configure(self, **settings: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/settings", settings))

    def set_quota_used(self, used: int) -> dict[str, Any]:
        return dict(self._call("POST", "/quota", {"used": used}))
