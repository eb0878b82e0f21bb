"""A PlanFix XML API emulator on a loopback port, for the demo, tests and
trying a configuration without touching a real account."""

from .fixtures import populate
from .remote import EmulatorControl
from .server import Emulator
from .state import Account, Settings

__all__ = ["Account", "Emulator", "EmulatorControl", "Settings", "populate"]
