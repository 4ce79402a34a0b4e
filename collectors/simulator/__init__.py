"""An OKX-compatible simulator: REST candles and instruments, candle WebSockets, and fault injection.

Independent of collectors/okx and Django on purpose (stdlib, websockets and orjson only), so it is a second
reading of shared/okx/PROTOCOL.md that the collector is tested against.
"""

from .config import SimulatorConfig
from .market import Market
from .server import ServerInfo, Simulator
from .thread import ThreadedSimulator, run_in_thread

__all__ = ["Market", "ServerInfo", "Simulator", "SimulatorConfig", "ThreadedSimulator", "run_in_thread"]
