"""The console's screens: an appliance (sessions, plots, memory, Kafka), one session's
details, the fleet, and the help. Each is drawn from the console's state by
``update_view()``, which the app calls after every read."""

from tui.screens.appliance import ApplianceScreen
from tui.screens.base import ViewScreen
from tui.screens.fleet import FleetScreen
from tui.screens.help import HelpScreen
from tui.screens.session import SessionScreen

__all__ = ["ApplianceScreen", "FleetScreen", "HelpScreen", "SessionScreen", "ViewScreen"]
