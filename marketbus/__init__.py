"""marketbus: the wire contract shared by publishers and consumers.

Models, codec, stream key naming, symbol normalization, settings and errors.
"""

from marketbus.codec import decode, decode_fields, encode
from marketbus.errors import (
    ConfigError,
    DecodeError,
    FatalError,
    MarketbusError,
    SchemaVersionError,
    TransientError,
    UnknownSymbolError,
)
from marketbus.keys import parse_stream_key, status_key, stream_key
from marketbus.models import (
    SCHEMA_VERSION,
    BookTop,
    Candle,
    Channel,
    Funding,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Record,
    Ticker,
    Trade,
)
from marketbus.settings import Settings, load_settings
from marketbus.symbols import SymbolResolver

__all__ = [
    "SCHEMA_VERSION",
    "BookTop",
    "Candle",
    "Channel",
    "ConfigError",
    "DecodeError",
    "FatalError",
    "Funding",
    "Liquidation",
    "MarkPrice",
    "MarketbusError",
    "OpenInterest",
    "Record",
    "SchemaVersionError",
    "Settings",
    "SymbolResolver",
    "Ticker",
    "Trade",
    "TransientError",
    "UnknownSymbolError",
    "decode",
    "decode_fields",
    "encode",
    "load_settings",
    "parse_stream_key",
    "status_key",
    "stream_key",
]
__version__ = "0.1.0"
